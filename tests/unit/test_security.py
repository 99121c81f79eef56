"""Kafka SASL/SSL and Redis AUTH/TLS settings reach the clients, and secrets stay secret."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from faust.auth import SASLCredentials, SSLCredentials

from warden.serving.worker.transport import broker_credentials
from warden.streams.exceptions import SettingsError
from warden.streams.security import kafka_python_options, kafka_ssl_context, redis_options
from warden.streams.settings import KafkaSettings, RedisSettings, WardenSettings, load_settings

PASSWORD = "s3cr3t-Pa55word-7f1c"  # a test secret to look for


def test_sasl_settings_reach_kafka_python_and_faust() -> None:
    kafka = KafkaSettings(
        bootstrap_servers="b:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="warden",
        sasl_password=PASSWORD,
        ssl_check_hostname=False,
    )
    options = kafka_python_options(kafka)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "warden"
    assert options["sasl_plain_password"] == PASSWORD
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].check_hostname is False
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    credentials = broker_credentials(kafka)
    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.password == PASSWORD
    assert PASSWORD not in repr(credentials)


def test_ssl_only_and_plaintext() -> None:
    assert isinstance(broker_credentials(KafkaSettings(security_protocol="SSL")), SSLCredentials)
    assert broker_credentials(KafkaSettings()) is None
    assert kafka_python_options(KafkaSettings()) == {"security_protocol": "PLAINTEXT"}
    assert (
        kafka_ssl_context(
            KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password="p")
        )
        is None
    )


def test_sasl_without_credentials_is_refused() -> None:
    with pytest.raises(SettingsError, match="needs sasl_username and sasl_password"):
        load_settings(kafka={"security_protocol": "SASL_PLAINTEXT"})


def test_unreadable_tls_files_fail_with_a_one_line_error(tmp_path: Path) -> None:
    kafka = KafkaSettings(security_protocol="SSL", ssl_cafile=tmp_path / "missing-ca.pem")
    with pytest.raises(SettingsError, match="cannot load Kafka TLS files"):
        kafka_ssl_context(kafka)


def test_redis_auth_and_tls_options() -> None:
    redis = RedisSettings(username="warden", password=PASSWORD, tls=True, tls_ca_file=Path("/ca.pem"))
    assert redis_options(redis) == {
        "username": "warden",
        "password": PASSWORD,
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "ssl_ca_certs": "/ca.pem",
    }
    assert redis_options(RedisSettings()) == {}


def test_secrets_stay_out_of_repr_dumps_and_the_environment_but_reach_child_processes() -> None:
    settings = WardenSettings(
        kafka={"security_protocol": "SASL_PLAINTEXT", "sasl_username": "u", "sasl_password": PASSWORD},
        redis={"url": "redis://127.0.0.1:1/0", "password": PASSWORD},
    )
    for text in (repr(settings), str(settings), str(settings.model_dump()), settings.model_dump_json()):
        assert PASSWORD not in text
    env = settings.service_environment()
    assert not [name for name, value in env.items() if PASSWORD in value]
    assert env["WARDEN_KAFKA__SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert env["WARDEN_KAFKA__SASL_USERNAME"] == "u"
    # Child processes get the passwords through infra.cli.secret_handoff's pipe instead.
    handed = settings.secret_settings()
    assert handed["kafka"]["sasl_password"] == PASSWORD
    assert handed["redis"]["password"] == PASSWORD
