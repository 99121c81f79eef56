"""Bad model versions against a running worker: each is refused and the champion keeps serving.

Four families: versions that are signed but wrong inside (:func:`plant`), versions their
signature does not cover (:func:`tamper`), signed pointers that are not version ids, and pointers
sending the worker back to an older, validly signed version without the key holder (a
hand-edited CURRENT, an older signed CURRENT put back, a CURRENT signed by another key).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.bad_models import BAD_KINDS, alias, plant, point_at, tamper, write_pointer
from tests.integration.outcomes import Outcomes, health, metrics, wait_until
from warden.infra.dev.worker_process import wait_healthy, worker_process
from warden.models.exceptions import ModelsError
from warden.models.registry import Registry
from warden.models.signing import SigningKey
from warden.streams import broker
from warden.streams.settings import WardenSettings
from warden.streams.sources import corpus
from warden.streams.sources.replay import replay
from warden.streams.topics import Topics

PER_ROUND = 40
#: (how, what): planted bad versions, tampered ones, and pointers leaving the registry.
ATTACKS = (
    [("plant", kind) for kind in BAD_KINDS]
    + [("tamper", what) for what in ("model.onnx", "booster.txt", "unsigned", "other_key")]
    + [("pointer", "../versions/x"), ("pointer", "/etc/passwd")]
    + [("rollback", "hand-edited"), ("rollback", "replayed"), ("rollback", "other-key")]
)


def test_every_bad_version_is_refused_and_the_champion_keeps_serving(
    settings: WardenSettings, base_env: dict[str, str], tmp_path: Path, registry_dir: Path
) -> None:
    root = tmp_path / "registry"
    shutil.copytree(registry_dir, root)  # the session registry stays untouched
    live = settings.model_copy(
        update={
            "models": settings.models.model_copy(update={"registry_dir": root}),
            "serving": settings.serving.model_copy(update={"reload_interval_s": 0.2}),
        }
    )
    registry = Registry.from_settings(live, signing=True)  # the test plants signed versions
    champion = registry.current()
    assert champion is not None
    # An older, validly signed version, and a signed CURRENT naming it that the worker never follows.
    older = alias(registry, champion, f"{champion}-older")
    replay_bytes = point_at(registry, older)
    point_at(registry, champion)
    topics = Topics.from_settings(live.kafka)
    broker.ensure_topics(live.kafka, topics.all())
    mails = corpus.load(live.corpus, corpus.SECOND_HALF)[: PER_ROUND * (len(ATTACKS) + 1)]
    producer = broker.producer(live.kafka)
    outcomes = Outcomes(live)
    with worker_process(live, base_env, tmp_path / "worker.log") as proc:
        wait_healthy(live, proc, timeout_s=90)
        for round_, (how, kind) in enumerate(ATTACKS, start=1):
            if how == "rollback":
                # Without the signing key: the pointer is all an attacker can change.
                if kind == "hand-edited":
                    write_pointer(registry, "CURRENT", f"{older}\n".encode())
                elif kind == "replayed":
                    write_pointer(registry, "CURRENT", replay_bytes)
                else:
                    point_at(registry, older, key=SigningKey(Ed25519PrivateKey.generate()))
            else:
                if how == "plant":
                    bad = plant(registry, champion, kind)  # type: ignore[arg-type]
                else:
                    bad = tamper(registry, champion, kind) if how == "tamper" else kind
                # Refused at promotion by the key holder: `warden models promote` and retrain go through this.
                with pytest.raises(ModelsError):
                    Registry.from_settings(live, signing=True).promote(bad)
                assert registry.current() == champion
                # A pointer signed behind the registry's checks: refused at load by the worker.
                point_at(registry, bad)
            wait_until(
                lambda round_=round_: metrics(live)["warden_model_refusals_total"] >= round_,
                timeout_s=30,
                what=f"refusing the {kind} model",
            )
            point_at(registry, champion)
            assert proc.poll() is None, "the worker must stay up"
            status, body = health(live)
            assert (status, body["status"], body["model_version"]) == (200, "ok", champion)
            # ... and it keeps scoring with the champion.
            batch = mails[(round_ - 1) * PER_ROUND : round_ * PER_ROUND]
            replay([m.event for m in batch], producer, topics.mail_events)
            outcomes.read_until(lambda o, n=round_ * PER_ROUND: len(o.verdicts) >= n, timeout_s=60)
            assert len(outcomes.verdicts) == round_ * PER_ROUND, f"verdicts after the {kind} model"
        # A good promotion afterwards still works: the champion itself is fine.
        Registry.from_settings(live, signing=True).promote(champion)
        replay([m.event for m in mails[-PER_ROUND:]], producer, topics.mail_events)
        outcomes.read_until(lambda o: len(o.verdicts) >= len(mails), timeout_s=60)
        final = metrics(live)
        log = (tmp_path / "worker.log").read_text(errors="replace")
    producer.close()
    outcomes.close()

    assert "older signed pointer put back" in log
    assert "is signed by another key" in log
    assert "is not a signed pointer" in log
    assert set(outcomes.verdicts) == {m.event.event_id for m in mails}
    assert not outcomes.dead_letters
    served = {v.model_version for copies in outcomes.verdicts.values() for v in copies}
    assert served == {champion}
    assert final["warden_model_refusals_total"] == len(ATTACKS)
    assert final["warden_model_swaps_total"] == 0
