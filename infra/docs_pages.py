"""The docs site's generated pages: the CLI and settings references and the benchmark pages.

Called by the MkDocs hook ``docs/hooks.py`` at every build (``make docs``),
so the pages are never committed and cannot drift: the CLI page is read from
the argparse parser ``infra.cli`` builds, the settings page from the pydantic
settings model (field, variable, type, default, constraints and the ``#:``
comment above the field), the benchmark pages from the results files
``warden bench --json`` wrote into ``docs/bench-results/``. A failure here
fails the build, which is what ``mkdocs build --strict`` in ``make test`` is for.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from warden.infra.bench import hostile as bench_hostile
from warden.infra.bench import results as bench_results
from warden.streams.settings import WardenSettings

#: Where each generated page goes, relative to the docs source folder.
CLI_PAGE = "reference/cli.md"
SETTINGS_PAGE = "reference/settings.md"

#: Every benchmark section: its page title, the command that measures it, and what it measures.
BENCH_SECTIONS: dict[str, tuple[str, str, str]] = {
    "scorer": (
        "Scorer",
        "warden bench --only scorer",
        "One model trained on the corpus's first half, scored on the same rows of the second half by "
        "LightGBM `predict`, by the graph onnxmltools writes and by Warden's scorer (interleaved call by "
        "call), at batch 1, 64 and 512; then the CPU each stage of a worker's path costs per event on "
        "1,000 real mails (`stage_*`).",
    ),
    "store": (
        "Feature store",
        "warden bench --only store",
        "One micro-batch of 64 synthetic events shaped like busy mail traffic through the Redis store "
        "(apply and read every aggregate in one round trip); the two store paths side by side (one "
        "script run per batch, one `EVALSHA` per entity call as on a cluster); Redis memory per tracked "
        "entity and per event for the once-only memo.",
    ),
    "pipeline": (
        "Pipeline",
        "warden bench --only pipeline",
        "A whole worker on the embedded broker: events/s on a 3,000-mail backlog and end-to-end latency "
        "at half that rate, beside a bare Faust agent loop on the same broker (the ratio is the figure).",
    ),
    "hostile": (
        "Hostile input",
        "warden bench --only hostile",
        "The worst CPU per 1 MB record of every ingest stage over generated adversarial families.",
    ),
    "workers": (
        "Worker groups",
        "warden bench --workers 1,2",
        "Throughput of worker groups of N and M processes on one backlog, interleaved rounds, with "
        "the ratio, the CPU the workers got and Redis CPU per event.",
    ),
    "latency": (
        "Latency against rate",
        "warden bench --latency 100,200,300,400,500",
        "One worker fed at each paced rate in turn: end-to-end p50 / p99 and its CPU per event.",
    ),
    "memory": (
        "Memory and bytes per event",
        "warden bench --memory",
        "The whole corpus through one worker: Redis bytes per tracked entity and per event, topic bytes "
        "per event (raw and compressed), worker and Redis CPU; the inputs of the capacity plan.",
    ),
}

#: The figures each section's page shows first, with what they mean (all figures follow).
BENCH_HEADLINES: dict[str, tuple[tuple[str, str], ...]] = {
    "scorer": (
        ("warden_over_lightgbm_b64", "Warden / LightGBM `predict`, rows/s at batch 64 (target 1.8x)"),
        ("warden_over_onnxmltools_b64", "Warden / onnxmltools' graph, rows/s at batch 64"),
        ("warden_b64_p50_us", "Warden's scorer, p50 µs per batch of 64"),
    ),
    "store": (
        ("batch_ms_p50", "one micro-batch of 64 events (apply and read every aggregate), p50 ms"),
        ("per_batch_cpu_ms_mean", "client CPU per batch, one script run per batch (standalone), ms"),
        ("per_call_cpu_ms_mean", "client CPU per batch, one `EVALSHA` per call (cluster path), ms"),
        ("per_batch_server_us_per_event", "Redis CPU per event, one script per batch, µs"),
        ("memo_bytes_per_event", "once-only memo, bytes per event for its TTL"),
    ),
    "pipeline": (
        ("warden_over_bare", "worker over a bare Faust agent loop, events/s on the backlog (target 1.0x)"),
        ("warden_events_per_s", "worker (one hop), events/s on the backlog"),
        ("warden_latency_ms_p99", "worker, p99 end-to-end ms at half its rate"),
        ("warden_cpu_us", "worker, CPU µs per event while paced"),
    ),
}


def pages(root: Path) -> dict[str, str]:
    """Every generated page by its path in the docs source folder; ``root`` is the repository."""
    from warden.infra.cli.main import _parser

    generated = {CLI_PAGE: cli_page(_parser()), SETTINGS_PAGE: settings_page()}
    generated.update(benchmark_pages(sorted((root / bench_results.RESULTS_DIR).glob("*.json"))))
    return generated


# --- the command line -------------------------------------------------------------------------


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) of each subcommand of ``parser``, in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                yield choice.dest, choice.help or "", action.choices[choice.dest]


def _usage(parser: argparse.ArgumentParser) -> str:
    """The usage line at a fixed width (argparse would otherwise follow the terminal's)."""
    formatter = argparse.HelpFormatter(prog=parser.prog, width=100)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _options(parser: argparse.ArgumentParser) -> list[str]:
    """The rows of a table of the parser's own arguments (help and subcommands left out)."""
    formatter = argparse.HelpFormatter(prog=parser.prog)
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        metavar = action.metavar if isinstance(action.metavar, str) else None
        name = ", ".join(action.option_strings) or (metavar or action.dest)
        if action.option_strings and action.nargs != 0:
            name += f" {metavar or action.dest.upper()}"
        choices = " \\| ".join(f"`{c}`" for c in action.choices) if action.choices else ""
        default = action.default
        shown = "" if default in (None, False, "", argparse.SUPPRESS) else f"`{default}`"
        meaning = formatter._expand_help(action) if action.help else ""
        rows.append(f"| `{_cell(str(name))}` | {choices} | {shown} | {_cell(meaning)} |")
    return rows


def _command(lines: list[str], parser: argparse.ArgumentParser, summary: str, level: int) -> None:
    summary = summary[:1].upper() + summary[1:] + ("" if summary.endswith(".") else ".")
    lines += [f"{'#' * level} `{parser.prog}`", "", summary, ""]
    lines += ["```", _usage(parser), "```", ""]
    rows = _options(parser)
    if rows:
        lines += ["| argument | choices | default | meaning |", "|---|---|---|---|", *rows, ""]
    for name, help_text, sub in _subcommands(parser):
        _command(lines, sub, help_text or name, min(level + 1, 4))


def cli_page(parser: argparse.ArgumentParser) -> str:
    """The command-line reference: every command and subcommand of ``parser`` with its arguments."""
    lines = [
        "# Command line",
        "",
        "Generated from the parser `infra/cli/main.py` builds, at every build of this site: what is here is",
        f"what `{parser.prog} COMMAND --help` says. Every mistake ends in one line on stderr and a non-zero",
        "exit status: 2 for usage and settings, 1 for run-time failures (`warden retrain` adds its own,",
        "see [Feedback and retraining](../feedback-and-retraining.md)).",
        "",
        "```",
        _usage(parser),
        "```",
        "",
        "| argument | choices | default | meaning |",
        "|---|---|---|---|",
        *_options(parser),
        "",
    ]
    for name, help_text, sub in _subcommands(parser):
        _command(lines, sub, help_text or name, 2)
    return "\n".join(lines)


# --- settings ---------------------------------------------------------------------------------


def _class_source(cls: type) -> tuple[str, ast.ClassDef]:
    source = textwrap.dedent(inspect.getsource(cls))
    node = ast.parse(source).body[0]
    if not isinstance(node, ast.ClassDef):
        raise TypeError(f"{cls.__name__}: its source is not a class")
    return source, node


def _described(cls: type) -> dict[str, str]:
    """The ``#:`` comment lines right above each annotated field of ``cls``, joined, by field name."""
    source, node = _class_source(cls)
    lines = source.splitlines()
    found: dict[str, str] = {}
    for item in node.body:
        if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
            continue
        comment: list[str] = []
        row = item.lineno - 2
        while row >= 0 and lines[row].strip().startswith("#:"):
            comment.insert(0, lines[row].strip().removeprefix("#:").strip())
            row -= 1
        found[item.target.id] = " ".join(comment)
    return found


def _annotations(cls: type) -> dict[str, str]:
    """Each field's annotation as written in the source (``str | None``, ``Literal[...]``)."""
    _source, node = _class_source(cls)
    return {
        item.target.id: ast.unparse(item.annotation)
        for item in node.body
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
    }


def _constraints(info: FieldInfo) -> str:
    bounds = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    parts = []
    for meta in info.metadata:
        for attribute, sign in bounds.items():
            value = getattr(meta, attribute, None)
            if value is not None:
                parts.append(f"{sign} {value:_}".replace("_", ","))
        pattern = getattr(meta, "pattern", None)
        if pattern is not None:
            parts.append(f"matches `{pattern}`")
    return ", ".join(parts)


def _default(info: FieldInfo, annotation: str) -> str:
    default = info.default
    if "SecretStr" in annotation:
        return "unset" if default is None else "*secret* (a public development value)"
    if default is None:
        return "unset"
    if isinstance(default, SecretStr):  # pragma: no cover - every SecretStr field says so in its annotation
        return "*secret*"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if default == "":
        return "empty"
    return f"`{default}`"


def setting_rows(part: str | None, cls: type[BaseModel]) -> list[dict[str, str]]:
    """One row per field of ``cls``: variable, type, default, constraints and description."""
    described = _described(cls)
    annotations = _annotations(cls)
    rows = []
    for name, info in cls.model_fields.items():
        if isinstance(info.default, BaseModel):
            continue  # a part of the settings: its own section
        prefix = "WARDEN_" if part is None else f"WARDEN_{part.upper()}__"
        annotation = annotations[name]
        rows.append(
            {
                "variable": prefix + name.upper(),
                "type": annotation,
                "secret": "yes" if "SecretStr" in annotation else "",
                "default": _default(info, annotation),
                "constraints": _constraints(info),
                "description": described.get(name, ""),
            }
        )
    return rows


def _parts() -> Iterator[tuple[str | None, type[BaseModel], str]]:
    yield None, WardenSettings, "Settings of the whole deployment."
    for name, info in WardenSettings.model_fields.items():
        if isinstance(info.default, BaseModel):
            cls = type(info.default)
            yield name, cls, inspect.cleandoc(cls.__doc__ or "").splitlines()[0]


def settings_page() -> str:
    """The settings reference: every field of every part of :class:`WardenSettings`."""
    lines = [
        "# Settings",
        "",
        "Generated from the settings model (`streams/settings/`) at every build of this site.",
        "One frozen settings object is built at the entry point from `WARDEN_*` environment",
        "variables (a part and its field joined by `__`), secret files and an optional TOML file",
        "(`warden --settings FILE` or `WARDEN_SETTINGS_FILE`; a part is a table, `[kafka]`",
        "`partitions = 768`). Precedence, highest first: arguments, environment, secret files",
        "(`/run/secrets/warden/<VARIABLE>`, mode 0440 or stricter), the file, the defaults.",
        "Secrets are never shown: a secret's default is either unset or a public development value",
        "that `WARDEN_ENVIRONMENT=production` refuses. Production values: see",
        "[Deployment and capacity](../deployment-and-capacity.md).",
        "",
    ]
    for part, cls, summary in _parts():
        title = "Top level" if part is None else f"`{part}`: {cls.__name__}"
        lines += [f"## {title}", "", summary, ""]
        lines += ["| variable | type | default | constraints | meaning |", "|---|---|---|---|---|"]
        for row in setting_rows(part, cls):
            kind = f"`{_cell(row['type'])}`" + (" (secret)" if row["secret"] else "")
            lines.append(
                f"| `{row['variable']}` | {kind} | {row['default']} | {_cell(row['constraints'])} | "
                f"{_cell(row['description']).replace('``', '`')} |"
            )
        lines.append("")
    return "\n".join(lines)


# --- benchmarks -------------------------------------------------------------------------------


def _figure(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.1f}"
    return f"{value:.4g}"


def _machine(record: dict[str, Any]) -> str:
    machine = record["machine"]
    load = ", ".join(f"{x:.2f}" for x in machine["load_average"])
    commit = f", commit `{record['commit'][:12]}`" if record.get("commit") else ""
    return (
        f"{record['date']} on {machine['cores']} cores ({machine['cpu_model']}, {machine['python']}, "
        f"{machine['platform']}), load average {load} at the end; took {record.get('seconds', 0):,.0f} s"
        f"{commit}"
    )


def _section_page(name: str, record: dict[str, Any] | None) -> str:
    title, command, what = BENCH_SECTIONS[name]
    lines = [f"# {title}", "", what, ""]
    if record is None:
        lines += [
            "No result of this section is committed yet. Measure it with",
            "",
            f"```sh\n.venv/bin/{command} --json docs/bench-results/{name}-$(date -u +%Y%m%d).json\n```",
            "",
            "and commit the file: this page then shows its figures.",
        ]
        return "\n".join(lines) + "\n"
    if name == "hostile":
        return bench_hostile.page(record, command)
    parameters = ", ".join(f"{k} {v}" for k, v in sorted(record.get("parameters", {}).items()))
    figures = record["figures"]
    headlines = [(key, label) for key, label in BENCH_HEADLINES.get(name, ()) if key in figures]
    if headlines:
        lines += ["| headline | value |", "|---|---|"]
        lines += [f"| {label} | **{_figure(figures[key])}** |" for key, label in headlines]
        lines.append("")
    lines += [
        f"Measured by `{command}` ({parameters or 'defaults'}) {_machine(record)}.",
        f"Rendered from `{record['file']}`; compare figures of one run, not across runs (the machine is",
        "shared and its load moves wall-clock figures).",
        "",
        *([record["note"], ""] if record.get("note") else []),
        "| figure | value |",
        "|---|---|",
        *(f"| `{key}` | {_figure(value)} |" for key, value in sorted(figures.items())),
    ]
    return "\n".join(lines) + "\n"


def benchmark_pages(files: list[Path]) -> dict[str, str]:
    """The benchmarks index and a page per section, each from the newest committed record of it."""
    newest = bench_results.latest(files)
    unknown = sorted(set(newest) - set(BENCH_SECTIONS))
    if unknown:
        raise ValueError(f"results of unknown bench sections: {', '.join(unknown)}")
    lines = [
        "# Benchmarks",
        "",
        "Every figure on these pages is the newest committed run of its section, rendered from the",
        "JSON that `warden bench --json FILE` wrote (`docs/bench-results/`): one run, with its date and",
        "machine. Benchmarks print figures and are never asserted in the test suite; the machines",
        "they ran on are shared, so compare figures of one run. Older runs are in git's history.",
        "",
        "| section | command | newest run |",
        "|---|---|---|",
    ]
    out: dict[str, str] = {}
    for name, (title, command, _what) in BENCH_SECTIONS.items():
        record = newest.get(name)
        page = "hostile-input.md" if name == "hostile" else f"{name}.md"
        out[f"benchmarks/{page}"] = _section_page(name, record)
        when = "none committed" if record is None else f"{record['date']} ({record['file']})"
        lines.append(f"| [{title}]({page}) | `{command}` | {when} |")
    out["benchmarks/index.md"] = "\n".join(lines) + "\n"
    return out
