"""No test-half data reaches training, and the evaluated model is the one `warden train` registers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.corpus_fixture import generated, write_corpus
from warden.features.ingest.text import words
from warden.features.tokens import BUCKETS, MAX_TOKENS_PER_MESSAGE
from warden.models.dataset import Dataset, build, build_parts
from warden.models.evaluate import forward, static
from warden.models.registry import BOOSTER_FILE, Registry
from warden.models.train import corpus_pseudonymiser, train_from_corpus
from warden.streams.records import MailEvent
from warden.streams.settings import WardenSettings
from warden.streams.sources import corpus
from warden.streams.sources.corpus import CorpusMail

SPAM_WORDS = ["cash", "winner", "offer", "viagra", "free", "deal"]
HAM_WORDS = ["meeting", "patch", "kernel", "lunch", "review", "thanks"]
EVALUATION_ONLY = "zqxevaluationonly"
SETTINGS = WardenSettings(models={"num_trees": 30})
N = 240  # mails per half


def mail(i: int, spam: bool, rng: np.random.Generator, *, later: bool, senders: int = 30) -> CorpusMail:
    vocabulary = SPAM_WORDS if spam else HAM_WORDS
    text = " ".join(rng.choice(vocabulary, 12)) + " " + " ".join(rng.choice(SPAM_WORDS + HAM_WORDS, 4))
    if later:
        text += f" {EVALUATION_ONLY}"
    event = MailEvent(
        event_id=f"m{i:05d}",
        # The sender's claimed time runs backwards: only the receipt time orders mail.
        timestamp=2_000_000_000.0 - i * 60,
        sender=f"user{rng.integers(0, senders)}@{'spam' if spam else 'ham'}.example",
        recipients=["me@example.org"],
        subject="hello",
        text=text,
    )
    received = 1_000_000_000.0 + i * 60
    return CorpusMail(
        folder="spam-1" if spam else "easy-ham-2", event=event, is_spam=spam, received_at=received
    )


def halves(seed: int = 4, later_senders: int = 30) -> tuple[list[CorpusMail], list[CorpusMail]]:
    rng = np.random.default_rng(seed)
    first = [mail(i, i % 3 == 0, rng, later=False) for i in range(N)]
    second = [mail(N + i, bool(i % 2), rng, later=True, senders=later_senders) for i in range(N)]
    return first, second


def test_static_protocol_trains_on_the_first_half_only() -> None:
    first, second = halves()
    done = static(SETTINGS, forward(SETTINGS, second + first), resamples=0)  # any order in
    assert done.candidate is not None
    manifest = done.candidate.manifest
    assert manifest.data.rows == len(first)
    assert manifest.data.last_event_time == max(m.event_time for m in first)
    assert manifest.data.source == "spam-assassin:first-half"

    # The token table knows nothing that occurs only in the test half.
    (leak,) = corpus_pseudonymiser(SETTINGS).token_buckets(
        words(EVALUATION_ONLY), BUCKETS, MAX_TOKENS_PER_MESSAGE
    )
    assert leak not in done.candidate.tokens.weights
    # The newest 20% by time of the training half validates; the shipped model is refitted on the
    # whole training half, never on a test row.
    assert done.candidate.manifest.metrics["validation_rows"] == len(first) - int(len(first) * 0.8)
    assert done.candidate.tokens.documents == len(first)

    figures = done.figures
    assert figures["split"] == {
        "training_spam": float(sum(m.is_spam for m in first)),
        "training_ham": float(sum(not m.is_spam for m in first)),
        "test_spam": float(sum(m.is_spam for m in second)),
        "test_ham": float(sum(not m.is_spam for m in second)),
    }
    assert 0.0 <= figures["warden"]["roc_auc"] <= 1.0
    assert {"tfidf_logreg", "naive_bayes"} <= set(figures)


def test_training_rows_aggregates_are_the_same_whatever_the_test_half_holds() -> None:
    first, second = halves()
    # Another test half of the same size: every mail from the training half's senders, received
    # in the same stretch; it would move the training rows' counts if they could see it.
    _, crowded = halves(seed=9, later_senders=3)
    with_test = forward(SETTINGS, first + second)
    with_other_test = forward(SETTINGS, first + crowded)
    alone = build(first, corpus_pseudonymiser(SETTINGS))

    for split in (with_test, with_other_test):
        np.testing.assert_array_equal(split.training.aggregates, alone.aggregates)
        np.testing.assert_array_equal(split.training.content, alone.content)
        assert split.training.tokens == alone.tokens
    # The two test halves do differ where it counts: the crowded one's rows have other aggregates.
    assert not np.array_equal(with_test.test.aggregates, with_other_test.test.aggregates, equal_nan=True)

    one = static(SETTINGS, with_test, resamples=0).candidate
    other = static(SETTINGS, with_other_test, resamples=0).candidate
    assert one is not None
    assert other is not None
    assert one.booster.model_to_string() == other.booster.model_to_string()
    assert one.model_bytes == other.model_bytes
    assert one.tokens == other.tokens
    assert one.manifest.thresholds == other.manifest.thresholds


def test_test_rows_see_every_earlier_mail_and_no_labels() -> None:
    first, second = halves()
    pseudonymiser = corpus_pseudonymiser(SETTINGS)
    split = forward(SETTINGS, first + second)
    # As one worker replaying everything in order of receipt would have seen them.
    whole = build(first + second, pseudonymiser)
    np.testing.assert_array_equal(split.test.aggregates, whole.aggregates[len(first) :])
    # The training half's traffic is in them: the test half alone gives other aggregates.
    (cold,) = build_parts([second], pseudonymiser)
    assert not np.array_equal(split.test.aggregates, cold.aggregates, equal_nan=True)
    # Labels never reach the store: flipping every label changes no aggregate.
    flipped = [replace(m, is_spam=not m.is_spam) for m in first + second]
    blind = forward(SETTINGS, flipped)
    np.testing.assert_array_equal(blind.training.aggregates, split.training.aggregates)
    np.testing.assert_array_equal(blind.test.aggregates, split.test.aggregates)
    assert (blind.test.labels == 1 - split.test.labels).all()


def test_the_evaluated_model_is_byte_for_byte_what_warden_train_registers(tmp_path: Path) -> None:
    settings = WardenSettings(
        corpus=write_corpus(tmp_path / "cache", generated(2 * 130, seed=3)),
        dev={"state_dir": tmp_path / "dev"},
        models={"registry_dir": tmp_path / "registry", "num_trees": 30},
    )
    manifest = train_from_corpus(settings, promote=False)
    stored = Registry.from_settings(settings).load(manifest.version)

    done = static(settings, forward(settings, corpus.load(settings.corpus)), resamples=0)
    evaluated = done.candidate
    assert evaluated is not None
    assert stored.model_bytes == evaluated.model_bytes
    assert stored.files[BOOSTER_FILE] == evaluated.booster.model_to_string().encode("utf-8")
    assert stored.tokens() == evaluated.tokens
    for field in ("onnx_sha256", "token_table_sha256", "thresholds", "data", "metrics", "schema_hash"):
        assert getattr(stored.manifest, field) == getattr(evaluated.manifest, field), field
    assert stored.manifest.data.rows == 130


def test_development_folds_train_before_each_window_and_never_see_the_test_half(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from warden.models import development

    first, _ = halves()
    data = build(first, corpus_pseudonymiser(SETTINGS))
    fitted: list[float] = []
    real_train = development.train

    def spy(rows: Dataset, *args: Any, **kwargs: Any) -> Any:
        fitted.append(float(rows.timestamps.max()))
        return real_train(rows, *args, **kwargs)

    monkeypatch.setattr(development, "train", spy)
    figures = development.folds(SETTINGS, data)

    windows = [name for name in figures if name != "mean"]
    assert windows == ["0.5-0.7", "0.6-0.8", "0.7-0.9", "0.8-1.0"]
    for name, newest_fitted, cut in zip(windows, fitted, development.CUTS, strict=True):
        start, stop = int(N * cut), int(N * (cut + development.WIDTH))
        # Every fitted row is older than the fold's window; the window's class counts are its own.
        assert newest_fitted < data.timestamps[start]
        assert figures[name]["spam"] == data.labels[start:stop].sum()
        assert figures[name]["spam"] + figures[name]["ham"] == stop - start
    assert figures["mean"]["roc_auc"] == np.mean([figures[w]["roc_auc"] for w in windows])


def test_the_ceiling_scores_every_test_row_by_a_model_that_never_saw_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from warden.models import development

    first, second = halves()
    _, test = build_parts([first, second], corpus_pseudonymiser(SETTINGS))
    fitted: list[set[str]] = []
    scored: list[set[str]] = []
    real_train, real_scores = development.train, development.warden_scores

    def spy_train(rows: Dataset, *args: Any, **kwargs: Any) -> Any:
        fitted.append(set(rows.event_ids))
        return real_train(rows, *args, **kwargs)

    def spy_scores(candidate: Any, rows: Dataset) -> Any:
        scored.append(set(rows.event_ids))
        return real_scores(candidate, rows)

    monkeypatch.setattr(development, "train", spy_train)
    monkeypatch.setattr(development, "warden_scores", spy_scores)
    (figures,) = development.ceiling(SETTINGS, test).values()

    assert len(fitted) == len(scored) == 5
    for seen, judged in zip(fitted, scored, strict=True):
        assert not seen & judged
        assert seen | judged == set(test.event_ids)  # only test-half rows, nothing of the first half
    assert set().union(*scored) == set(test.event_ids)
    assert figures["spam"] == test.labels.sum()
    assert 0.5 < figures["roc_auc"] <= 1.0
