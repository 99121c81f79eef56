"""Metrics, health and the live dashboard of a real worker under real traffic.

The dashboard test drives Debian's chromium through Playwright (never a
downloaded browser build); `make test` installs the package when it is missing.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.worker_pages import (
    BAD,
    N,
    Samples,
    get,
    labelled,
    poll,
    read_outcomes,
    scrape,
    send_traffic,
    total,
)
from warden.infra.dev.worker_process import wait_healthy, worker_process
from warden.serving.worker.metrics import bucket_quantile
from warden.streams import broker
from warden.streams.settings import WardenSettings
from warden.streams.topics import Topics

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "pages" / "assets" / "dashboard.png"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def _browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _ms(samples: Samples, q: float) -> str:
    buckets = sorted(
        (math.inf if le == "+Inf" else float(le), v)
        for le, v in labelled(samples, "warden_end_to_end_seconds_bucket", "le").items()
    )
    return f"{bucket_quantile(buckets, q) * 1000:.1f}"


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="no /usr/bin/chromium (make test installs Debian's chromium with apt-get)"
)
def test_metrics_health_and_the_live_dashboard_follow_real_traffic(
    settings: WardenSettings, base_env: dict[str, str], tmp_path: Path
) -> None:
    topics = Topics.from_settings(settings.kafka)
    broker.ensure_topics(settings.kafka, topics.all())
    base = f"http://{settings.worker.web_host}:{settings.worker.web_port}"
    with worker_process(settings, base_env, tmp_path / "worker.log") as proc, _browser() as browser:
        wait_healthy(settings, proc, timeout_s=90)
        status, body = get(settings, "/health")
        health = json.loads(body)
        assert (status, health["state"], health["reasons"]) == (200, "ready", [])
        before = scrape(settings)
        assert total(before, "warden_verdicts_total") == 0
        assert labelled(before, "warden_health_state", "state")["ready"] == 1

        page = browser.new_page(viewport={"width": 1200, "height": 640})  # type: ignore[attr-defined]
        page.goto(f"{base}/dashboard")
        page.wait_for_function("document.getElementById('state').textContent === 'ready'", timeout=15_000)
        assert page.text_content("#verdicts-total") == "0"

        ids = send_traffic(settings, topics)
        verdicts, letters = read_outcomes(settings, topics)
        assert {v.event_id for v in verdicts} == set(ids)
        assert len(letters) == len(BAD)
        # Throughput is a 10 s window: the page polled while the traffic was being
        # scored, and its sparkline keeps the last two minutes of what it showed.
        page.wait_for_function("Math.max(...history) > 0", timeout=30_000)

        # The page updates by itself: no reload between the empty and the full figures.
        page.wait_for_function(
            f"document.getElementById('verdicts-total').textContent === '{N}'"
            f" && document.getElementById('dead-letters').textContent === '{len(BAD)}'",
            timeout=30_000,
        )
        shown = {
            key: page.text_content(f"#{key}")
            for key in (
                "model-version",
                "p50",
                "p95",
                "p99",
                "events-in",
                "dead-letters",
                "dead-letter-rate",
                "verdicts-allow",
                "verdicts-junk",
                "verdicts-block",
                "state",
            )
        }
        after = scrape(settings)

        # Every figure on the page, recomputed from one scrape of /metrics.
        actions = labelled(after, "warden_verdicts_total", "action")
        events_in = total(after, "warden_events_in_total")
        dead = total(after, "warden_dead_letters_total")
        champion = [
            dict(labels)["version"]
            for (name, labels), _ in after.items()
            if name == "warden_model_info" and dict(labels)["role"] == "champion"
        ]
        assert shown["model-version"] == champion[0] == verdicts[0].model_version
        assert shown["events-in"] == f"{events_in:.0f}" == str(N + len(BAD))
        assert shown["dead-letters"] == f"{dead:.0f}"
        assert shown["dead-letter-rate"] == f"{100 * dead / events_in:.2f}"
        for action in ("allow", "junk", "block"):
            assert shown[f"verdicts-{action}"] == f"{actions[action]:.0f}"
            assert actions[action] == sum(v.action == action for v in verdicts)
        for q in (50, 95, 99):
            # The page rounds the server's figure (3 decimals) to one in JavaScript: .x5 may round either way.
            assert float(shown[f"p{q}"] or "nan") == pytest.approx(float(_ms(after, q / 100)), abs=0.11)
        assert shown["state"] == "ready"

        # Everything was processed, so the sampled lag of the input partitions comes down to 0.
        def caught_up() -> bool:
            lag = scrape(settings)
            input_lag = [
                v
                for (name, labels), v in lag.items()
                if name == "warden_consumer_lag" and dict(labels)["topic"] == topics.mail_events.name
            ]
            return len(input_lag) == topics.mail_events.partitions and sum(input_lag) == 0

        poll(caught_up, 30)
        page.wait_for_function("document.getElementById('lag').textContent === '0'", timeout=15_000)
        page.screenshot(path=str(SCREENSHOT), full_page=True)

    # Values moved with the traffic, consistently with what reached the topics.
    assert labelled(after, "warden_events_in_total", "kind") == {"mail": N + len(BAD)}
    assert labelled(after, "warden_events_out_total", "kind") == {"mail": N}
    reasons = labelled(after, "warden_dead_letters_total", "reason")
    assert (reasons["not_json"], reasons["not_utf8"], reasons["not_object"]) == (1, 1, 1)
    assert after[("warden_end_to_end_seconds_count", ())] == N
    assert after[("warden_batch_size_sum", ())] == N
    batches = after[("warden_score_batches_total", ())]
    assert after[("warden_batch_size_count", ())] == batches > 0
    # A one-hop worker decodes no features records: "decode" is a split-stages stage.
    stages = labelled(after, "warden_stage_seconds_count", "stage")
    assert {stage for stage, count in stages.items() if count > 0} == {
        "features",
        "store",
        "score",
        "produce",
    }
    assert stages["decode"] == 0
    lag_topics = {dict(labels)["topic"] for (name, labels) in after if name == "warden_consumer_lag"}
    assert topics.mail_events.name in lag_topics
    assert after[("warden_store_errors_total", ())] == 0
    assert SCREENSHOT.stat().st_size > 10_000
