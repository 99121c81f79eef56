"""Every CLI mistake: one line on stderr, a non-zero exit, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from warden.infra.cli.main import main
from warden.streams.exceptions import ExitCode


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        (),
        ("frobnicate",),
        ("replay", "--rate", "fast"),
        ("replay", "--rate", "-3"),
        ("replay", "--limit", "0"),
        ("models",),
        ("models", "promote"),
        ("dev", "sideways"),
        ("demo", "--rate"),
        ("bench", "--workers", "1,x"),
        ("bench", "--workers", "0,2"),
        ("bench", "--latency", "200,fast"),
        ("bench", "--latency", "0"),
        ("bench", "--only", "store", "--json", "/nonexistent-folder/results.json"),
        ("evaluate", "--peers", "--protocol", "online"),
        ("evaluate", "--peers", "--kind", "calendar"),
    ],
)
def test_usage_mistakes_are_one_line(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    code, err = run(capsys, *argv)
    assert code == ExitCode.USAGE
    assert err.count("\n") == 1
    assert err.startswith("warden")
    assert "Traceback" not in err


def test_bad_settings_are_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WARDEN_KAFKA__PARTITIONS", "many")
    code, err = run(capsys, "models", "list")
    assert code == ExitCode.USAGE
    assert err.startswith("warden: error: invalid setting kafka.partitions: ")
    assert err.count("\n") == 1
    monkeypatch.delenv("WARDEN_KAFKA__PARTITIONS")
    code, err = run(capsys, "--settings", str(tmp_path / "nope.toml"), "models", "list")
    assert (code, err.count("\n")) == (ExitCode.USAGE, 1)
    assert "not found" in err


def test_worker_without_services_says_how_to_get_them(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WARDEN_DEV__STATE_DIR", str(tmp_path))
    for name in ("WARDEN_KAFKA__BOOTSTRAP_SERVERS", "WARDEN_REDIS__URL"):
        monkeypatch.delenv(name, raising=False)
    code, err = run(capsys, "worker")
    assert code == ExitCode.USAGE
    assert "warden dev up" in err
    assert err.count("\n") == 1


def test_registry_mistakes_are_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WARDEN_MODELS__REGISTRY_DIR", str(tmp_path))
    monkeypatch.setenv("WARDEN_DEV__STATE_DIR", str(tmp_path / "dev"))  # the development key pair
    code, err = run(capsys, "models", "promote", "v-missing")
    assert (code, err.count("\n")) == (1, 1)
    assert "no model version v-missing" in err
    code, err = run(capsys, "models", "rollback")
    assert (code, err.count("\n")) == (1, 1)
