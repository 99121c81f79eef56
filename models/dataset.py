"""Training data built through exactly the code that serves.

Mails go through the ingest transform (:func:`features.ingest.extraction.to_features`)
and then, in time order, through a feature store that applies the same
aggregate definitions the stream processors apply in Redis (offline
recomputation). A window's rows only ever see the mails before them: the
training window is built alone, and a test window continues from the store
the training window left (:func:`build_parts`), as a worker would. Text
evidence is not fixed here: it depends on the token table, which is learned
on a training window only; :meth:`Dataset.rows` assembles full rows once the
evidence is known.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from warden.features.definitions import AGGREGATES, CONTENT, EVIDENCE_NAMES, SCHEMAS
from warden.features.ingest.extraction import to_features
from warden.features.ingest.pseudonym import Pseudonymiser
from warden.features.testing import InMemoryStore
from warden.features.tokens import TokenTable
from warden.streams.records import SourcePosition
from warden.streams.sources.corpus import CorpusMail, order


@dataclass(frozen=True)
class Dataset:
    """Feature parts in time order, with labels, times, event ids and folders."""

    content: np.ndarray  # float64 [n, len(CONTENT)]
    aggregates: np.ndarray  # float64 [n, len(AGGREGATES)]
    tokens: tuple[tuple[int, ...], ...]
    labels: np.ndarray  # int8 [n]
    timestamps: np.ndarray  # float64 [n]
    event_ids: tuple[str, ...]
    folders: tuple[str, ...]
    #: Per-row training weights (None: every row weighs 1).
    weights: np.ndarray | None = None
    #: The event kind whose schema the rows follow.
    kind: str = "mail"

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray | slice) -> Dataset:
        """The rows at ``index`` (a slice or an index/boolean array), order kept."""
        positions = np.arange(len(self))[index]
        return Dataset(
            content=self.content[positions],
            aggregates=self.aggregates[positions],
            tokens=tuple(self.tokens[i] for i in positions),
            labels=self.labels[positions],
            timestamps=self.timestamps[positions],
            event_ids=tuple(self.event_ids[i] for i in positions),
            folders=tuple(self.folders[i] for i in positions),
            weights=None if self.weights is None else self.weights[positions],
            kind=self.kind,
        )

    def then(self, later: Dataset) -> Dataset:
        """These rows followed by ``later``'s (same kind; a missing weight counts 1)."""
        if later.kind != self.kind:
            raise ValueError(f"cannot join {self.kind} rows with {later.kind} rows")
        weights = None
        if self.weights is not None or later.weights is not None:
            weights = np.concatenate([_weights(self), _weights(later)])
        return Dataset(
            content=np.concatenate([self.content, later.content]),
            aggregates=np.concatenate([self.aggregates, later.aggregates]),
            tokens=self.tokens + later.tokens,
            labels=np.concatenate([self.labels, later.labels]),
            timestamps=np.concatenate([self.timestamps, later.timestamps]),
            event_ids=self.event_ids + later.event_ids,
            folders=self.folders + later.folders,
            weights=weights,
            kind=self.kind,
        )

    def evidence(self, table: TokenTable) -> np.ndarray:
        """Text evidence of every row under ``table``."""
        return np.asarray([table.evidence(tokens) for tokens in self.tokens], dtype=np.float64).reshape(
            len(self), len(EVIDENCE_NAMES)
        )

    def rows(self, evidence: np.ndarray) -> np.ndarray:
        """Full model rows (float32, schema order) given each row's evidence."""
        full = np.concatenate([self.content, evidence, self.aggregates], axis=1)
        width = len(SCHEMAS[self.kind].feature_names)
        if full.shape[1] != width:
            raise ValueError(f"rows have {full.shape[1]} columns, the {self.kind} schema wants {width}")
        return full.astype(np.float32)


def _weights(data: Dataset) -> np.ndarray:
    return np.ones(len(data)) if data.weights is None else data.weights


def build(mails: Sequence[CorpusMail], pseudonymiser: Pseudonymiser) -> Dataset:
    """Feature parts for ``mails``, computed in order of their trusted time as a replay would.

    Aggregates advance on each mail's trusted time (its receiving server's
    clock, :attr:`~streams.sources.corpus.CorpusMail.event_time`), as they do in a
    worker; the sender's Date header is never the clock.
    """
    (data,) = build_parts([mails], pseudonymiser)
    return data


def build_parts(parts: Sequence[Sequence[CorpusMail]], pseudonymiser: Pseudonymiser) -> list[Dataset]:
    """One dataset per part, the parts replayed one after another through one feature store.

    Each part is taken in :func:`streams.sources.corpus.order`. A part's aggregates see
    its own earlier mails and every earlier part, never a later part: the
    first part's rows are exactly :func:`build` of that part alone, and a test
    part continues from the store its training part left. Labels never reach
    the store.
    """
    store = InMemoryStore()
    offset = 0
    built = []
    for part in parts:
        ordered = sorted(part, key=order)
        content: list[list[float]] = []
        aggregates: list[list[float]] = []
        tokens: list[tuple[int, ...]] = []
        for mail in ordered:
            # Offsets run on across parts: the store applies each position once.
            source = SourcePosition(topic="corpus", partition=0, offset=offset)
            offset += 1
            features = to_features(
                mail.event, pseudonymiser, source, produced_at_ms=0, event_time=mail.event_time
            )
            (values,) = store.apply_and_read_now([features])
            content.append(features.content)
            aggregates.append(values)
            tokens.append(tuple(features.tokens))
        n = len(ordered)
        built.append(
            Dataset(
                content=np.asarray(content, dtype=np.float64).reshape(n, len(CONTENT)),
                aggregates=np.asarray(aggregates, dtype=np.float64).reshape(n, len(AGGREGATES)),
                tokens=tuple(tokens),
                labels=np.asarray([m.is_spam for m in ordered], dtype=np.int8),
                timestamps=np.asarray([m.event_time for m in ordered], dtype=np.float64),
                event_ids=tuple(m.event.event_id for m in ordered),
                folders=tuple(m.folder for m in ordered),
            )
        )
    return built
