"""The Grafana dashboard and the Prometheus alerts name only metrics the workers export.

The exported names come from the code: the metric families of a worker's
``GET /metrics`` registry (:meth:`serving.worker.metrics.WorkerStats.registry`), each
with the sample names its type gives it in the exposition. Every PromQL
expression in infra/deploy/grafana/warden.json and
infra/deploy/prometheus/alerts.yaml is reduced to the metric names it selects
(functions, keywords, label matchers, grouping labels, strings, ranges and
Grafana variables stripped), and each must be one of them. The checker is
tested on hostile expressions too. ``promtool`` checks and tests the rules
themselves (``make prometheus``).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from warden.serving.worker.metrics import WorkerStats, exposition

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "infra" / "deploy" / "grafana" / "warden.json"
ALERTS = ROOT / "infra" / "deploy" / "prometheus" / "alerts.yaml"
OPERATIONS = ROOT / "docs" / "pages" / "operations.md"

#: The sample names each metric type writes in the text exposition (prometheus_client's rules).
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME_MATCHER = re.compile(r'__name__\s*(=~|!=|!~|=)\s*("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')')
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_TOKEN = re.compile(
    r"(?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[a-zA-Z0-9_]*)"
    r"|(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<call>\s*\()?"
)
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
_KEYWORDS |= {"and", "or", "unless", "offset", "inf", "nan"}
#: Grafana's ``label_values(metric, label)`` (the metric is optional).
_LABEL_VALUES = re.compile(
    r"^\s*label_values\(\s*(?:([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{[^}]*\})?\s*,)?[^)]*\)\s*$"
)


def exported_names() -> set[str]:
    """Every sample name a worker's ``GET /metrics`` can carry, from its registry's families."""
    names = set()
    for family in WorkerStats().registry().collect():
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects.

    A selector by ``__name__`` counts as the name it equals; one by a pattern
    cannot be checked and counts as its matcher text (which is never exported).
    """
    names = set()
    for op, value in _NAME_MATCHER.findall(expr):
        names.add(value[1:-1] if op == "=" else f"__name__{op}{value}")
    text = _STRING.sub('""', expr)
    text = _VARIABLE.sub("", text)
    text = _MATCHERS.sub("", text)
    while (stripped := _RANGE.sub("", text)) != text:
        text = stripped
    text = _GROUPING.sub("", text)
    for token in _TOKEN.finditer(text):
        name = token.group("name")
        if name is None or token.group("call") or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(where, PromQL)`` for every panel target and every query variable of a dashboard."""

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if "expr" in target:
                yield f"panel {panel.get('title')!r}", target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query)
        found = _LABEL_VALUES.match(text)
        if found is None:
            # Anything but label_values(metric, label) is checked as PromQL (query_result, a bare selector).
            yield f"variable {variable.get('name')!r}", text.removeprefix("query_result(").removesuffix(")")
        elif found.group(1):
            yield f"variable {variable.get('name')!r}", found.group(1)


def rule_queries(rules: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(where, PromQL)`` for every alerting and recording rule of a rules file."""
    for group in rules["groups"]:
        for rule in group["rules"]:
            yield f"rule {rule.get('alert') or rule.get('record')!r}", rule["expr"]


def unknown_metrics(queries: Iterator[tuple[str, str]], known: set[str]) -> list[str]:
    """One line per metric name a query selects that is not in ``known``."""
    return [
        f"{where}: {name} is not a metric Warden exports"
        for where, expr in queries
        for name in sorted(metric_names(expr) - known)
    ]


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _rules() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(ALERTS.read_text())
    return loaded


def _recorded(rules: dict[str, Any]) -> set[str]:
    return {rule["record"] for group in rules["groups"] for rule in group["rules"] if "record" in rule}


# --- the checker itself ---


