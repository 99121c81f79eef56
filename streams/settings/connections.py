"""Where the broker and Redis are (or the embedded development stack that stands in for them)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from warden.streams.settings.base import _Part


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


class DevSettings(_Part):
    """The embedded development stack."""

    #: Where the embedded stack keeps its state (addresses, logs, the development signing keys).
    state_dir: Path = Path(".warden/dev")
    #: Address the embedded broker and Redis listen on (loopback).
    host: str = "127.0.0.1"
    #: Seconds the embedded broker and Redis may take to start.
    start_timeout_s: float = Field(default=30.0, gt=0)
