"""``POST /score`` behind the door: the stream's ingest isolation, its scoring fallback, and the Host check.

The view's own checks (token, content type, body limit) are in
``tests/integration/test_score_endpoint.py``; here :func:`serving.worker.web.score_body`
runs with a real model slot, the reference store and a real isolated child.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import SecretStr

from tests.unit.test_features import mail
from tests.unit.test_models import _nan_scorer, candidate, registry  # noqa: F401 (fixtures)
from warden.features.ingest.pseudonym import Pseudonymiser
from warden.features.testing import InMemoryStore
from warden.infra.bench.hostile_inputs import BODY_FAMILIES
from warden.models.registry import Candidate, Registry
from warden.serving.slot import ModelSlot
from warden.serving.worker.ingest_pool import IsolatedIngest
from warden.serving.worker.metrics import WorkerStats
from warden.serving.worker.services import Services
from warden.serving.worker.web import Refusal, host_name, local_host, score_body
from warden.streams.records import Verdict, encode
from warden.streams.settings import WardenSettings

THRESHOLD = 20_000


def _settings(**ingest: object) -> WardenSettings:
    return WardenSettings(
        privacy={"hmac_key": SecretStr("w" * 32), "key_id": "kw"},
        ingest={"isolate_above_bytes": THRESHOLD, **ingest},
    )


def _services(settings: WardenSettings, slot: ModelSlot) -> Services:
    return Services(
        store=InMemoryStore(),  # type: ignore[arg-type]  # the reference store, same calls as Redis
        served=None,  # type: ignore[arg-type]  # /score keeps no served rows
        ledger=None,  # type: ignore[arg-type]
        slot=slot,
        pseudonymiser=Pseudonymiser(settings.privacy.hmac_key, settings.privacy.key_id),
        stats=WorkerStats(),
    )


def _post(
    settings: WardenSettings, services: Services, isolated: IsolatedIngest, raw: bytes
) -> Verdict | Refusal:
    return asyncio.run(score_body(raw, settings, services, isolated))


LARGE = encode(mail(event_id="large", timestamp=time.time() - 60, html="<p>" + "word " * 8_000))  # ~40 KB


def test_a_body_over_the_threshold_is_ingested_in_the_isolated_child(registry: Registry) -> None:  # noqa: F811
    settings = _settings(isolation_deadline_s=60.0)
    services = _services(settings, ModelSlot.from_registry(registry, WorkerStats()))
    isolated = IsolatedIngest(settings)
    try:
        small = _post(settings, services, isolated, encode(mail(timestamp=time.time() - 60)))
        assert isolated.isolated == 0
        assert isolated.starts == 0
        large = _post(settings, services, isolated, LARGE)
        assert isolated.isolated == 1  # the child took it; the event loop did not parse it
    finally:
        isolated.close()
    assert isinstance(small, Verdict)
    assert isinstance(large, Verdict)
    # The same verdict as an ingest in the loop (a threshold above the body) gives.
    roomy = _settings(isolate_above_bytes=10**6 - 1)
    in_loop = IsolatedIngest(roomy)
    again = _post(roomy, _services(roomy, ModelSlot.from_registry(registry, WorkerStats())), in_loop, LARGE)
    assert in_loop.isolated == 0
    assert isinstance(again, Verdict)
    assert (again.event_id, again.score, again.action) == (large.event_id, large.score, large.action)


def test_a_large_body_past_the_deadline_is_refused_with_the_reason(registry: Registry) -> None:  # noqa: F811
    settings = _settings(isolation_deadline_s=0.001)
    services = _services(settings, ModelSlot.from_registry(registry, WorkerStats()))
    hostile = encode(BODY_FAMILIES[0].make(1_000_000).model_copy(update={"timestamp": time.time() - 60}))
    isolated = IsolatedIngest(settings)
    try:
        answer = _post(settings, services, isolated, hostile)
    finally:
        isolated.close()
    assert isinstance(answer, Refusal)
    assert answer.status == 400
    assert "longer than the deadline of 0.001 s" in answer.reason
    assert isolated.overruns == 1


def test_a_champion_scoring_nan_falls_back_as_on_the_stream_or_answers_503(
    registry: Registry,  # noqa: F811
    candidate: Candidate,  # noqa: F811
) -> None:
    settings = _settings()
    slot = ModelSlot.from_registry(registry, WorkerStats())
    good = slot.champion
    services = _services(settings, slot)
    isolated = IsolatedIngest(settings)
    body = encode(mail(timestamp=time.time() - 60))
    try:
        slot.previous, slot.champion = good, _nan_scorer(candidate, "v-nan")
        answer = _post(settings, services, isolated, body)
        assert isinstance(answer, Verdict)  # before: ModelRejected, an unhandled 500
        assert answer.model_version == good.version
        assert slot.champion is good
        slot.champion, slot.previous = _nan_scorer(candidate, "v-nan-2"), None
        refused = _post(settings, services, isolated, body)
    finally:
        isolated.close()
    assert isinstance(refused, Refusal)
    assert refused.status == 503
    assert "non-finite" in refused.reason


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost", "localhost"),
        ("LOCALHOST:6066", "localhost"),
        ("127.0.0.1:6066", "127.0.0.1"),
        ("[::1]:6066", "::1"),
        ("[::1]", "::1"),
        ("evil.example:6066", "evil.example"),
        ("[::1]x", ""),
        ("[::1", ""),
        ("::1", ""),
        ("localhost:http", ""),
        ("", ""),
    ],
)
def test_the_host_header_is_read_strictly(header: str, name: str) -> None:
    assert host_name(header) == name


@pytest.mark.parametrize(
    ("header", "bind", "local"),
    [
        ("localhost:6066", "127.0.0.1", True),
        ("127.0.0.1:6066", "127.0.0.1", True),
        ("127.0.0.2", "127.0.0.1", True),
        ("[::1]:6066", "::1", True),
        ("worker.local:6066", "worker.local", True),  # the name it was told to bind
        # DNS rebinding: the attacker's name, now resolving to 127.0.0.1.
        ("rebind.attacker.example:6066", "127.0.0.1", False),
        ("127.0.0.1.nip.io", "127.0.0.1", False),
        ("localhost.attacker.example", "127.0.0.1", False),
        ("10.0.0.5", "127.0.0.1", False),
        (None, "127.0.0.1", False),
        ("", "127.0.0.1", False),
    ],
)
def test_without_a_token_only_this_machines_names_are_served(
    header: str | None, bind: str, local: bool
) -> None:
    assert local_host(header, bind) is local
