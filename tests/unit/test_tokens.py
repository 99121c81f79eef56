import numpy as np

from warden.features.tokens import EVIDENCE_NAMES, TokenTable, cross_fitted_evidence


def corpus(n: int = 400, seed: int = 0) -> tuple[list[list[int]], np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    sets = [
        sorted(
            {int(t) for t in rng.integers(0, 200, 10)} | ({7000 + int(y)} if rng.random() < 0.7 else set())
        )
        for y in labels
    ]
    return sets, labels


def test_learned_weights_separate_the_classes() -> None:
    sets, labels = corpus()
    table = TokenTable.learn(sets, labels)
    assert table.weights[7001] > 0 > table.weights[7000]
    spam, ham = table.evidence([7001, 3]), table.evidence([7000, 3])
    assert len(spam) == len(EVIDENCE_NAMES)
    assert spam[0] > ham[0]
    assert table.evidence([]) == [table.bias, 0.0]
    assert table.evidence([999_999])[1] == 0.0


def test_table_round_trips_through_json() -> None:
    sets, labels = corpus()
    table = TokenTable.learn(sets, labels)
    again = TokenTable.from_json(table.to_json())
    assert again == table
    assert again.sha256() == table.sha256()


def test_cross_fitted_evidence_never_uses_a_rows_own_label() -> None:
    sets, labels = corpus(200)
    # A token seen in one document only: in-sample it would look decisive.
    sets[0] = [*sets[0], 123_456]
    out = cross_fitted_evidence(sets, labels, folds=5)
    assert out.shape == (200, len(EVIDENCE_NAMES))
    flipped = labels.copy()
    flipped[0] = 1 - flipped[0]
    assert np.allclose(cross_fitted_evidence(sets, flipped, folds=5)[0], out[0])