def test_exported_names_follow_the_exposition() -> None:
    names = exported_names()
    # What a scrape of a worker with every optional series present writes.
    stats = WorkerStats(shadow_version="v2", retrain_outcome="failed", retrain_finished_at=1.0)
    stats.consumer_lag[("mail.events", 0)] = 3
    stats.events_in["mail"] = 1
    stats.events_out["mail"] = 1
    stats.score_refused[401] = 1
    lines = [line for line in exposition(stats).decode("utf-8").splitlines() if not line.startswith("#")]
    scraped = {line.split("{")[0].split(" ")[0] for line in lines}
    assert scraped == names
    assert {"warden_verdicts_total", "warden_end_to_end_seconds_bucket", "warden_consumer_lag"} <= names
    assert not {"warden_verdicts", "warden_end_to_end_seconds", "warden_consumer_lag_total"} & names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            "histogram_quantile(0.99, sum by (le) (rate(warden_end_to_end_seconds_bucket[5m])))",
            {"warden_end_to_end_seconds_bucket"},
        ),
        ('sum(rate(x_total{job=~"$job", reason!="a b"}[$__rate_interval])) by (reason, le)', {"x_total"}),
        ("a > 1000 and on () deriv(max by (topic) (b)[15m:1m]) > 0", {"a", "b"}),
        ("time() - max(c) > 2 * 86400 or d offset 1h unless e @ 1700000000", {"c", "d", "e"}),
        ("1e3 * f + 0x1F - .5e-2 + Inf + NaN", {"f"}),
        ("a / ignoring(kind) group_left(role) b > bool 0.5", {"a", "b"}),
        ("job:warden_verdicts:rate5m", {"job:warden_verdicts:rate5m"}),
        # Names inside strings and grouping labels are not metrics.
        ('label_replace(g, "dst", "$1", "src", "(warden_fake)")', {"g"}),
        ("sum without (warden_fake_label) (h)", {"h"}),
        ('{__name__="warden_named", kind="mail"}', {"warden_named"}),
        ('{__name__=~"warden_.*"}', {'__name__=~"warden_.*"'}),
    ],
)
def test_metric_names_are_what_an_expression_selects(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


@pytest.mark.parametrize(
    "expr",
    [
        "rate(warden_made_up_total[5m])",
        # Exported families with the wrong sample name: a counter without _total, a bare histogram,
        # a suffix on a gauge.
        "rate(warden_verdicts[5m])",
        "histogram_quantile(0.99, rate(warden_end_to_end_seconds[5m]))",
        "warden_store_degraded_total",
        "sum(rate(warden_consumer_lag_bucket[5m])) by (le)",
        '{__name__="warden_made_up"}',
        '{__name__=~"warden_verdicts_.*"}',
    ],
)
def test_the_check_fails_a_dashboard_naming_a_made_up_metric(expr: str) -> None:
    dashboard = copy.deepcopy(_dashboard())
    dashboard["panels"].append({"type": "row", "panels": [{"title": "made up", "targets": [{"expr": expr}]}]})
    problems = unknown_metrics(dashboard_queries(dashboard), exported_names())
    assert len(problems) == 1
    assert problems[0].startswith("panel 'made up': ")


def test_the_check_fails_rules_and_variables_naming_a_made_up_metric() -> None:
    rules = copy.deepcopy(_rules())
    rules["groups"][0]["rules"].append({"alert": "Fake", "expr": "sum(rate(warden_fake_total[5m])) > 0"})
    assert unknown_metrics(rule_queries(rules), exported_names()) == [
        "rule 'Fake': warden_fake_total is not a metric Warden exports"
    ]
    dashboard = copy.deepcopy(_dashboard())
    dashboard["templating"]["list"].append(
        {"name": "fake", "type": "query", "query": {"query": "label_values(warden_fake_info, role)"}}
    )
    assert unknown_metrics(dashboard_queries(dashboard), exported_names()) == [
        "variable 'fake': warden_fake_info is not a metric Warden exports"
    ]


# --- the files ---


def test_every_metric_the_dashboard_names_is_exported() -> None:
    queries = list(dashboard_queries(_dashboard()))
    assert len(queries) > 20
    assert unknown_metrics(iter(queries), exported_names()) == []


def test_every_metric_the_alerts_name_is_exported() -> None:
    rules = _rules()
    assert unknown_metrics(rule_queries(rules), exported_names() | _recorded(rules)) == []


def test_the_dashboard_covers_what_on_call_watches() -> None:
    used = {name for _, expr in dashboard_queries(_dashboard()) for name in metric_names(expr)}
    for wanted in (
        "warden_verdicts_total",  # throughput
        "warden_end_to_end_seconds_bucket",  # p50 / p99
        "warden_consumer_lag",  # lag per partition
        "warden_dead_letters_total",  # dead letters by reason
        "warden_store_errors_total",
        "warden_store_degraded",
        "warden_model_info",  # champion and shadow versions
        "warden_shadow_disagreements_total",
        "warden_retrain_last_run_timestamp_seconds",  # retrain outcomes
    ):
        assert wanted in used, wanted


#: What Grafana puts in place of the dashboard's variables before a query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$job": ".*"}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing (make prometheus installs it)")
def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    rules = []
    for i, (_, expr) in enumerate(dashboard_queries(_dashboard())):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _datasources(node: object) -> Iterator[Any]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield value
            else:
                yield from _datasources(value)
    elif isinstance(node, list):
        for item in node:
            yield from _datasources(item)


def test_the_dashboard_imports_into_grafana_10_and_11_without_a_fixed_datasource() -> None:
    dashboard = _dashboard()
    assert 38 <= dashboard["schemaVersion"] <= 41  # Grafana 10.0 writes 38, 11.x up to 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    for source in _datasources(dashboard):
        assert source in (
            {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
            {"type": "grafana", "uid": "-- Grafana --"},  # the built-in annotations
        ), source
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["type"] == "row" or panel["targets"], panel["title"]


def _anchors(markdown: str) -> set[str]:
    """The anchors MkDocs' toc gives the page's headings (lower case, punctuation dropped, spaces as -)."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", h).strip().lower()) for h in headings}


def test_every_alert_has_for_severity_annotations_and_a_documented_runbook() -> None:
    anchors = _anchors(OPERATIONS.read_text())
    alerts = [rule for group in _rules()["groups"] for rule in group["rules"] if "alert" in rule]
    for rule in alerts:
        assert "for" in rule, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), rule["alert"]
        page, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert page == "docs/pages/operations.md", rule["alert"]
        assert anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in {OPERATIONS.name}"
    names = {rule["alert"] for rule in alerts}
    assert {
        "WardenConsumerLagGrowing",
        "WardenDeadLetterRate",
        "WardenLatencyP99OverTarget",
        "WardenStoreDegraded",
        "WardenNoVerdicts",
        "WardenRetrainFailing",
    } <= names
