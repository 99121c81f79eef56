"""Who may use ``POST /score``: the token, its comparison, and when a worker refuses to start."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from warden.serving.worker.app import create_app
from warden.serving.worker.services import Services
from warden.serving.worker.web import authorised, check_exposure, is_loopback
from warden.streams.exceptions import SettingsError, WebServerUnprotected
from warden.streams.settings import WardenSettings, load_settings

TOKEN = SecretStr("a" * 20 + "-token-" + "b" * 20)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("localhost", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("", False),
        ("worker.internal", False),
    ],
)
def test_loopback_is_told_apart_from_every_other_bind(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (f"Bearer {TOKEN.get_secret_value()}", True),
        (f"bearer {TOKEN.get_secret_value()}", True),
        (f"Bearer  {TOKEN.get_secret_value()} ", True),
        (f"Basic {TOKEN.get_secret_value()}", False),
        (TOKEN.get_secret_value(), False),
        (f"Bearer {TOKEN.get_secret_value()[:-1]}", False),
        (f"Bearer {TOKEN.get_secret_value()}x", False),
        ("Bearer ", False),
        ("Bearer \udcff", False),
        ("", False),
        (None, False),
    ],
)
def test_the_bearer_token_must_match_exactly(header: str | None, ok: bool) -> None:
    assert authorised(header, TOKEN) is ok


def _exposed(token: SecretStr | None) -> WardenSettings:
    return WardenSettings(
        kafka={"bootstrap_servers": "127.0.0.1:9"},
        worker={"web_host": "0.0.0.0"},
        serving={"score_token": token},
    )


def test_a_web_server_beyond_loopback_needs_a_token() -> None:
    with pytest.raises(WebServerUnprotected, match="beyond loopback") as refused:
        check_exposure(_exposed(None))
    assert "\n" not in str(refused.value)
    check_exposure(_exposed(TOKEN))
    check_exposure(WardenSettings())  # loopback, the default: no token needed


def test_the_app_is_not_built_without_one() -> None:
    # Refused before any service is used (none is given).
    with pytest.raises(WebServerUnprotected):
        create_app(_exposed(None), Services(*([None] * 6)))  # type: ignore[arg-type]


def test_applying_needs_a_token_and_tokens_are_not_short() -> None:
    with pytest.raises(SettingsError, match="score_applies needs score_token"):
        load_settings(serving={"score_applies": True})
    with pytest.raises(SettingsError, match="at least 16"):
        load_settings(serving={"score_token": "short"})
    settings = load_settings(serving={"score_applies": True, "score_token": TOKEN.get_secret_value()})
    assert settings.serving.score_applies
    assert not WardenSettings().serving.score_applies  # read-only by default
    assert TOKEN.get_secret_value() not in repr(settings)


def test_children_get_the_clock_and_scoring_settings() -> None:
    settings = WardenSettings(
        ingest={"trust_producer_event_time": True, "max_event_time_ahead_s": 5},
        serving={"score_token": TOKEN, "score_timeout_s": 0.7},
    )
    env = settings.service_environment()
    assert env["WARDEN_INGEST__TRUST_PRODUCER_EVENT_TIME"] == "true"
    assert env["WARDEN_INGEST__MAX_EVENT_TIME_AHEAD_S"] == "5.0"
    assert env["WARDEN_SERVING__SCORE_TIMEOUT_S"] == "0.7"
    # A secret: never in a child's environment, handed over with the other secrets (infra.cli.secret_handoff).
    assert "WARDEN_SERVING__SCORE_TOKEN" not in env
    assert settings.secret_settings()["serving"]["score_token"] == TOKEN.get_secret_value()
    assert WardenSettings().service_environment()["WARDEN_INGEST__TRUST_PRODUCER_EVENT_TIME"] == "false"


@pytest.mark.parametrize("source", ["kubernetes", "compose"])
def test_the_deployed_workers_listen_beyond_loopback_with_a_token_from_a_secret(
    source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.unit import test_deploy

    if source == "kubernetes":
        env, files = test_deploy._k8s()
    else:
        env, files = test_deploy._compose_env(), test_deploy._compose_secret_files("worker")
    # A secret: a file in the secrets directory, never in the environment.
    assert "WARDEN_SERVING__SCORE_TOKEN" in files
    assert "WARDEN_SERVING__SCORE_TOKEN" not in env
    settings = test_deploy._settings_from(env, monkeypatch, files)
    assert not is_loopback(settings.worker.web_host)
    assert settings.serving.score_token is not None
    check_exposure(settings)
    without = {k: v for k, v in files.items() if k != "WARDEN_SERVING__SCORE_TOKEN"}
    with pytest.raises(WebServerUnprotected):
        check_exposure(test_deploy._settings_from(env, monkeypatch, without))


def test_production_refuses_a_stand_in_score_token() -> None:
    with pytest.raises(SettingsError, match="WARDEN_SERVING__SCORE_TOKEN is a published example"):
        load_settings(
            environment="production",
            privacy={"hmac_key": "b" * 8 + "0123456789abcdefghijklmnopqrstuvwxyz"},
            serving={"score_token": "replace-with-the-output-of-warden-keygen-for-score"},
        )
