"""Labels from the command line, a CSV/JSONL file or stdin, validated, then sent.

``warden feedback`` uses this: every record is validated as a
:class:`~streams.records.Feedback` before anything is sent, so a bad file
sends nothing and says which line is wrong. Every label is signed with the
key of the source it is sent as (:mod:`streams.feedback_auth`); without that
key nothing is sent.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import sys
import time
from collections.abc import Iterable, Mapping

from pydantic import ValidationError

from warden.streams import broker
from warden.streams.exceptions import BrokerError, UsageError
from warden.streams.feedback_auth import SourceKeys
from warden.streams.records import Feedback, encode
from warden.streams.settings import WardenSettings
from warden.streams.topics import Topics


def _complete(fields: Mapping[str, object], now: float) -> dict[str, object]:
    """Fill in the time and a deterministic feedback id when they are not given."""
    record = {k: v for k, v in fields.items() if v not in (None, "")}
    record.setdefault("at", now)
    if isinstance(record["at"], str):
        record["at"] = float(record["at"])
    if "feedback_id" not in record:
        basis = "|".join(str(record.get(k, "")) for k in ("event_id", "label", "source", "reporter"))
        record["feedback_id"] = "fb-" + hashlib.sha256(basis.encode()).hexdigest()[:24]
    return record


def _rows(args: argparse.Namespace) -> Iterable[dict[str, object]]:
    if args.file is None:
        if not (args.event_id and args.label):
            raise UsageError("give --event-id and --label, or --file")
        yield {
            "event_id": args.event_id,
            "label": args.label,
            "source": args.source,
            "reporter": args.reporter,
            "reason": args.reason,
        }
        return
    try:
        text = sys.stdin.read() if args.file == "-" else open(args.file, encoding="utf-8").read()  # noqa: SIM115
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    stripped = text.lstrip()
    if stripped.startswith("{"):
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    yield {"source": args.source, "reporter": args.reporter, **json.loads(line)}
                except json.JSONDecodeError as exc:
                    raise UsageError(f"line {number}: not JSON ({exc.msg})") from None
    else:
        for row in csv.DictReader(io.StringIO(text)):
            yield {"source": args.source, "reporter": args.reporter, **row}


def read(args: argparse.Namespace) -> list[Feedback]:
    """Every label asked for, validated; raises UsageError naming the first bad record."""
    now = time.time()
    out = []
    for number, fields in enumerate(_rows(args), start=1):
        try:
            out.append(Feedback.model_validate_json(json.dumps(_complete(fields, now))))
        except (ValidationError, ValueError) as exc:
            detail = exc.errors()[0] if isinstance(exc, ValidationError) else {"loc": (), "msg": str(exc)}
            where = ".".join(str(p) for p in detail["loc"]) or "record"
            raise UsageError(f"label {number}: {where}: {detail['msg']}") from None
    if not out:
        raise UsageError("no labels given")
    return out


def send(settings: WardenSettings, records: Iterable[Feedback]) -> int:
    """Sign labels with their sources' keys and send them to the feedback topic (key: event id).

    Returns how many were sent. Raises :class:`~streams.exceptions.SettingsError`
    before anything is sent when a label's source has no key here, and
    :class:`BrokerError` when the broker does not take every label.
    """
    keys = SourceKeys.from_settings(settings)
    records = [keys.sign(record) for record in records]
    topics = Topics.from_settings(settings.kafka)
    broker.ensure_topics(settings.kafka, (topics.feedback,))
    producer = broker.producer(settings.kafka)
    try:
        futures = [
            producer.send(topics.feedback.name, key=r.event_id.encode(), value=encode(r)) for r in records
        ]
        for future in futures:
            future.get(timeout=60)
    except Exception as exc:  # kafka-python raises KafkaError subclasses and timeouts
        raise BrokerError(f"the broker did not take every label: {exc}") from exc
    finally:
        producer.close()
    return len(futures)
