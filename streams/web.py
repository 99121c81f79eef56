"""The worker's web pages: ``GET /health``, ``GET /metrics`` and ``POST /score``.

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

    @app.page("/health")
    async def _health(web: Any, request: Any) -> Any:
        body = json.dumps(stats.health())
        status = 503 if stats.status == "degraded" else 200
        return web.text(body, status=status, content_type="application/json")

    @app.page("/metrics")
    async def _metrics(web: Any, request: Any) -> Any:
        return web.text(stats.prometheus(), content_type="text/plain; version=0.0.4")

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
