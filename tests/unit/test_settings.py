from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from infra.exceptions import SettingsError
from infra.settings import DEV_HMAC_KEY, WardenSettings, load_settings


def test_nested_environment_variables_reach_their_part(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARDEN_KAFKA__BOOTSTRAP_SERVERS", "broker-a:9092,broker-b:9092")
    monkeypatch.setenv("WARDEN_WORKER__BATCH_SIZE", "64")
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "broker-a:9092,broker-b:9092"
    assert settings.worker.batch_size == 64


def test_environment_overrides_file_and_arguments_override_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "warden.toml"
    file.write_text('[worker]\nbatch_size = 32\napp_id = "from-file"\n[redis]\nkey_prefix = "f"\n')
    monkeypatch.setenv("WARDEN_WORKER__BATCH_SIZE", "48")
    settings = load_settings(file)
    assert settings.worker.batch_size == 48
    assert settings.worker.app_id == "from-file"
    assert settings.redis.key_prefix == "f"


def test_settings_are_frozen() -> None:
    settings = WardenSettings()
    with pytest.raises(ValidationError):
        settings.environment = "production"  # type: ignore[misc]


def test_secrets_do_not_show_in_repr() -> None:
    settings = WardenSettings(privacy={"hmac_key": SecretStr("very-secret-key")})
    assert "very-secret-key" not in repr(settings)
    assert "very-secret-key" not in str(settings.model_dump())


def test_production_refuses_the_development_key() -> None:
    with pytest.raises(SettingsError, match="HMAC_KEY"):
        load_settings(environment="production")
    assert load_settings(environment="production", privacy={"hmac_key": "k" * 32}).privacy.hmac_key
    assert DEV_HMAC_KEY not in repr(WardenSettings())


def test_bad_values_give_one_line_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WARDEN_WORKER__BATCH_SIZE", "zero")
    with pytest.raises(SettingsError, match=r"worker\.batch_size") as caught:
        load_settings()
    assert "\n" not in str(caught.value)
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "missing.toml")


def test_service_environment_round_trips_through_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = WardenSettings(kafka={"topic_prefix": "t-"}, redis={"key_prefix": "r"}).with_services(
        "127.0.0.1:1234", "redis://127.0.0.1:5678/0"
    )
    for name, value in original.service_environment().items():
        monkeypatch.setenv(name, value)
    rebuilt = load_settings()
    assert rebuilt.kafka == original.kafka
    assert rebuilt.redis.url is not None
    assert rebuilt.redis.url.get_secret_value() == "redis://127.0.0.1:5678/0"
    assert rebuilt.redis.key_prefix == "r"


@pytest.mark.parametrize(
    ("kafka", "reason"),
    [
        ({"enable_idempotence": True, "acks": "1"}, "enable_idempotence needs acks=all"),
        ({"replication_factor": 2, "min_insync_replicas": 3}, "must not exceed replication_factor"),
    ],
)
def test_inconsistent_durability_settings_are_refused(kafka: dict[str, object], reason: str) -> None:
    with pytest.raises(SettingsError, match=reason):
        load_settings(kafka=kafka)


def test_durability_settings_reach_producers_and_created_topics() -> None:
    from streams.broker import topic_configs

    settings = load_settings(
        kafka={"replication_factor": 3, "min_insync_replicas": 2, "retention_hours": 720}
    ).kafka
    assert topic_configs(settings) == {"min.insync.replicas": "2", "retention.ms": str(720 * 3600 * 1000)}
    assert topic_configs(load_settings().kafka) == {}
