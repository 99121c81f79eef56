"""No evaluation-window data reaches training."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import SecretStr

from features.pseudonym import Pseudonymiser
from features.text import words
from features.tokens import BUCKETS, MAX_TOKENS_PER_MESSAGE
from infra.settings import WardenSettings
from models.dataset import build
from models.evaluate import static
from models.train import train
from streams.corpus import CorpusMail
from streams.records import MailEvent

SPAM_WORDS = ["cash", "winner", "offer", "viagra", "free", "deal"]
HAM_WORDS = ["meeting", "patch", "kernel", "lunch", "review", "thanks"]
EVALUATION_ONLY = "zqxevaluationonly"


def mail(i: int, folder: str, spam: bool, rng: np.random.Generator) -> CorpusMail:
    vocabulary = SPAM_WORDS if spam else HAM_WORDS
    text = " ".join(rng.choice(vocabulary, 12)) + " " + " ".join(rng.choice(SPAM_WORDS + HAM_WORDS, 4))
    if folder.endswith("-2"):
        text += f" {EVALUATION_ONLY}"
    event = MailEvent(
        event_id=f"m{i}",
        timestamp=1_000_000_000.0 + i * 60 + (10**6 if folder.endswith("-2") else 0),
        sender=f"user{rng.integers(0, 30)}@{'spam' if spam else 'ham'}.example",
        recipients=["me@example.org"],
        subject="hello",
        text=text,
    )
    return CorpusMail(folder=folder, event=event, is_spam=spam)


@pytest.fixture(scope="module")
def mails() -> list[CorpusMail]:
    rng = np.random.default_rng(4)
    older = [mail(i, "spam-1" if i % 3 == 0 else "easy-ham-1", i % 3 == 0, rng) for i in range(360)]
    newer = [mail(1000 + i, "spam-2" if i % 2 else "easy-ham-2", bool(i % 2), rng) for i in range(120)]
    return older + newer


def test_static_protocol_trains_on_the_older_window_only(mails: list[CorpusMail]) -> None:
    settings = WardenSettings(models={"num_trees": 30})
    pseudonymiser = Pseudonymiser(SecretStr("k"), "k1")
    data = build(mails, pseudonymiser)
    by_id = {m.event.event_id: m for m in mails}
    done = static(settings, data, by_id, pseudonymiser, resamples=0)
    assert done.candidate is not None
    manifest = done.candidate.manifest

    older = [m for m in mails if m.folder.endswith("-1")]
    assert manifest.data.rows == len(older)
    assert manifest.data.last_event_time == max(m.event.timestamp for m in older)

    # The token table knows nothing that occurs only in the evaluation window.
    (leak,) = pseudonymiser.token_buckets(words(EVALUATION_ONLY), BUCKETS, MAX_TOKENS_PER_MESSAGE)
    assert leak not in done.candidate.tokens.weights
    # Learned on the older part of the training window (the newest 20% validates).
    assert done.candidate.tokens.documents == int(len(older) * 0.8)

    # Model, thresholds and table are exactly what the older window alone produces.
    alone = train(build(older, pseudonymiser), settings.models, source="older only")
    assert alone.booster.model_to_string() == done.candidate.booster.model_to_string()
    assert alone.manifest.thresholds == manifest.thresholds
    assert alone.tokens == done.candidate.tokens

    figures = done.figures["warden"]
    assert 0.0 <= figures["roc_auc"] <= 1.0
    assert {"tfidf_logreg", "naive_bayes"} <= set(done.figures)
