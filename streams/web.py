"""The worker's web pages: ``GET /health``, ``GET /metrics``, the dashboard and ``POST /score``.

``GET /health`` answers with the state of :mod:`infra.health` (200 for ready
and degraded, 503 for starting and failing) and its reasons as JSON.
``GET /metrics`` is the Prometheus text exposition of :mod:`infra.metrics`.
``GET /dashboard`` is the live page of :mod:`infra.dashboard`, which polls
``GET /dashboard.json``.

``POST /score`` takes a mail event (the ``mail.events`` JSON) and answers with
its verdict, through the stream's own path: the ingest transform, the same
store round trip (so the event's aggregates are applied once, and a later
copy of the same event on the stream is served the same values), the
champion model and the policy. A malformed body gets ``400`` with the reason.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST

from infra import dashboard, health
from infra.metrics import exposition
from streams.agents.ingest import ingest_record
from streams.agents.score import decide, read_aggregates
from streams.records import DeadLetter, SourcePosition

if TYPE_CHECKING:
    from infra.settings import WardenSettings
    from streams.app import Services

#: Where a synchronously scored event says it came from.
HTTP_SOURCE = SourcePosition(topic="http:/score", partition=0, offset=0)


def register(app: faust.App, settings: WardenSettings, services: Services) -> None:
    """Declare the pages on ``app``."""
    stats = services.stats
    page = dashboard.page()

    @app.page("/health")
    async def _health(web: Any, request: Any) -> Any:
        state = health.update(stats, settings.health)
        body = json.dumps(stats.health())
        return web.text(body, status=health.HTTP_STATUS[state], content_type="application/json")

    @app.page("/metrics")
    async def _metrics(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset in content_type=, so the full header goes in headers=.
        return web.bytes(exposition(stats), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/dashboard")
    async def _dashboard(web: Any, request: Any) -> Any:
        return web.html(page)

    @app.page("/dashboard.json")
    async def _dashboard_json(web: Any, request: Any) -> Any:
        return web.json(dashboard.snapshot(stats))

    class Score(View):
        async def post(self, request: Request) -> Response:
            raw = await request.read()
            now = time.time()
            outcome = ingest_record(raw, HTTP_SOURCE, int(now * 1000), settings, services.pseudonymiser, now)
            if isinstance(outcome, DeadLetter):
                return self.error(400, outcome.reason)
            aggregates = await read_aggregates(services.store, [outcome], stats)
            slot = services.slot
            (verdict,), _ = decide(
                [outcome],
                aggregates,
                slot.champion,
                int(time.time() * 1000),
                reasons=settings.serving.reasons,
            )
            return self.json(json.loads(verdict.model_dump_json()))

    app.page("/score")(Score)
