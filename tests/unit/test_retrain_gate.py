"""`warden retrain`'s gate: a holdout the candidate never sees, and a rule that can say no."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.unit.test_models import KEYS, synthetic
from warden.models import retrain
from warden.models.dataset import Dataset
from warden.models.registry import Candidate, Registry
from warden.streams.exceptions import ExitCode
from warden.streams.records import ServedRow, TrainingExample
from warden.streams.settings import WardenSettings

#: Tokens no other row holds: row i carries UNIQUE + i, so a token table shows which rows it learned from.
UNIQUE = 100_000
KEY = b"k" * 32


def probed(n: int = 800, seed: int = 5) -> Dataset:
    """Synthetic rows, each with one token of its own."""
    data = synthetic(n, seed=seed)
    tokens = tuple((*row, UNIQUE + i) for i, row in enumerate(data.tokens))
    return Dataset(
        content=data.content,
        aggregates=data.aggregates,
        tokens=tokens,
        labels=data.labels,
        timestamps=data.timestamps,
        event_ids=data.event_ids,
        folders=data.folders,
    )


def settings_for(tmp_path: Path, **models: Any) -> WardenSettings:
    return WardenSettings(models={"registry_dir": tmp_path / "registry", "num_trees": 40, **models})


def registry_at(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry", KEYS)


def champion(data: Dataset, settings: WardenSettings, registry: Registry, version: str) -> Candidate:
    """A champion trained as retrain trains (same cut), registered and promoted under ``version``."""
    candidate, _ = retrain.fit_candidate(data, settings, KEY, version)
    registry.register(candidate)
    registry.promote(version)
    return candidate


def test_holdout_rows_never_reach_the_candidates_fit_validation_or_token_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = probed()
    settings = settings_for(tmp_path)
    registry = registry_at(tmp_path)
    trained: dict[str, Any] = {}
    judged: dict[str, Dataset] = {}
    real_train, real_judge = retrain.train, retrain.judge

    def spy_train(rows: Dataset, *args: Any, **kwargs: Any) -> Candidate:
        trained["ids"], trained["validation"] = rows.event_ids, kwargs["validation"]
        return real_train(rows, *args, **kwargs)

    def spy_judge(candidate: Any, champion: Any, holdout: Dataset, fpr: float) -> Any:
        judged["holdout"] = holdout
        return real_judge(candidate, champion, holdout, fpr)

    monkeypatch.setattr(retrain, "train", spy_train)
    monkeypatch.setattr(retrain, "judge", spy_judge)
    result = retrain.decide(data, settings, registry, KEY, min_examples=200)

    assert result.outcome == "promoted"  # no champion yet
    held = set(judged["holdout"].event_ids)
    seen = set(trained["ids"])
    assert 100 < len(held) < 220, "about 20% of 800 rows held out"
    assert not held & seen, "a held-out row was given to training"
    assert held | seen == set(data.event_ids)
    assert result.figures["holdout_rows"] == len(held)
    validation = {i for i, v in zip(trained["ids"], trained["validation"], strict=True) if v}
    assert 80 < len(validation) < 200
    assert validation <= seen
    assert result.version is not None
    manifest = registry.manifest(result.version)
    assert manifest.metrics["training_rows"] + manifest.metrics["validation_rows"] == len(seen)
    # The token table: no held-out row's own token; most of the rows' own tokens it was given,
    # validation rows included (the shipped model is refitted on them), so the probe works.
    table = registry.load(result.version).tokens().weights
    index = {event_id: i for i, event_id in enumerate(data.event_ids)}
    assert not {UNIQUE + index[e] for e in held} & set(table)
    learned = sum(UNIQUE + index[e] in table for e in seen)
    assert learned > 0.9 * len(seen)


def test_the_holdout_is_drawn_by_a_keyed_hash_not_by_the_event_ids_alone() -> None:
    data = probed()
    one = retrain.cut(data, KEY, 0.2)
    again = retrain.cut(data, KEY, 0.2)
    other = retrain.cut(data, b"o" * 32, 0.2)
    assert one.holdout.event_ids == again.holdout.event_ids
    assert set(one.holdout.event_ids) != set(other.holdout.event_ids)
    # Each part keeps time order (the candidate's cross-fitting and the parity rows expect it).
    assert np.all(np.diff(one.pool.timestamps) >= 0)
    assert np.all(np.diff(one.holdout.timestamps) >= 0)


def test_a_tie_keeps_the_champion(tmp_path: Path) -> None:
    data = probed()
    settings = settings_for(tmp_path)
    registry = registry_at(tmp_path)
    # The champion is what this very retrain trains (same rows, same cut, same settings): a tie.
    champion(data, settings, registry, "r-champion-same")
    result = retrain.decide(data, settings, registry, KEY, min_examples=200)
    figures = result.figures
    assert (figures["candidate_auc"], figures["candidate_recall"]) == (
        figures["champion_auc"],
        figures["champion_recall"],
    )
    assert result.outcome == "not_promoted"
    assert retrain.EXIT_CODES[result.outcome] == ExitCode.NOT_PROMOTED
    assert registry.current() == "r-champion-same"
    assert result.version in registry.versions()  # registered, for the record


def test_a_worse_candidate_is_refused_and_a_better_one_promoted(tmp_path: Path) -> None:
    data = probed()
    strong, weak = settings_for(tmp_path), settings_for(tmp_path, num_trees=1, num_leaves=2)
    registry = registry_at(tmp_path)
    champion(data, strong, registry, "r-champion-strong")
    worse = retrain.decide(data, weak, registry, KEY, min_examples=200)
    assert worse.outcome == "not_promoted"
    assert worse.figures["candidate_auc"] < worse.figures["champion_auc"]
    assert registry.current() == "r-champion-strong"

    registry.promote(str(worse.version))  # now the weak one is the champion
    better = retrain.decide(data, strong, registry, KEY, min_examples=200)
    assert better.outcome == "promoted"
    assert better.figures["candidate_auc"] > better.figures["champion_auc"]
    assert registry.current() == better.version
    line = retrain.gate_line(better)
    assert f"{better.figures['candidate_auc']:.6f}" in line
    assert f"{better.figures['champion_auc']:.6f}" in line
    assert f"holdout of {better.figures['holdout_rows']:.0f} rows" in line


def scarce(n: int = 400, abuse: int = 40) -> Dataset:
    """Many rows, few of them abuse: enough to train on, too few abuse rows held out to judge."""
    data = probed(n)
    labels = np.zeros(n, dtype=np.int8)
    labels[np.linspace(0, n - 1, abuse).astype(int)] = 1
    return Dataset(
        content=data.content,
        aggregates=data.aggregates,
        tokens=data.tokens,
        labels=labels,
        timestamps=data.timestamps,
        event_ids=data.event_ids,
        folders=data.folders,
    )


def test_a_holdout_too_small_to_judge_trains_nothing_and_says_why(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    registry = registry_at(tmp_path)
    result = retrain.decide(scarce(), settings, registry, KEY, min_examples=200)
    assert result.outcome == "holdout_too_small"
    assert retrain.EXIT_CODES[result.outcome] == ExitCode.TOO_LITTLE_DATA
    assert result.reason is not None
    assert "holdout holds" in result.reason
    assert "at least 20" in result.reason
    assert registry.versions() == []
    summary = json.loads(retrain.summary(result))
    assert summary["exit_code"] == ExitCode.TOO_LITTLE_DATA
    assert summary["reason"] == result.reason


def examples_of(data: Dataset) -> list[TrainingExample]:
    return [
        TrainingExample(
            event_id=event_id,
            label=int(data.labels[i]),
            weight=1.0,
            source="ops_review",
            labelled_at=1.7e9,
            row=ServedRow(
                event_id=event_id,
                timestamp=float(data.timestamps[i]),
                model_version="m-served",
                sender="k1.s",
                sender_domain="k1.d",
                url_domains=[],
                content=[float(v) for v in data.content[i]],
                tokens=list(data.tokens[i]),
                aggregates=[float(v) for v in data.aggregates[i]],
            ),
        )
        for i, event_id in enumerate(data.event_ids)
    ]


def test_the_cli_says_why_in_one_line_and_exits_4(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from warden.infra.cli.main import main

    examples = examples_of(scarce())
    monkeypatch.setattr(retrain, "read_examples", lambda *a: retrain.Examples(examples, Counter()))
    for name, value in {
        "WARDEN_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "WARDEN_REDIS__URL": "redis://127.0.0.1:9/0",
        "WARDEN_MODELS__REGISTRY_DIR": str(tmp_path / "registry"),
        "WARDEN_DEV__STATE_DIR": str(tmp_path / "dev"),
    }.items():
        monkeypatch.setenv(name, value)
    code = main(["retrain", "--min-examples", "200"])
    out, err = capsys.readouterr()
    assert code == ExitCode.TOO_LITTLE_DATA
    problem = [line for line in err.splitlines() if line.startswith("warden: retrain:")]
    assert len(problem) == 1
    assert "the gate's holdout holds" in problem[0]
    assert json.loads(out.strip().splitlines()[-1])["outcome"] == "holdout_too_small"
