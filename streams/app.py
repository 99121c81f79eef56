"""Builds the Faust application of one worker from settings and injected services.

Only wiring lives here: topics become Faust channels, agents are declared
from :mod:`streams.agents`, and the web pages ``/health`` and ``/metrics``
report the worker's :class:`~infra.metrics.WorkerStats`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import faust

from features.exceptions import StoreUnavailable
from features.pseudonym import Pseudonymiser
from features.served import FeedbackLedger, ServedRows
from features.store import RedisStore
from infra.metrics import WorkerStats
from infra.settings import WardenSettings
from serving.review import ReviewQueue
from serving.slot import ModelSlot
from streams import web
from streams.agents import feedback, ingest, score
from streams.topics import Topic, Topics
from streams.transport import SCHEME, WardenApp

log = logging.getLogger(__name__)


@dataclass
class Services:
    """Resources a worker needs, built by the entry point and injected."""

    store: RedisStore
    served: ServedRows
    ledger: FeedbackLedger
    slot: ModelSlot
    pseudonymiser: Pseudonymiser
    stats: WorkerStats
    #: The ops review queue fed by the scoring agent (None: not fed).
    review: ReviewQueue | None = None


def create_app(settings: WardenSettings, services: Services) -> faust.App:
    """A Faust app with the ingest and scoring agents of one worker."""
    kafka = settings.kafka
    if kafka.bootstrap_servers is None:
        raise ValueError("create_app needs a broker address in the settings")
    datadir = settings.dev.state_dir / "worker-data" / settings.worker.app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = WardenApp(
        settings.worker.app_id,
        broker=[f"{SCHEME}://{server}" for server in kafka.bootstrap_servers.split(",")],
        store="memory://",
        autodiscover=False,
        datadir=str(datadir),
        web_enabled=True,
        web_bind=settings.worker.web_host,
        web_host=settings.worker.web_host,
        web_port=settings.worker.web_port,
        broker_session_timeout=kafka.session_timeout_s,
        broker_rebalance_timeout=kafka.rebalance_timeout_s,
        broker_heartbeat_interval=kafka.heartbeat_interval_s,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        topic_partitions=kafka.partitions,
        topic_replication_factor=kafka.replication_factor,
        topic_allow_declare=False,
        producer_acks=-1,
        producer_max_request_size=16 * 1024 * 1024,
        consumer_max_fetch_size=16 * 1024 * 1024,
    )
    app.fetch_max_wait_ms = kafka.fetch_max_wait_ms
    topics = Topics.from_settings(kafka)

    def channel(topic: Topic) -> Any:
        return app.topic(
            topic.name,
            key_serializer="raw",
            value_serializer="raw",
            partitions=topic.partitions,
            replicas=topic.replication_factor,
        )

    mail_events = channel(topics.mail_events)
    mail_features = channel(topics.mail_features)
    dead_letters = channel(topics.dead_letters)
    stats = services.stats

    ingest.register(app, mail_events, mail_features, dead_letters, settings, services.pseudonymiser, stats)
    score.register(
        app,
        mail_features,
        channel(topics.verdicts),
        channel(topics.feature_log),
        dead_letters,
        settings,
        services.store,
        services.slot,
        services.served,
        stats,
        review=services.review,
    )
    feedback.register(
        app,
        channel(topics.feedback),
        channel(topics.training_examples),
        dead_letters,
        settings,
        services.store,
        services.store.keys,
        services.served,
        services.ledger,
        services.pseudonymiser,
        stats,
    )

    async def _connect_store() -> None:
        # Degrade, don't die: a worker that starts while Redis is down waits for it.
        while True:
            try:
                await services.store.start()
            except StoreUnavailable as exc:
                stats.store_degraded = True
                log.warning("feature store unavailable at start: %s", exc)
                await app.sleep(1.0)
                continue
            stats.store_degraded = False
            return

    async def _assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        assigned = args[0] if args else kwargs.get("assigned", ())
        stats.assigned_partitions = len(assigned)
        stats.started = True

    async def _follow_registry() -> None:
        # Hot swap: load a newly promoted (or shadowed) version beside the one serving.
        while True:
            await app.sleep(settings.serving.reload_interval_s)
            await services.slot.refresh()

    app.task(_connect_store)
    app.task(_follow_registry)
    app.on_partitions_assigned.connect(_assigned)
    web.register(app, settings, services)
    return app
