"""Only examples signed by a worker's feedback agent are learned from: anything else produced to
training-examples is refused by retrain, counted by reason and reported in its summary line.

The genuine examples go through the feedback agent's own :func:`~serving.worker.agents.feedback.example`
with the deployment's training-example key; the forged ones are what anyone able to produce to the
topic could write: unsigned rows, rows signed with another key, genuine examples replayed with the
label flipped and an authority that would win (an appeal), and bytes that are no example at all.
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from pathlib import Path

from pydantic import SecretStr

from tests.unit.test_models import synthetic
from warden.models import retrain
from warden.serving.worker.agents.feedback import Labelled, example
from warden.streams import broker
from warden.streams.feedback_auth import ExampleKeys
from warden.streams.records import Feedback, ServedRow, TrainingExample, encode
from warden.streams.settings import WardenSettings
from warden.streams.topics import Topics

GENUINE = 320


def _genuine(keys: ExampleKeys, settings: WardenSettings) -> list[TrainingExample]:
    data = synthetic(GENUINE, seed=3)
    now = time.time()
    out = []
    for i, event_id in enumerate(data.event_ids):
        row = ServedRow(
            event_id=event_id,
            timestamp=float(data.timestamps[i]),
            model_version="m-served",
            sender=f"k1.sender{i % 7}",
            sender_domain="k1.domain",
            url_domains=[],
            content=[float(v) for v in data.content[i]],
            tokens=list(data.tokens[i]),
            aggregates=[float(v) for v in data.aggregates[i]],
        )
        label = Feedback(
            feedback_id=f"fb-{event_id}",
            event_id=event_id,
            label="abuse" if data.labels[i] else "legit",
            source="ops_review",
            reporter="operator-1",
            at=now,
        )
        out.append(example(Labelled(label, row, 1.0, label.at), settings.feedback, keys))
    return out


def test_forged_training_examples_never_reach_training(
    settings: WardenSettings, tmp_path: Path, registry_dir: Path
) -> None:
    shutil.copytree(registry_dir, tmp_path / "registry")  # retrain registers here
    live = settings.model_copy(
        update={
            "models": settings.models.model_copy(
                # A holdout of ~64 rows (its key is drawn per run): judged with 5 of each class.
                update={"registry_dir": tmp_path / "registry", "num_trees": 30, "gate_min_per_class": 5}
            ),
            "feedback": settings.feedback.model_copy(
                update={"training_example_key": SecretStr(secrets.token_hex(32))}
            ),
        }
    )
    keys = ExampleKeys.from_settings(live)
    genuine = _genuine(keys, live)
    unsigned = [
        e.model_copy(update={"event_id": f"forged-{i}", "signature": None, "label": 1 - e.label})
        for i, e in enumerate(genuine[:40])
    ]
    other_key = [
        ExampleKeys(secrets.token_bytes(32)).sign(e.model_copy(update={"event_id": f"other-{i}"}))
        for i, e in enumerate(genuine[:40])
    ]
    # The nastiest: a genuine example's signature on a copy whose label is flipped and whose source
    # (an appeal) would outrank the operator's label for the same event.
    replayed = [
        e.model_copy(update={"label": 1 - e.label, "source": "appeal", "labelled_at": e.labelled_at + 1})
        for e in genuine[:40]
    ]
    forged = [encode(e) for e in unsigned + other_key + replayed] + [b'{"event_id": "x"}', b"\xff"]
    topics = Topics.from_settings(live.kafka)
    broker.ensure_topics(live.kafka, topics.all())
    producer = broker.producer(live.kafka)
    for value in (
        [encode(e) for e in genuine[: GENUINE // 2]] + forged + [encode(e) for e in genuine[GENUINE // 2 :]]
    ):
        producer.send(topics.training_examples.name, key=b"k", value=value)
    producer.flush()
    producer.close()

    read = retrain.read_examples(live)
    assert [(e.event_id, e.label, e.source) for e in read.examples] == [
        (e.event_id, e.label, e.source) for e in genuine
    ], "every genuine example is read, in order, and nothing else"
    assert sum(read.refused.values()) == len(forged)
    assert read.refused["unauthenticated training example: no signature"] == len(unsigned)
    mismatch = "unauthenticated training example: signature does not match the training-example key"
    assert read.refused[mismatch] == len(other_key) + len(replayed)

    result = retrain.retrain(live, min_examples=200)
    assert result.outcome in ("promoted", "not_promoted")
    # The version id hashes every (event, label, weight, row) trained on: the genuine ones alone.
    assert result.version == retrain.version_id(retrain.dataset(genuine), live)
    assert result.version != retrain.version_id(retrain.dataset(genuine + replayed), live)
    summary = json.loads(retrain.summary(result))
    assert summary["examples_read"] == GENUINE
    assert summary["examples_refused"] == len(forged)
    assert summary["refused"][mismatch] == len(other_key) + len(replayed)
    assert summary["rows"] == GENUINE
