"""The worker's web pages: ``GET /health``, ``GET /metrics``, the dashboard and ``POST /score``.

``GET /health`` answers with the state of :mod:`serving.worker.health` (200 for ready
and degraded, 503 for starting and failing) and its reasons as JSON.
``GET /metrics`` is the Prometheus text exposition of :mod:`serving.worker.metrics`.
``GET /dashboard`` is the live page of :mod:`serving.worker.dashboard`, which polls
``GET /dashboard.json``.

``POST /score`` takes a mail event (the ``mail.events`` JSON) and answers with
its verdict, through the stream's own path: the ingest transform, the store,
the champion model and the policy. It is read-only by default: the event is
scored against the current aggregates as a *preview* (what applying it would
serve, nothing changed; ``ServingSettings.score_applies`` makes it apply, as
the stream does). Its time is the worker's clock, never the body's
``timestamp``. An event whose id the store saw first with other content is
answered under a derived id, as the stream would score it. Answers:

* ``400`` when no token is configured (the server listens on loopback only)
  and the ``Host`` header names neither ``localhost``, a loopback address nor
  the bind address: a page on another site that rebinds its own name to
  127.0.0.1 (DNS rebinding) sends its own name there;
* ``401`` without ``Authorization: Bearer <ServingSettings.score_token>``
  (required when the server listens beyond loopback: the worker refuses to
  start without a token then; compared in constant time);
* ``415`` unless the body is ``application/json`` (so a browser page on
  another site cannot post to it without a CORS preflight, which is refused);
* ``413`` for a body over ``IngestSettings.max_payload_bytes``;
* ``400`` with the reason for a malformed event, or for a body over
  ``IngestSettings.isolate_above_bytes`` whose ingest overran
  ``IngestSettings.isolation_deadline_s``: such bodies are ingested in the
  worker's isolated child (:class:`~serving.worker.ingest_pool.IsolatedIngest`, the
  one the stream uses), never in the event loop;
* ``503`` when the store does not answer within ``ServingSettings.score_timeout_s``,
  or no mail model is promoted or can score the event (a champion that fails
  on the event's row falls back as on the stream: :func:`serving.worker.agents.score.verdicts_for`).

Faust's own ``/router`` and ``/table`` views are turned off (:mod:`serving.worker.app`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import aiohttp.web
import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST

from warden.features.exceptions import StoreUnavailable
from warden.features.ingest.record import ingest_record
from warden.serving.worker import dashboard, health
from warden.serving.worker.agents.score import verdicts_for
from warden.serving.worker.ingest_pool import IsolatedIngest, RawRecord, decoded
from warden.serving.worker.metrics import exposition
from warden.streams.exceptions import WebServerUnprotected
from warden.streams.records import DeadLetter, SourcePosition, Verdict

if TYPE_CHECKING:
    from pydantic import SecretStr

    from warden.serving.worker.services import Services
    from warden.streams.settings import WardenSettings

#: Where a synchronously scored event says it came from.
HTTP_SOURCE = SourcePosition(topic="http:/score", partition=0, offset=0)


def is_loopback(host: str) -> bool:
    """True when a server bound to ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve to any interface


def check_exposure(settings: WardenSettings) -> None:
    """Refuse a web server that listens beyond loopback while ``POST /score`` needs no token.

    Called when the worker's app is built; :class:`WebServerUnprotected` says why in one line.
    """
    host = settings.worker.web_host
    if settings.serving.score_token is None and not is_loopback(host):
        raise WebServerUnprotected(
            f"the worker's web server would listen on {host!r}, beyond loopback, and POST /score "
            "would answer anyone: set WARDEN_SERVING__SCORE_TOKEN (openssl rand -hex 32) or bind 127.0.0.1"
        )


def host_name(header: str) -> str:
    """The host a ``Host`` header names, lower-cased, without its port ("" when malformed)."""
    value = header.strip().lower()
    if value.startswith("["):  # an IPv6 literal: [::1]:6066
        end = value.find("]")
        rest = value[end + 1 :] if end > 0 else ":x"
        if rest and not (rest[0] == ":" and rest[1:].isdigit()):
            return ""
        return value[1:end]
    name, colon, port = value.rpartition(":")
    if not colon:
        return value
    return name if port.isdigit() and ":" not in name else ""


def local_host(header: str | None, bind: str) -> bool:
    """True when a ``Host`` header names this machine: ``localhost``, a loopback address or ``bind``.

    Checked on a server without a token (loopback only): a browser sends the
    name it resolved, so a rebound attacker's name is refused.
    """
    if header is None:
        return False
    name = host_name(header)
    if not name:
        return False
    return name in ("localhost", bind.lower()) or is_loopback(name)


