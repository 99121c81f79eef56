"""The parts of the running pipeline: privacy keys, ingest limits, the worker, health, feedback,
serving and review.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from warden.streams.settings.base import _Part
from warden.streams.settings.keys import (
    DEV_HMAC_KEY,
    KEY_HINT,
)


class PrivacySettings(_Part):
    """Pseudonymisation keys, key rotation and the differential-privacy budget."""

    #: The pseudonymisation secret: a key per domain (address, domain, IP, URL host, account, token)
    #: is derived from it.
    hmac_key: SecretStr = SecretStr(DEV_HMAC_KEY)
    #: Carried with every pseudonym so that keys can be rotated.
    key_id: str = Field(default="k1", pattern=r"^[A-Za-z0-9_-]{1,16}$")
    #: A JSON key file of key generations (one key per domain each); when set, ``hmac_key`` is unused.
    key_file: Path | None = None
    #: After a new key generation starts, the previous one is served this long while the new one's
    #: aggregates fill (the rotation grace period); at least the longest aggregate window (24 h).
    rotation_grace_seconds: int = Field(default=2 * 24 * 3600, ge=0)
    #: The differential-privacy budget of published reports (total epsilon) and its ledger file.
    report_budget_epsilon: float = Field(default=10.0, gt=0)
    #: The persisted ledger of epsilon spent by ``warden report`` releases.
    report_ledger: Path = Path(".warden/privacy/ledger.json")


class IngestSettings(_Part):
    """Limits on input records; anything beyond them is a dead letter."""

    #: Largest input record (bytes); larger ones are dead letters.
    max_payload_bytes: int = Field(default=1_000_000, ge=1_000)
    #: Most recipients (or invitees, card recipients) of one record.
    max_recipients: int = Field(default=1_000, ge=1)
    #: Most URLs of one record.
    max_urls: int = Field(default=2_000, ge=1)
    #: Most headers of one mail.
    max_headers: int = Field(default=200, ge=1)
    #: Longest subject, text or HTML body, title, description or note, in characters.
    max_text_chars: int = Field(default=500_000, ge=1_000)
    #: Events stamped before this (epoch seconds; default 1990-01-01) are refused.
    min_event_time: float = 631_152_000.0
    #: Events stamped this far in the future of the worker's clock are refused.
    max_clock_skew_s: float = Field(default=7 * 24 * 3600, ge=0)
    #: Deepest JSON nesting accepted (a mail event needs 3: object, headers, header pair).
    max_nesting_depth: int = Field(default=16, ge=3, le=1_000)
    #: Longest single URL, and longest header name or value, in characters.
    max_url_chars: int = Field(default=4_096, ge=256)
    #: Longest header name or value, in characters.
    max_header_chars: int = Field(default=16_384, ge=256)
    #: Distinct ``xn--`` (punycode) labels decoded per record, over all its addresses and URLs; a
    #: record with more is refused. Each costs up to ~0.3 ms of pure-Python IDNA decoding.
    max_punycode_labels: int = Field(default=32, ge=1, le=10_000)
    #: Records larger than this (bytes) are ingested in an isolated child process under
    #: ``isolation_deadline_s`` instead of in the worker's event loop (0: every record). At the
    #: worst hostile throughput ``warden bench --only hostile`` measures, a record this size holds
    #: the loop for a few milliseconds at most.
    isolate_above_bytes: int = Field(default=65_536, ge=0)
    #: Seconds an isolated ingest may take; past it the child process is killed (and replaced)
    #: and the record becomes a dead letter naming the deadline.
    isolation_deadline_s: float = Field(default=2.0, gt=0, le=600)
    #: Seconds of ingest in the event loop after which the agent yields to it (between records),
    #: so /health, heartbeats and the other agents run while a micro-batch is ingested.
    yield_after_s: float = Field(default=0.005, ge=0, le=1)
    #: Aggregates advance on the broker's record timestamp (see streams.provenance), never more
    #: than this far ahead of the worker's clock (a broker or producer clock running fast).
    max_event_time_ahead_s: float = Field(default=60.0, ge=0, le=3600)
    #: Take an earlier event time from the producer's ``warden-event-time-ms`` record header
    #: (streams.topics.EVENT_TIME_HEADER): for replays of recorded traffic (the demo, tests,
    #: ``warden replay``). Off in production: whoever can produce to the input topics would
    #: set the clock the aggregates advance on.
    trust_producer_event_time: bool = False


class WorkerSettings(_Part):
    """The stream processor: consumer group, micro-batching and its web port."""

    #: The consumer group (and Faust app) id: workers with the same id share the partitions.
    app_id: str = Field(default="warden", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    #: Most events in one micro-batch.
    batch_size: int = Field(default=256, ge=1, le=10_000)
    #: Longest a micro-batch waits to fill before it is processed.
    batch_within_s: float = Field(default=0.05, gt=0)
    #: Address the worker's web server listens on (beyond loopback, ``POST /score`` needs a token).
    web_host: str = "127.0.0.1"
    #: Port of ``/health``, ``/metrics``, ``/dashboard`` and ``POST /score`` (0: any free port).
    web_port: int = Field(default=6066, ge=0, le=65535)
    #: The worker's log level.
    log_level: Literal["debug", "info", "warn", "error", "crit"] = "warn"
    #: Child processes that ingest (parse, pseudonymise, content features) beside the event
    #: loop; 0 ingests in the loop. See serving.worker.ingest_pool.
    ingest_processes: int = Field(default=0, ge=0, le=64)
    #: Two hops instead of one: ingest sends features to ``mail.features`` /
    #: ``activity.features`` and scoring agents read them there (ingest and scoring
    #: can then run in different workers). Default: each ingest micro-batch is scored
    #: where it was ingested (one broker round trip and one batch window fewer); the
    #: scoring agents still read the features topics either way.
    split_stages: bool = False


class HealthSettings(_Part):
    """When ``GET /health`` says degraded or failing (see serving.worker.health)."""

    #: Records behind the high watermarks (all assigned partitions) above which a worker is degraded.
    lag_degraded: int = Field(default=10_000, ge=1)
    #: Seconds without any partition assigned after which a worker is failing.
    unassigned_failing_s: float = Field(default=60.0, gt=0)
    #: How often consumer lag, agent state and the health state are sampled.
    sample_interval_s: float = Field(default=1.0, gt=0)


class FeedbackSettings(_Part):
    """How labels are weighed and bounded (poisoning resistance)."""

    #: Served rows are kept this long for labels to join (a later label is "unknown").
    row_ttl_seconds: int = Field(default=3 * 24 * 3600, ge=60)
    #: Training and reputation weight of an operator's review.
    weight_ops_review: float = Field(default=1.0, ge=0)
    #: Weight of a label from an appeal.
    weight_appeal: float = Field(default=1.0, ge=0)
    #: Weight of an automatic label (another system's).
    weight_auto: float = Field(default=0.5, ge=0)
    #: Weight of a user's report (capped per reporter and per reported sender a day).
    weight_user_report: float = Field(default=0.2, ge=0)
    #: Reports a single reporter may make per day before its reports weigh nothing.
    reporter_daily_cap: int = Field(default=20, ge=1)
    #: User reports counted per reported sender per day; beyond, they weigh nothing.
    target_daily_cap: int = Field(default=10, ge=1)
    #: Whether user reports also train the next model (they always feed reputation).
    #: Off by default: a few capped reports about a sender whose mail nobody labels
    #: can still teach a model that sender's own words (see the poisoning test).
    train_on_user_reports: bool = False
    # The HMAC-SHA256 key of each label source (streams.feedback_auth): a sender signs every label
    # with the key of the source it speaks for, and workers verify it. Give each sender only its
    # own source's key (the app backend that sends user reports never holds key_ops_review).
    # Unset: in development a public development key per source; in production that source's
    # labels are refused (dead letters) and `warden feedback` cannot send as it.
    #: HMAC key of ``user_report`` labels (held by the app backend that sends them).
    key_user_report: SecretStr | None = None
    #: HMAC key of ``ops_review`` labels (held by operators' tools: ``warden feedback``, ``warden review``).
    key_ops_review: SecretStr | None = None
    #: HMAC key of ``appeal`` labels.
    key_appeal: SecretStr | None = None
    #: HMAC key of ``auto`` labels.
    key_auto: SecretStr | None = None
    # The HMAC-SHA256 key of training examples (streams.feedback_auth.ExampleKeys): the feedback
    # agent signs every example it emits, `warden retrain` (and every reader that learns from
    # examples) verifies it, so nothing produced to training-examples by anyone else is learned.
    # Held by workers and retrain only. Unset: the public development key in development; in
    # production workers and retrain refuse to start.
    #: HMAC key that signs and verifies training examples (workers and retrain only).
    training_example_key: SecretStr | None = None
    #: The key before the last rotation: examples it signed are still accepted (never used to sign).
    #: Drop it once the topic's retention has passed since the rotation.
    training_example_key_previous: SecretStr | None = None

    def weight(self, source: str) -> float:
        return float(getattr(self, f"weight_{source}"))

    def key(self, source: str) -> SecretStr | None:
        """The configured key of ``source`` (None when unset)."""
        return self.keys()[source]

    def keys(self) -> dict[str, SecretStr | None]:
        """Every source's configured key (None when unset), by source."""
        fields = type(self).model_fields
        return {name.removeprefix("key_"): getattr(self, name) for name in fields if name.startswith("key_")}


