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

The parts live in modules by group, all re-exported here: ``connections`` (Kafka,
Redis, the embedded dev stack), ``pipeline`` (privacy, ingest, worker, health,
feedback, serving, review), ``training`` (models, corpus, peers), ``keys`` (secret
keys and what a real one must be), ``sources`` (the secret files) and ``root``
(:class:`WardenSettings` and :func:`load_settings`).
"""

from warden.streams.settings.connections import DevSettings, KafkaSettings, RedisSettings
from warden.streams.settings.keys import (
    DEV_HMAC_KEY,
    KEY_HINT,
    MIN_KEY_BYTES,
    SECRETS_DIR,
    development_feedback_key,
    development_training_example_key,
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
from warden.streams.settings.root import WardenSettings, load_settings
from warden.streams.settings.training import CorpusSettings, ModelSettings, PeerSettings

__all__ = [
    "DEV_HMAC_KEY",
    "KEY_HINT",
    "MIN_KEY_BYTES",
    "SECRETS_DIR",
    "CorpusSettings",
    "DevSettings",
    "FeedbackSettings",
    "HealthSettings",
    "IngestSettings",
    "KafkaSettings",
    "ModelSettings",
    "PeerSettings",
    "PrivacySettings",
    "RedisSettings",
    "ReviewSettings",
    "ServingSettings",
    "WardenSettings",
    "WorkerSettings",
    "development_feedback_key",
    "development_training_example_key",
    "key_problem",
    "load_settings",
]