def authorised(header: str | None, token: SecretStr) -> bool:
    """True when an ``Authorization`` header carries the bearer ``token``, compared in constant time.

    Both sides are hashed first, so the comparison takes the same time whatever
    the length or content of what was sent.
    """
    scheme, _, given = (header or "").strip().partition(" ")
    sent = hashlib.sha256(given.strip().encode("utf-8", "surrogatepass")).digest()
    wanted = hashlib.sha256(token.get_secret_value().encode("utf-8")).digest()
    return hmac.compare_digest(sent, wanted) and scheme.lower() == "bearer"


async def read_body(request: aiohttp.web.Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it is longer than ``limit`` bytes (never reads more)."""
    declared = request.content_length
    if declared is not None and declared > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)


@dataclass(frozen=True)
class Refusal:
    """Why ``POST /score`` did not answer with a verdict: the HTTP status and a one-line reason."""

    status: int
    reason: str


async def score_body(
    raw: bytes,
    settings: WardenSettings,
    services: Services,
    isolated: IsolatedIngest,
    clock: Callable[[], float] = time.time,
) -> Verdict | Refusal:
    """The verdict for a posted mail event (the body, within the size limit), or why there is none.

    Called by the ``POST /score`` view once the caller is let in. Ingests as
    the stream does (a body over ``isolate_above_bytes`` in the worker's
    isolated child, under its deadline), reads the store within
    ``score_timeout_s`` (a preview unless ``score_applies``) and scores through
    :func:`serving.worker.agents.score.verdicts_for`. Never raises for the body's sake.
    """
    serving = settings.serving
    now = clock()
    # The broker timestamp of a stream record is here the worker's clock.
    record = RawRecord(raw, HTTP_SOURCE.topic, HTTP_SOURCE.partition, HTTP_SOURCE.offset, int(now * 1000))
    outcome = await isolated.ingest(record, now, "mail") if isolated.wants(record) else None
    if outcome is not None:
        ingested = decoded(outcome, "mail")
    else:  # small, or no isolated child can run now (then in the loop, as on the stream)
        ingested = ingest_record(raw, HTTP_SOURCE, int(now * 1000), settings, services.pseudonymiser, now)
    if isinstance(ingested, DeadLetter):
        return Refusal(400, ingested.reason)
    if services.slot.scorer_for("mail") is None:
        return Refusal(503, "no mail model is promoted in the registry")
    try:
        served = await asyncio.wait_for(
            services.store.serve([ingested], preview=not serving.score_applies), serving.score_timeout_s
        )
    except (TimeoutError, StoreUnavailable):
        services.stats.store_failures += 1
        return Refusal(503, "the feature store did not answer in time")
    verdicts = verdicts_for(
        services.slot, "mail", [ingested], served, services.stats, int(clock() * 1000), serving.reasons
    )
    if isinstance(verdicts, str):
        return Refusal(503, verdicts)
    return verdicts[0]


def register(app: faust.App, settings: WardenSettings, services: Services, isolated: IsolatedIngest) -> None:
    """Declare the pages on ``app``; ``POST /score`` ingests large bodies in ``isolated``."""
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

    serving = settings.serving

    class Score(View):
        def refuse(self, status: int, reason: str, headers: dict[str, str] | None = None) -> Response:
            stats.score_refused[status] += 1
            return self.error(status, reason, headers=headers)

        async def post(self, request: Request) -> Response:
            http = cast(aiohttp.web.Request, request)  # what Faust's aiohttp driver hands its views
            token = serving.score_token
            if token is None and not local_host(http.headers.get("Host"), settings.worker.web_host):
                return self.refuse(400, "the Host header must name this machine (localhost)")
            if token is not None and not authorised(http.headers.get("Authorization"), token):
                return self.refuse(401, "a bearer token is required", {"WWW-Authenticate": "Bearer"})
            if http.content_type != "application/json":
                return self.refuse(415, "the body must be application/json")
            raw = await read_body(http, settings.ingest.max_payload_bytes)
            if raw is None:
                return self.refuse(413, f"the body is over {settings.ingest.max_payload_bytes} bytes")
            answer = await score_body(raw, settings, services, isolated)
            if isinstance(answer, Refusal):
                return self.refuse(answer.status, answer.reason)
            return self.json(json.loads(answer.model_dump_json()))

    app.page("/score")(Score)