class ServingSettings(_Part):
    """How a worker serves models: hot swap, shadow, reasons."""

    #: How often a worker checks the registry's current (and shadow) pointer.
    reload_interval_s: float = Field(default=2.0, gt=0)
    #: Reasons attached to each junk or block verdict.
    reasons: int = Field(default=3, ge=0, le=20)
    #: The bearer token ``POST /score`` requires (``Authorization: Bearer <token>``). Required
    #: whenever the worker's web server listens beyond loopback (the worker refuses to start
    #: without one); on loopback it is checked when set.
    score_token: SecretStr | None = None
    #: ``POST /score`` applies the posted event's aggregates as the stream would, instead of a
    #: read-only preview (the default). Needs ``score_token``: it is a write to the store.
    score_applies: bool = False
    #: How long ``POST /score`` waits for the store before answering 503.
    score_timeout_s: float = Field(default=2.0, gt=0, le=60)

    @model_validator(mode="after")
    def _writes_need_a_token(self) -> ServingSettings:
        if self.score_token is not None and len(self.score_token.get_secret_value()) < 16:
            raise ValueError(f"score_token must be at least 16 characters ({KEY_HINT})")
        if self.score_applies and self.score_token is None:
            raise ValueError("score_applies needs score_token: applying is a write to the feature store")
        return self


class ReviewSettings(_Part):
    """The ops review queue (serving.review.queue): its bounds, retention and ranking model."""

    #: Whether workers feed the review queue from the scoring path.
    enabled: bool = True
    #: Most campaign groups kept in the queue (the least valuable are dropped first).
    max_groups: int = Field(default=10_000, ge=1)
    #: Most member events remembered per group (the oldest are dropped first).
    max_members: int = Field(default=1_000, ge=1)
    #: Every queue key expires this long after its last write.
    ttl_seconds: int = Field(default=2 * 24 * 3600, ge=1)
    #: A fitted ranking model (JSON, serving.review.ranking); unset: the documented prior weights.
    ranker_file: Path | None = None
