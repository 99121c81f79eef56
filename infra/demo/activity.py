"""The calendar and contacts part of ``warden demo``: a simulated stream beside the mails.

The demo trains the calendar and contacts models on :data:`DEMO_SIMULATION`
(seed 1), then sends a stream simulated with seed 2, and a few malformed
records, to their topics while the mails replay; the same worker scores all
three kinds. :func:`collect_activity` checks that every record got one
verdict of its kind (or a dead letter) and measures quality per kind and per
campaign type against the simulator's labels.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from warden.streams import broker
from warden.streams.records import DeadLetter, Verdict, decode
from warden.streams.settings import WardenSettings
from warden.streams.sources.replay import send_raw
from warden.streams.sources.simulated_world import CAMPAIGN_TYPES, Simulated, SimulationParams
from warden.streams.sources.simulator import produce
from warden.streams.topics import Topic, Topics

#: The demo's calendar and contacts traffic: models trained on this, replayed with seed 2.
DEMO_SIMULATION = SimulationParams(seed=1, accounts=200, days=3.0)
#: Broken calendar and contacts records sent before the simulated stream: (kind, value).
ACTIVITY_MALFORMED: tuple[tuple[str, bytes], ...] = (
    ("calendar", b'{"event_id": "bad-c1", "timestamp": 1767225600.0, "action": "created"}'),
    ("contacts", b'{"event_id": "bad-k1", "action": "shared", "owner": "x", "card": []}'),
)


def send_activity(
    settings: WardenSettings, topics: Topics, events: list[Simulated], step: Callable[[str], None]
) -> tuple[int, set[tuple[str, int, int]]]:
    """Send the malformed records and the simulated stream; returns the start time and bad positions."""
    since_ms = int(time.time() * 1000) - 1000
    topic_of: dict[str, Topic] = {"calendar": topics.calendar_events, "contacts": topics.contacts_events}
    producer = broker.producer(settings.kafka)
    try:
        futures = [
            (topic_of[kind], producer.send(topic_of[kind].name, key=b"malformed", value=value))
            for kind, value in ACTIVITY_MALFORMED
        ]
        send_raw(producer, [])
        positions = {(t.name, f.get(timeout=60).partition, f.get(timeout=60).offset) for t, f in futures}
        kinds = {kind: sum(e.event.kind == kind for e in events) for kind in ("calendar", "contacts")}
        step(
            f"sending {kinds['calendar']:,} simulated calendar and {kinds['contacts']:,} contacts events "
            f"(seed 2) and {len(ACTIVITY_MALFORMED)} malformed ones to their topics ..."
        )
        produce(events, producer, topics)
    finally:
        producer.close()
    return since_ms, positions


def collect_activity(
    settings: WardenSettings,
    topics: Topics,
    events: list[Simulated],
    positions: set[tuple[str, int, int]],
    since_ms: int,
    step: Callable[[str], None],
) -> dict[str, object]:
    """Verdicts and dead letters of the simulated stream, and per-kind quality against its labels."""
    truth = {e.event.event_id: e for e in events}
    verdicts: dict[str, Verdict] = {}
    letters: dict[tuple[str, int, int], DeadLetter] = {}
    duplicates = 0
    reader = broker.TopicReader(settings.kafka, (topics.verdicts, topics.dead_letters))
    step("waiting for a verdict or dead letter for every calendar and contacts record ...")
    try:
        for message in reader.until(
            lambda: len(verdicts) >= len(truth) and len(letters) >= len(positions), 300.0
        ):
            if message.timestamp_ms < since_ms or message.value is None:
                continue
            if message.topic == topics.verdicts.name:
                verdict = decode(Verdict, message.value)
                if verdict.event_id in truth:
                    duplicates += verdict.event_id in verdicts
                    verdicts.setdefault(verdict.event_id, verdict)
            else:
                letter = decode(DeadLetter, message.value)
                where = (letter.source.topic, letter.source.partition, letter.source.offset)
                if where in positions:
                    letters[where] = letter
    finally:
        reader.close()
    out: dict[str, object] = {
        "malformed_in": len(positions),
        "dead_letters": len(letters),
        "dead_letter_reasons": sorted(d.reason for d in letters.values()),
        "missing": len(truth) - len(verdicts) + len(positions) - len(letters),
        "duplicate_verdicts": duplicates,
    }
    for kind in ("calendar", "contacts"):
        # Quality over the simulated window (account history before it is scored, not measured).
        ids = [i for i, e in truth.items() if e.event.kind == kind and i in verdicts and not e.history]
        all_verdicts = sum(v.kind == kind for v in verdicts.values())
        labels = np.asarray([truth[i].label == 1 for i in ids], dtype=bool)
        flagged = np.asarray([verdicts[i].action != "allow" for i in ids], dtype=bool)
        tp, fp = int((labels & flagged).sum()), int((~labels & flagged).sum())
        by_type = {}
        for name in CAMPAIGN_TYPES:
            of_type = [i for i in ids if truth[i].campaign == name]
            if of_type:
                by_type[name] = round(sum(verdicts[i].action != "allow" for i in of_type) / len(of_type), 4)
        out[kind] = {
            "events": sum(e.event.kind == kind for e in truth.values()),
            "verdicts": all_verdicts,
            "measured": len(ids),
            "wrong_kind": sum(verdicts[i].kind != kind for i in ids),
            "abuse": int(labels.sum()),
            "precision_junk_or_block": round(tp / (tp + fp), 4) if tp + fp else None,
            "recall_junk_or_block": round(tp / int(labels.sum()), 4) if labels.any() else None,
            "false_positive_rate": round(fp / max(1, int((~labels).sum())), 4),
            "recall_by_campaign": by_type,
            "model_versions": sorted({verdicts[i].model_version for i in ids}),
        }
    return out


def activity_lines(activity: object) -> list[str]:
    if not isinstance(activity, dict):
        return []
    lines = []
    for kind in ("calendar", "contacts"):
        k = activity[kind]
        lines.append(
            f"{kind:20s} {k['events']:,} events -> {k['verdicts']:,} verdicts, model "
            f"{', '.join(k['model_versions'])}"
        )
        lines.append(
            f"{'':20s} in the window {k['measured']:,} ({k['abuse']:,} abuse): precision "
            f"{k['precision_junk_or_block']}  recall {k['recall_junk_or_block']}  "
            f"false-positive rate {k['false_positive_rate']}"
        )
        by_type = "  ".join(f"{name} {value}" for name, value in k["recall_by_campaign"].items())
        lines.append(f"{'':20s} recall by campaign: {by_type}")
    lines.append(
        f"{'calendar+contacts':20s} {activity['malformed_in']} malformed -> "
        f"{activity['dead_letters']} dead letters; "
        f"missing {activity['missing']}; duplicates {activity['duplicate_verdicts']}"
    )
    return lines
