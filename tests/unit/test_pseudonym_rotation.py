"""Per-domain keys, key files and rotation: aggregates stay continuous across a rotation."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from pydantic import SecretStr

from warden.features.exceptions import PseudonymKeyError
from warden.features.ingest.extraction import to_features
from warden.features.ingest.pseudonym import DomainKey, Generation, KeyRing, Pseudonymiser, load_key_file
from warden.features.store.aggregations import AGGREGATES, DecayedRate, DistinctCount, WindowCount
from warden.features.store.keys import Keys
from warden.features.store.operations import plan, plan_linked
from warden.features.testing import InMemoryStore
from warden.streams.records import MailEvent, SourcePosition

DOMAINS = ("address", "domain", "ip", "url_host", "account", "token")
POSITION = SourcePosition(topic="t", partition=0, offset=0)
T = 1_700_000_000.0  # the rotation
DAY = 86_400.0
HEX = "0123456789abcdef" * 2  # makes every test secret 32 bytes or more


def generation(since: float, tag: str, token_tag: str | None = None) -> Generation:
    keys = {d: DomainKey(f"{d[0]}{tag}", SecretStr(f"secret-{d}-{tag}-0123456789")) for d in DOMAINS}
    if token_tag is not None:
        keys["token"] = DomainKey(f"t{token_tag}", SecretStr(f"secret-token-{token_tag}-0123456789"))
    return Generation(since, keys)


def traffic() -> list[MailEvent]:
    """Two senders writing to a few contacts every ~20 minutes from a day before T to three days after;
    contacts sometimes reply."""
    rng = random.Random(5)
    contacts = [f"friend{i}@mail.example" for i in range(8)]
    events = []
    t = T - DAY
    n = 0
    while t < T + 3 * DAY:
        sender = rng.choice(["alice@example.org", "bob@corp.example"])
        to = rng.sample(contacts, rng.randint(1, 3))
        if rng.random() < 0.2:
            sender, to = rng.choice(contacts), ["alice@example.org"]
        events.append(
            MailEvent(
                event_id=f"e{n}",
                timestamp=t,
                sender=sender,
                recipients=to,
                subject="hello",
                text="see https://www.shop.example/offer",
                urls=["https://www.shop.example/offer"],
            )
        )
        n += 1
        t += rng.uniform(600, 1800)
    return events


def rows(ring: KeyRing, events: list[MailEvent]) -> list[list[float]]:
    store = InMemoryStore(Keys("rot"))
    return store.apply_and_read_now(
        [to_features(e, ring, POSITION, 0, now=e.timestamp, event_time=e.timestamp) for e in events]
    )


WINDOWED = [i for i, a in enumerate(AGGREGATES) if isinstance(a, WindowCount | DecayedRate | DistinctCount)]


def test_each_domain_has_its_own_key_and_the_pseudonym_carries_its_id() -> None:
    p = generation(0, "1").pseudonymiser()
    assert p.address("Alice@Example.org").startswith("a1.")
    assert p.domain("example.org").startswith("d1.")
    assert p.ip("192.0.2.1").startswith("i1.")
    assert p.host("shop.example").startswith("u1.")
    assert p.url_host("shop.example") == p.host("shop.example")
    assert p.account("user-42").startswith("a1.")  # "account" starts with a too
    assert p.account("user-42") != p.address("user-42")  # different keys
    assert p.address("x@y.z")[3:] != Pseudonymiser.of(generation(0, "2").keys).address("x@y.z")[3:]


def test_secrets_never_show_in_reprs() -> None:
    ring = KeyRing([generation(0, "1"), generation(T, "2")], DAY)
    shown = repr(ring) + repr(ring.at(T)) + repr(generation(0, "1"))
    assert "secret-" not in shown
    assert "a1" in shown
    assert "a2" in shown


def test_key_file_loads_and_bad_files_fail_with_one_line_and_no_secret(tmp_path: Path) -> None:
    def entry(since: float, tag: str) -> dict[str, object]:
        return {
            "since": since,
            "keys": {d: {"id": f"{d[0]}{tag}", "secret": f"secret-{d}-{tag}-{HEX}"} for d in DOMAINS},
        }

    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"generations": [entry(0, "1"), entry(T, "2")]}))
    ring = load_key_file(path, grace_seconds=DAY)
    assert ring.at(T - 1).served.key_id == "a1"
    assert ring.at(T - 1).linked is None
    assert ring.at(T + 1).served.key_id == "a1"
    assert ring.at(T + 1).linked is not None
    assert ring.at(T + DAY).served.key_id == "a2"
    assert ring.at(T + DAY).linked is None

    reused = entry(T, "1")
    path.write_text(json.dumps({"generations": [entry(0, "1"), reused]}))
    with pytest.raises(PseudonymKeyError, match="reuses address key id") as caught:
        load_key_file(path, grace_seconds=DAY)
    assert "secret-" not in str(caught.value)
    missing = entry(0, "1")
    del missing["keys"]["ip"]  # type: ignore[attr-defined]
    path.write_text(json.dumps({"generations": [missing]}))
    with pytest.raises(PseudonymKeyError, match="no key for domain ip"):
        load_key_file(path, grace_seconds=DAY)
    weak = entry(0, "1")
    weak["keys"]["ip"]["secret"] = "short"  # type: ignore[index]
    path.write_text(json.dumps({"generations": [weak]}))
    with pytest.raises(PseudonymKeyError, match=r"the ip key is 5 bytes.*warden keygen") as caught:
        load_key_file(path, grace_seconds=DAY)
    assert "short" not in str(caught.value)
    weak["keys"]["ip"]["secret"] = "replace-with-a-random-key-0123456789abcdef"  # type: ignore[index]
    path.write_text(json.dumps({"generations": [weak]}))
    with pytest.raises(PseudonymKeyError, match="published example"):
        load_key_file(path, grace_seconds=DAY)
    path.write_text("{not json")
    with pytest.raises(PseudonymKeyError, match="not JSON"):
        load_key_file(path, grace_seconds=DAY)
    with pytest.raises(PseudonymKeyError, match="cannot read key file"):
        load_key_file(tmp_path / "absent.json", grace_seconds=DAY)


def test_linked_writes_never_touch_a_served_key() -> None:
    ring = KeyRing([generation(0, "1"), generation(T, "2")], 2 * DAY)
    keys = Keys("rot")
    for event in traffic()[:200]:
        features = to_features(event, ring, POSITION, 0, now=event.timestamp, event_time=event.timestamp)
        served = {k for call in plan(features, keys, 60, 60) for k in call.keys}
        linked = {k for call in plan_linked(features, keys, 60, 60) for k in call.keys}
        assert (features.linked is None) == (event.timestamp < T)
        assert not served & linked


def test_aggregates_stay_continuous_across_a_rotation_inside_the_grace_period() -> None:
    events = traffic()
    reference = rows(KeyRing([generation(0, "1")], 2 * DAY), events)
    rotated = rows(KeyRing([generation(0, "1"), generation(T, "2")], 2 * DAY), events)
    in_grace = [i for i, e in enumerate(events) if e.timestamp < T + 2 * DAY]
    after = [i for i, e in enumerate(events) if e.timestamp >= T + 2 * DAY]
    assert len(in_grace) > 100
    assert len(after) > 30
    # Up to the end of the grace period every served value is exactly what it would have been.
    for i in in_grace:
        assert rotated[i] == reference[i], f"event {i} at T{events[i].timestamp - T:+.0f}s"
    # After the switch the new generation serves, and it holds every windowed aggregate (windows
    # up to 24 h, shorter than the grace period) exactly.
    for i in after:
        assert [rotated[i][k] for k in WINDOWED] == [reference[i][k] for k in WINDOWED]


def test_a_rotation_without_grace_breaks_the_aggregates() -> None:
    """The control: switching keys at once starts every entity from nothing."""
    events = traffic()
    reference = rows(KeyRing([generation(0, "1")], 0), events)
    naive = rows(KeyRing([generation(0, "1"), generation(T, "2")], 0), events)
    first_after = next(i for i, e in enumerate(events) if e.timestamp >= T)
    day_count = AGGREGATES.index(WindowCount(AGGREGATES[2].entity, 86400))
    assert naive[first_after][day_count] < reference[first_after][day_count]


def test_the_token_key_may_stay_across_generations_and_legacy_constructor_still_works() -> None:
    ring = KeyRing([generation(0, "1", token_tag="0"), generation(T, "2", token_tag="0")], DAY)
    old, new = ring.at(T + 2 * DAY).served, generation(0, "1", token_tag="0").pseudonymiser()
    assert old.token_buckets(["free", "money"], 1024, 10) == new.token_buckets(["free", "money"], 1024, 10)
    legacy = Pseudonymiser(SecretStr("some-key"), "k7")
    assert legacy.address("a@b.c").startswith("k7.")
    assert legacy.key_ids["ip"] == "k7"


def test_feedback_during_the_grace_period_reaches_both_generations() -> None:
    from warden.features.store.aggregations import SENDER, SENDER_DOMAIN
    from warden.serving.worker.agents.feedback import Labelled, reputation_calls
    from warden.streams.records import Feedback, ServedRow
    from warden.streams.settings import FeedbackSettings

    ring = KeyRing([generation(0, "1"), generation(T, "2")], 2 * DAY)
    features = to_features(traffic()[0], ring, POSITION, 0, now=T + 60, event_time=T + 60)
    assert features.linked is not None
    row = ServedRow(
        event_id=features.event_id,
        timestamp=features.timestamp,
        model_version="m",
        sender=features.sender,
        sender_domain=features.sender_domain,
        url_domains=features.url_domains,
        content=features.content,
        tokens=features.tokens,
        aggregates=[],
        linked=features.linked,
    )
    label = Feedback(
        feedback_id="f1",
        event_id=row.event_id,
        label="abuse",
        source="ops_review",
        reporter="ops",
        at=T + 120,
    )
    calls = reputation_calls(
        Labelled(label, row, FeedbackSettings().weight("ops_review"), label.at), Keys("rot"), 60, 60
    )
    targets = {(c.entity, c.pseudonym) for c in calls}
    for generation_pseudonyms in (row, features.linked):
        assert (SENDER, generation_pseudonyms.sender) in targets
        assert (SENDER_DOMAIN, generation_pseudonyms.sender_domain) in targets
    assert len({c.args[0] for c in calls}) == len(calls)  # distinct report ids: each once-only
