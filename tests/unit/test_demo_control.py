"""The demo's feedback claim has a control: wave 2 is new to the model, and the control arm differs
from the treated one by the campaign's labels alone."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.unit.test_retrain_gate import KEY, examples_of, probed, settings_for
from warden.infra.demo import feedback as demo_feedback
from warden.models import retrain
from warden.models.dataset import Dataset
from warden.models.registry import Candidate
from warden.streams.records import MailEvent
from warden.streams.sources.campaign import campaign

RECIPIENTS = [f"user{i}@example.org" for i in range(20)]


def _shape(text: str) -> str:
    """A text with its numbers and links blanked: the template it was written from."""
    return re.sub(r"\d+", "#", re.sub(r"https://\S+", "<link>", text))


def _sentences(mail: MailEvent) -> set[str]:
    assert mail.text is not None
    return {line for line in _shape(mail.text).splitlines() if line}


def test_wave_two_shares_no_template_sender_or_link_domain_with_wave_one() -> None:
    one = campaign(200, 1.04e9, RECIPIENTS, wave=1)
    two = campaign(200, 1.05e9, RECIPIENTS, wave=2)
    subjects = ({_shape(m.subject) for m in one}, {_shape(m.subject) for m in two})
    assert not subjects[0] & subjects[1]
    assert len(subjects[1]) >= 4, "wave 2 is drawn from several subject templates"
    assert not {m.sender for m in one} & {m.sender for m in two}
    assert not {m.sender.split("@")[1] for m in one} & {m.sender.split("@")[1] for m in two}
    links = [{urlsplit(u).hostname for m in wave for u in m.urls} for wave in (one, two)]
    assert not links[0] & links[1]
    assert len(links[1]) > 50, "many link domains, not one"
    # No sentence of a wave-1 body (numbers and links aside) appears in a wave-2 body.
    assert not set().union(*map(_sentences, one)) & set().union(*map(_sentences, two))
    assert len({m.event_id for m in one} | {m.event_id for m in two}) == 400


def _treated_and_campaign() -> tuple[Dataset, set[str]]:
    """Labelled rows whose newest 100 are the campaign's (as in the demo: it starts after the corpus)."""
    data = probed(900, seed=11)
    return data, set(data.event_ids[-100:])


def test_the_labelled_campaign_rows_are_fitted_on_not_only_validated() -> None:
    data, labelled = _treated_and_campaign()
    placed = demo_feedback.where_labelled(data, KEY, 0.2, labelled)
    assert sum(placed.values()) == len(labelled)
    assert placed["fit"] >= len(labelled) // 2, placed
    parts = retrain.cut(data, KEY, 0.2)
    fitted = {e for e, v in zip(parts.pool.event_ids, parts.validation, strict=True) if not v}
    assert len(labelled & fitted) == placed["fit"]


def test_the_control_is_trained_on_the_same_examples_minus_the_campaign_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, labelled = _treated_and_campaign()
    examples = examples_of(data)
    settings = settings_for(tmp_path)
    calls: list[tuple[tuple[str, ...], tuple[bool, ...]]] = []
    real_train = retrain.train

    def spy(rows: Dataset, *args: Any, **kwargs: Any) -> Candidate:
        calls.append((rows.event_ids, tuple(bool(v) for v in kwargs["validation"])))
        return real_train(rows, *args, **kwargs)

    monkeypatch.setattr(retrain, "train", spy)
    control_examples = demo_feedback.without(examples, labelled)
    assert [e.event_id for e in control_examples] == [
        e.event_id for e in examples if e.event_id not in labelled
    ]
    demo_feedback._control(settings, control_examples, KEY)
    retrain.fit_candidate(retrain.dataset(examples), settings, KEY, "r-treated")
    (control_ids, control_valid), (treated_ids, treated_valid) = calls
    treated = dict(zip(treated_ids, treated_valid, strict=True))
    control = dict(zip(control_ids, control_valid, strict=True))
    # The same rows in the same parts, but for the campaign's labelled rows.
    assert {e: v for e, v in treated.items() if e not in labelled} == control
    assert labelled & set(treated)
    assert not labelled & set(control)
