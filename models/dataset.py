"""Training rows built through exactly the code that serves.

Mails go through the ingest transform (:func:`features.extraction.to_features`)
and then, in time order, through a feature store that applies the same
aggregate definitions the stream processors apply in Redis. The result is
the same ordered schema the scorer is fed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from features.definitions import FEATURE_NAMES, row
from features.extraction import to_features
from features.pseudonym import Pseudonymiser
from features.testing import InMemoryStore
from streams.corpus import CorpusMail
from streams.records import SourcePosition


@dataclass(frozen=True)
class Dataset:
    """Rows in time order with labels, times and event ids."""

    rows: np.ndarray  # float32 [n, len(FEATURE_NAMES)]
    labels: np.ndarray  # int8 [n]
    timestamps: np.ndarray  # float64 [n]
    event_ids: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray | slice) -> Dataset:
        ids = np.asarray(self.event_ids, dtype=object)[index]
        return Dataset(
            self.rows[index], self.labels[index], self.timestamps[index], tuple(str(i) for i in ids)
        )


def build(mails: Sequence[CorpusMail], pseudonymiser: Pseudonymiser) -> Dataset:
    """Feature rows for ``mails``, computed in time order as a replay would."""
    ordered = sorted(mails, key=lambda m: (m.event.timestamp, m.event.event_id))
    store = InMemoryStore()
    rows: list[list[float]] = []
    for offset, mail in enumerate(ordered):
        source = SourcePosition(topic="corpus", partition=0, offset=offset)
        features = to_features(mail.event, pseudonymiser, source, produced_at_ms=0)
        (aggregates,) = store.apply_and_read_now([features])
        rows.append(row(features.content, aggregates))
    matrix = np.asarray(rows, dtype=np.float32).reshape(len(rows), len(FEATURE_NAMES))
    return Dataset(
        rows=matrix,
        labels=np.asarray([m.is_spam for m in ordered], dtype=np.int8),
        timestamps=np.asarray([m.event.timestamp for m in ordered], dtype=np.float64),
        event_ids=tuple(m.event.event_id for m in ordered),
    )
