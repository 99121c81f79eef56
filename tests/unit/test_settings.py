import secrets
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from warden.streams.exceptions import SettingsError
from warden.streams.settings import (
    DEV_HMAC_KEY,
    SECRETS_DIR,
    WardenSettings,
    development_feedback_key,
    load_settings,
)


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


STRONG = secrets.token_hex(32)  # what `warden keygen` prints


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "is 0 bytes, needs at least 32"),
        ("x", "is 1 bytes, needs at least 32"),
        ("k" * 31, "is 31 bytes"),
        (DEV_HMAC_KEY, "published example or development key"),
        ("replace-with-32-random-bytes-hex", "published example"),  # the old deploy file's stand-in
        ("replace-with-the-output-of-warden-keygen", "published example"),
        ("k" * 64, "too few characters"),
        ("abababababababababababababababab", "too few characters"),
    ],
)
def test_production_refuses_weak_published_and_development_keys(key: str, why: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(environment="production", privacy={"hmac_key": key})
    message = str(caught.value)
    assert why in message
    assert "WARDEN_PRIVACY__HMAC_KEY" in message
    assert "warden keygen" in message, "the refusal says how to make a key"
    assert "\n" not in message
    if len(key) >= 8:
        assert key not in message, "a refusal never shows the key"


def test_production_accepts_a_generated_key_and_development_takes_anything() -> None:
    assert load_settings(environment="production", privacy={"hmac_key": STRONG}).privacy.hmac_key
    with pytest.raises(SettingsError, match="HMAC_KEY"):
        load_settings(environment="production")  # the default is the development key
    # With a key file the single key is unused (the key file's secrets are checked when it is read).
    assert load_settings(environment="production", privacy={"key_file": "/keys.json"}).privacy.key_file
    assert load_settings(privacy={"hmac_key": "x"}).privacy.hmac_key.get_secret_value() == "x"
    assert DEV_HMAC_KEY not in repr(WardenSettings())


def test_feedback_keys_are_checked_like_the_pseudonymisation_key() -> None:
    production = {"environment": "production", "privacy": {"hmac_key": STRONG}}
    with pytest.raises(SettingsError, match=r"WARDEN_FEEDBACK__KEY_OPS_REVIEW is 5 bytes.*warden keygen"):
        load_settings(**production, feedback={"key_ops_review": "short"})
    with pytest.raises(SettingsError, match="WARDEN_FEEDBACK__KEY_USER_REPORT is a published"):
        load_settings(**production, feedback={"key_user_report": development_feedback_key("user_report")})
    # One key for two sources would let the user-report sender sign operators' labels.
    shared = secrets.token_hex(32)
    with pytest.raises(SettingsError, match="KEY_OPS_REVIEW is the same key as WARDEN_FEEDBACK__KEY_USER"):
        load_settings(**production, feedback={"key_user_report": shared, "key_ops_review": shared})
    with pytest.raises(SettingsError, match="same key as WARDEN_PRIVACY__HMAC_KEY"):
        load_settings(**production, feedback={"key_auto": STRONG})
    good = load_settings(**production, feedback={"key_ops_review": secrets.token_hex(32)})
    assert good.feedback.key("ops_review") is not None
    assert good.feedback.key("user_report") is None


def test_development_secrets_are_named_for_the_start_up_warning(tmp_path: Path) -> None:
    found = WardenSettings(dev={"state_dir": tmp_path}).development_secrets()
    assert [item.split(" ")[0] for item in found] == ["pseudonyms", "feedback", "training-example", "model"]
    configured = WardenSettings(
        privacy={"hmac_key": STRONG},
        feedback={
            **{f"key_{s}": secrets.token_hex(32) for s in ("user_report", "ops_review", "appeal", "auto")},
            "training_example_key": secrets.token_hex(32),
        },
        models={"verify_key_file": tmp_path / "verify.pem"},
    )
    assert configured.development_secrets() == []
    assert WardenSettings(environment="production", privacy={"hmac_key": STRONG}).development_secrets() == []
    from warden.infra.cli.keys import development_warning

    warning = development_warning(WardenSettings(dev={"state_dir": tmp_path}))
    assert warning is not None
    assert warning.startswith("warden: warning: development mode")
    assert "pseudonyms (WARDEN_PRIVACY__HMAC_KEY)" in warning
    assert development_warning(configured) is None


def test_bad_values_give_one_line_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WARDEN_WORKER__BATCH_SIZE", "zero")
    with pytest.raises(SettingsError, match=r"worker\.batch_size") as caught:
        load_settings()
    assert "\n" not in str(caught.value)
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "missing.toml")


