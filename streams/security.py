"""Client options for a broker and a Redis server that want TLS, SASL or AUTH.

Built from :class:`~streams.settings.KafkaSettings` and
:class:`~streams.settings.RedisSettings` by the code that opens connections:
the Faust transport (aiokafka), the batch clients (kafka-python) and the
feature store's Redis client. Secrets leave their ``SecretStr`` only here, at
the moment a client is built, and only into that client's options.
"""

from __future__ import annotations

import ssl
from typing import Any

from warden.streams.exceptions import SettingsError
from warden.streams.settings import KafkaSettings, RedisSettings


def kafka_ssl_context(settings: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context for SSL and SASL_SSL, or None for plain TCP.

    Raises :class:`SettingsError` when a CA, certificate or key file cannot be read.
    """
    if settings.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    try:
        context = ssl.create_default_context(
            purpose=ssl.Purpose.SERVER_AUTH,
            cafile=None if settings.ssl_cafile is None else str(settings.ssl_cafile),
        )
        if settings.ssl_certfile is not None and settings.ssl_keyfile is not None:
            password = settings.ssl_key_password
            context.load_cert_chain(
                str(settings.ssl_certfile),
                str(settings.ssl_keyfile),
                password=None if password is None else password.get_secret_value(),
            )
    except (OSError, ssl.SSLError) as exc:
        # The message names files, never the key password.
        reason = exc.strerror or type(exc).__name__
        raise SettingsError(f"cannot load Kafka TLS files: {reason}") from None
    # The certificate chain is verified either way; only the host name check is optional.
    context.check_hostname = settings.ssl_check_hostname
    return context


def kafka_python_options(settings: KafkaSettings) -> dict[str, Any]:
    """Security options for kafka-python's producer, consumer and admin clients."""
    options: dict[str, Any] = {"security_protocol": settings.security_protocol}
    context = kafka_ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        if settings.sasl_password is not None:
            options["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    return options


def redis_options(settings: RedisSettings) -> dict[str, Any]:
    """AUTH and TLS keyword arguments for redis-py's ``from_url`` (standalone or cluster).

    Values given here override credentials written in the URL.
    """
    options: dict[str, Any] = {}
    if settings.username is not None:
        options["username"] = settings.username
    if settings.password is not None:
        options["password"] = settings.password.get_secret_value()
    if settings.tls:
        options["ssl_cert_reqs"] = "required"
        options["ssl_check_hostname"] = settings.tls_check_hostname
        if settings.tls_ca_file is not None:
            options["ssl_ca_certs"] = str(settings.tls_ca_file)
        if settings.tls_certfile is not None:
            options["ssl_certfile"] = str(settings.tls_certfile)
        if settings.tls_keyfile is not None:
            options["ssl_keyfile"] = str(settings.tls_keyfile)
    return options
