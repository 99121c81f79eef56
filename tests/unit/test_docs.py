"""The docs: a short README, links that resolve, and generated pages that cover the code.

The CLI and settings pages are generated from the parser and the settings
model at every site build; these tests check that every subcommand and every
setting field shows up, that every field is described (the generated page
would otherwise show a blank), that secrets never show a value, and that the
benchmark pages come from machine-written result files.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from warden.infra import docs_pages
from warden.infra.bench import results as bench_results
from warden.infra.bench.results import Recorder
from warden.infra.cli.main import _parser
from warden.streams.exceptions import UsageError
from warden.streams.settings import DEV_HMAC_KEY, WardenSettings

REPO = Path(__file__).resolve().parents[2]
PAGES = REPO / "docs" / "pages"
README_LIMIT = 200

#: Markdown links and images: [text](target) / ![alt](target), target without a title.
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted(PAGES.rglob("*.md"))]


def _relative_links(text: str) -> list[str]:
    text = _FENCE.sub("", text)  # code blocks hold examples, not links
    return [
        target
        for target in _LINK.findall(text)
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target) and not target.startswith("#")
    ]


def test_the_readme_is_short() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_LIMIT, f"README.md has {len(lines)} lines; the limit is {README_LIMIT}"


@pytest.fixture(scope="module")
def generated() -> set[str]:
    """The paths of the pages the site generates at build time (links to them are fine)."""
    return set(docs_pages.pages(REPO))


@pytest.mark.parametrize("page", _markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path, generated: set[str]) -> None:
    broken = []
    for target in _relative_links(page.read_text(encoding="utf-8")):
        path = target.split("#", 1)[0]
        resolved = (page.parent / path).resolve()
        inside = resolved.relative_to(PAGES.resolve()).as_posix() if resolved.is_relative_to(PAGES) else None
        # Site pages may link to the pages generated at build time; the README is read on its own.
        if not resolved.exists() and (page.name == "README.md" or inside not in generated):
            broken.append(target)
    assert not broken, f"{page.relative_to(REPO)} links to missing files: {broken}"


def test_the_link_check_finds_a_broken_link() -> None:
    text = "[ok](https://example.org) [self](#x) [gone](nope.md#a) ![img](a/b.png)\n```\n[no](code.md)\n```"
    assert _relative_links(text) == ["nope.md#a", "a/b.png"]


def _every_command(parser: argparse.ArgumentParser, prefix: str = "warden") -> list[str]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append(f"{prefix} {name}")
                found += _every_command(sub, f"{prefix} {name}")
    return found


def test_the_cli_page_has_every_command_and_option() -> None:
    parser = _parser()
    page = docs_pages.cli_page(parser)
    commands = _every_command(parser)
    assert {"warden bench", "warden models promote", "warden privacy audit"} <= set(commands)
    for command in commands:
        assert f"`{command}`" in page, command
    assert "`--json FILE`" in page  # an option of a subcommand, with its metavar
    assert "`--settings FILE`" in page


def _fields() -> list[tuple[str, str, Any]]:
    """(variable, field name, default) of every settings field, parts included."""
    found = []
    for part, info in WardenSettings.model_fields.items():
        if isinstance(info.default, BaseModel):
            for name, field in type(info.default).model_fields.items():
                found.append((f"WARDEN_{part.upper()}__{name.upper()}", name, field.default))
        else:
            found.append((f"WARDEN_{part.upper()}", part, info.default))
    return found


def _setting_rows(page: str) -> dict[str, str]:
    """The settings page's table rows by variable."""
    rows = (line for line in page.splitlines() if line.startswith("| `WARDEN_"))
    return {line.split("|")[1].strip(" `"): line for line in rows}


def test_the_settings_page_has_every_field_with_a_description() -> None:
    page = docs_pages.settings_page()
    rows = _setting_rows(page)
    fields = _fields()
    assert len(fields) > 100
    for variable, _name, _default in fields:
        assert variable in rows, variable
        description = rows[variable].rstrip(" |").rsplit("|", 1)[1].strip()
        assert description, f"{variable} has no `#:` comment in the settings model"