def test_service_environment_and_secrets_round_trip_and_no_secret_is_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = WardenSettings(
        kafka={"topic_prefix": "t-"},
        redis={"key_prefix": "r", "password": "redis-Pa55-" + STRONG[:8]},
        privacy={"hmac_key": STRONG},
        feedback={"key_ops_review": STRONG[::-1]},
    ).with_services("127.0.0.1:1234", "redis://:url-Pa55@127.0.0.1:5678/0")
    env = original.service_environment()
    secret_values = [v for part in original.secret_settings().values() for v in part.values()]
    assert len(secret_values) == 4  # the HMAC key, the Redis URL and password, the feedback key
    for value in secret_values:
        assert not any(value in text for text in env.values()), "no secret in the environment"
    assert not {"WARDEN_PRIVACY__HMAC_KEY", "WARDEN_REDIS__URL", "WARDEN_REDIS__PASSWORD"} & set(env)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    rebuilt = load_settings(**original.secret_settings())
    assert rebuilt == original
    assert rebuilt.redis.url is not None
    assert rebuilt.redis.url.get_secret_value() == "redis://:url-Pa55@127.0.0.1:5678/0"
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
    from warden.streams.broker import topic_configs

    settings = load_settings(
        kafka={"replication_factor": 3, "min_insync_replicas": 2, "retention_hours": 720}
    ).kafka
    assert topic_configs(settings) == {"min.insync.replicas": "2", "retention.ms": str(720 * 3600 * 1000)}
    assert topic_configs(load_settings().kafka) == {}
    # Input topics: the broker stamps each record, not its producer.
    assert topic_configs(settings, input_topic=True) == {
        "message.timestamp.type": "LogAppendTime",
        "min.insync.replicas": "2",
        "retention.ms": str(720 * 3600 * 1000),
    }


def _mounted(directory: Path, files: dict[str, str], mode: int = 0o440) -> Path:
    """Files laid out as a Kubernetes Secret volume lays them: links to a hidden data directory."""
    data = directory / "..2026_12_03_10_00_00.000000001"
    data.mkdir(parents=True)
    for name, value in files.items():
        (data / name).write_text(value + "\n")
        (data / name).chmod(mode)
    (directory / "..data").symlink_to(data.name)
    for name in files:
        (directory / name).symlink_to(f"..data/{name}")
    return directory


def test_secrets_are_read_from_files_named_like_their_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hmac_key, password = secrets.token_hex(32), secrets.token_hex(16)
    mounted = _mounted(
        tmp_path / "secrets",
        {
            "WARDEN_PRIVACY__HMAC_KEY": hmac_key,
            "WARDEN_KAFKA__SASL_PASSWORD": password,
            "ca.crt": "not a setting: ignored",
        },
    )
    monkeypatch.delenv("WARDEN_PRIVACY__HMAC_KEY", raising=False)
    monkeypatch.setenv("WARDEN_ENVIRONMENT", "production")
    loaded = load_settings(secrets_dir=mounted)
    assert loaded.privacy.hmac_key.get_secret_value() == hmac_key  # the trailing newline dropped
    assert loaded.kafka.sasl_password is not None
    assert loaded.kafka.sasl_password.get_secret_value() == password
    # The environment still wins (precedence: arguments > environment > secret files > file).
    toml = tmp_path / "warden.toml"
    toml.write_text(f'[privacy]\nhmac_key = "{secrets.token_hex(32)}"\n')
    assert load_settings(toml, secrets_dir=mounted).privacy.hmac_key.get_secret_value() == hmac_key
    other = secrets.token_hex(32)
    monkeypatch.setenv("WARDEN_PRIVACY__HMAC_KEY", other)
    assert load_settings(secrets_dir=mounted).privacy.hmac_key.get_secret_value() == other
    # No directory: nothing read, nothing said (development machines have none).
    monkeypatch.delenv("WARDEN_ENVIRONMENT")
    monkeypatch.delenv("WARDEN_PRIVACY__HMAC_KEY")
    assert load_settings(secrets_dir=tmp_path / "absent").privacy.hmac_key.get_secret_value() == DEV_HMAC_KEY
    # Secret files are checked like any other source of the key.
    weak = _mounted(tmp_path / "weak", {"WARDEN_PRIVACY__HMAC_KEY": "short"})
    with pytest.raises(SettingsError, match="WARDEN_PRIVACY__HMAC_KEY is 5 bytes"):
        load_settings(secrets_dir=weak, environment="production")


@pytest.mark.parametrize("mode", [0o444, 0o404, 0o460, 0o602])
def test_a_secret_file_other_users_could_read_or_change_is_refused(tmp_path: Path, mode: int) -> None:
    key = secrets.token_hex(32)
    mounted = _mounted(tmp_path / "secrets", {"WARDEN_PRIVACY__HMAC_KEY": key}, mode=mode)
    with pytest.raises(SettingsError, match="readable or writable by other users") as caught:
        load_settings(secrets_dir=mounted)
    assert key not in str(caught.value)
    assert "\n" not in str(caught.value)
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(SettingsError, match="writable by every user"):
        load_settings(secrets_dir=open_dir)


def test_settings_built_anywhere_read_the_fixed_secrets_directory() -> None:
    assert WardenSettings.model_config.get("secrets_dir") == SECRETS_DIR == Path("/run/secrets/warden")
