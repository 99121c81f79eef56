"""The built wheel installs one `warden` namespace that imports from outside the repository."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FOLDERS = ("streams", "features", "models", "serving", "infra")

#: Imports every module of the installed namespace and prints where each package came from.
_IMPORT_ALL = """
import importlib, pkgutil, sys
import warden, warden.serving
names = [info.name for info in pkgutil.walk_packages(warden.__path__, "warden.")]
names = [name for name in names if not name.endswith(".__main__")]  # run by python -m, not imported
for name in names:
    importlib.import_module(name)
print(warden.serving.__file__)
print(len(names))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout, built without network (the dev tools pin a setuptools that can),
    from a copy: setuptools writes build/ and *.egg-info beside the sources it builds."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in FOLDERS:
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", out, source],
        check=True,
        capture_output=True,
        cwd=out,
    )
    (built,) = out.glob("warden-*.whl")
    return built


def _source_packages() -> set[str]:
    return {
        "warden." + ".".join(init.parent.relative_to(REPO).parts)
        for folder in FOLDERS
        for init in (REPO / folder).rglob("__init__.py")
    }


@pytest.mark.slow
def test_the_wheel_holds_one_warden_namespace(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert archive.read(top_level).decode().split() == ["warden"]
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert "warden = warden.infra.cli:main" in archive.read(entry_points).decode()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"warden"}
    # Every folder with an __init__.py ships (pyproject lists the packages one by one) ...
    shipped = {"/".join(n.split("/")[:-1]).replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert shipped == _source_packages()
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert set(declared) == _source_packages()
    # ... with its package data: the typing marker, the Lua scripts and the HTML pages.
    for folder in FOLDERS:
        assert f"warden/{folder}/py.typed" in names
    for data in [*REPO.glob("*/**/*.lua"), *REPO.glob("*/**/*.html")]:
        if data.parts[len(REPO.parts)] in FOLDERS:
            assert "warden/" + data.relative_to(REPO).as_posix() in names


@pytest.mark.slow
def test_the_installed_wheel_imports_outside_the_repository(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], check=True, cwd=tmp_path
    )
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # The dependencies come from the project's environment; its .pth files (the development link tree)
    # are not read from a directory named in a .pth, so only the installed wheel provides `warden`.
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run = subprocess.run(
        [python, "-c", _IMPORT_ALL], check=True, capture_output=True, text=True, cwd=tmp_path, env={}
    )
    where, count = run.stdout.split()
    assert Path(where).is_relative_to(site)
    assert int(count) >= len(_source_packages())
    # The console script and `python -m warden.infra.cli` (how Warden starts its child processes).
    for argv in ([env_dir / "bin" / "warden", "--help"], [python, "-m", "warden.infra.cli", "--help"]):
        cli = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env={})
        assert cli.returncode == 0, cli.stderr
        assert "COMMAND" in cli.stdout
