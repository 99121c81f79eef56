"""The one settings object, :class:`WardenSettings`, and :func:`load_settings`, which builds it
at an entry point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from warden.streams.exceptions import SettingsError
from warden.streams.settings.connections import DevSettings, KafkaSettings, RedisSettings
from warden.streams.settings.keys import (
    DEV_HMAC_KEY,
    KEY_HINT,
    SECRETS_DIR,
    key_problem,
)
from warden.streams.settings.pipeline import (
    FeedbackSettings,
    HealthSettings,
    IngestSettings,
    PrivacySettings,
    ReviewSettings,
    ServingSettings,
    WorkerSettings,
)
from warden.streams.settings.sources import _sources
from warden.streams.settings.training import CorpusSettings, ModelSettings, PeerSettings


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

    ``secrets_dir`` holds one file per secret setting (see :mod:`warden.streams.settings`).
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