def test_secrets_never_show_a_value() -> None:
    page = docs_pages.settings_page()
    assert DEV_HMAC_KEY not in page
    rows = _setting_rows(page)
    for variable in ("WARDEN_PRIVACY__HMAC_KEY", "WARDEN_REDIS__URL", "WARDEN_FEEDBACK__KEY_OPS_REVIEW"):
        assert "(secret)" in rows[variable]
    assert "*secret*" in rows["WARDEN_PRIVACY__HMAC_KEY"]


def _record(tmp_path: Path, name: str, figures: dict[str, float], **details: Any) -> Path:
    recorder = Recorder(tmp_path / f"{name}.json")
    recorder.add(name, figures, started=0.0, parameters={"batches": 3}, details=details or None)
    return recorder.path


def test_bench_json_holds_date_machine_and_figures(tmp_path: Path) -> None:
    path = _record(tmp_path, "store", {"batch_ms_p50": 20.5})
    (section,) = json.loads(path.read_text())["sections"]
    assert section["figures"] == {"batch_ms_p50": 20.5}
    assert section["parameters"] == {"batches": 3}
    machine = section["machine"]
    assert machine["cores"] >= 1
    assert len(machine["load_average"]) == 3
    assert machine["python"].startswith("CPython 3.11")
    assert machine["cpu_model"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$", section["date"])


def test_a_missing_folder_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        Recorder(tmp_path / "no" / "x.json")


def test_benchmark_pages_show_the_newest_run_of_each_section(tmp_path: Path) -> None:
    older = _record(tmp_path, "store", {"batch_ms_p50": 99.0})
    document = json.loads(older.read_text())
    document["sections"][0]["date"] = "2000-01-01T00:00:00+00:00"
    older.rename(tmp_path / "a-older.json")
    (tmp_path / "a-older.json").write_text(json.dumps(document))
    newer = _record(tmp_path, "store", {"batch_ms_p50": 12.25})
    pages = docs_pages.benchmark_pages(sorted(tmp_path.glob("*.json")))
    assert "| `batch_ms_p50` | 12.25 |" in pages["benchmarks/store.md"]
    assert "99" not in pages["benchmarks/store.md"].split("| figure | value |")[1]
    assert newer.name in pages["benchmarks/index.md"]
    assert "none committed" in pages["benchmarks/index.md"]  # the sections not run here
    names = ("hostile-input" if name == "hostile" else name for name in docs_pages.BENCH_SECTIONS)
    assert set(pages) == {"benchmarks/index.md"} | {f"benchmarks/{name}.md" for name in names}


def test_a_results_file_of_another_shape_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": 1, "sections": [{"section": "store"}]}))
    with pytest.raises(ValueError, match=r"bad\.json"):
        bench_results.latest([bad])


def test_the_committed_results_render() -> None:
    files = sorted((REPO / bench_results.RESULTS_DIR).glob("*.json"))
    assert files, "no committed bench results"
    newest = bench_results.latest(files)
    assert {"store", "hostile"} <= set(newest)
    for name, record in newest.items():  # a renamed figure would drop out of its page's headlines
        missing = {key for key, _label in docs_pages.BENCH_HEADLINES.get(name, ())} - set(record["figures"])
        assert not missing, f"{name}: headline figures not in its newest result: {missing}"
    hostile = docs_pages.benchmark_pages(files)["benchmarks/hostile-input.md"]
    assert "| ingest |" in hostile
    assert "Slowest stage" in hostile


def test_the_site_builds_offline() -> None:
    config = yaml.safe_load((REPO / "docs" / "mkdocs.yml").read_text())
    assert config["theme"]["font"] is False  # no Google Fonts fetched by the build or the reader
    assert config["strict"] is True
    assert "analytics" not in config.get("extra", {})
    site = (REPO / "docs" / config["site_dir"]).resolve()
    assert not site.is_relative_to(PAGES.resolve())
    assert site.relative_to(REPO).parts[0] in (REPO / ".gitignore").read_text().replace("/", "").split()
