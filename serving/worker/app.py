"""Builds the Faust application of one worker from settings and injected services.

Only wiring lives here: topics become Faust channels, agents are declared
from :mod:`serving.worker.agents`, and the web pages of :mod:`serving.worker.web` report
the worker's :class:`~serving.worker.metrics.WorkerStats` and score over HTTP.
Faust's own ``/router`` and ``/table`` views are off; an app whose web server
would listen beyond loopback without a ``POST /score`` token is refused.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import faust

from warden.serving.worker import monitor, retry, web
from warden.serving.worker.agents import feedback, ingest, score
from warden.serving.worker.ingest_pool import IsolatedIngest
from warden.serving.worker.services import Services
from warden.serving.worker.transport import SCHEME, WardenApp, broker_credentials
from warden.streams.exceptions import ExitCode, OutputNotConfirmed
from warden.streams.records import ActivityFeatures, ActivityKind
from warden.streams.settings import WardenSettings
from warden.streams.topics import Topic, Topics

log = logging.getLogger(__name__)

#: Faust's default producer batch is 16 KiB. aiokafka's ``send()`` waits, when a
#: partition's batch is full, until that batch has been written, so with ~2-6 KiB
#: records every few sends wait a whole produce round trip: measured on the
#: embedded broker, a raw aiokafka consume-and-produce loop of corpus mails made
#: ~1,550 records/s with 16 KiB batches and 8,500-22,800 with 1 MiB ones. (A bare
#: Faust loop on a busy machine is CPU-bound first; ``warden bench`` runs one with
#: each setting.) Batches still go out as soon as the previous request returns (no
#: linger), so latency does not grow.
PRODUCER_BATCH_BYTES = 1024 * 1024


class WorkerApp(WardenApp):
    """A worker's Faust app: it ends the process at once when a batch's outputs are lost.

    It owns the worker's :class:`IsolatedIngest` (shared by the ingest agents
    and ``POST /score``) and stops its child once the agents have stopped.
    """

    isolated_ingest: IsolatedIngest | None = None

    async def on_shutdown(self) -> None:
        """Called by mode after the app's children (the agents) have stopped."""
        await super().on_shutdown()
        if self.isolated_ingest is not None:
            self.isolated_ingest.close()

    async def crash(self, reason: BaseException) -> None:
        """Crash the app; for :class:`OutputNotConfirmed`, end the process without a commit.

        Called by :meth:`serving.worker.output.Deliveries.confirm` when the broker
        refused a batch's outputs. Faust's own crash stops the app gracefully,
        and on the way acks the records it had fetched but not processed (it
        skips them once its flow control is off) and commits them: seen in
        ``tests/integration/test_rejected_output.py``, where a partition none
        of whose records had been processed was committed to its end. So the
        process ends here, as under SIGKILL (which loses nothing: the group
        hands its partitions to a worker that reads from the last commit).
        """
        if isinstance(reason, OutputNotConfirmed):
            log.critical("stopping without a commit: %s", reason)
            for handler in logging.getLogger().handlers:
                handler.flush()
            os._exit(ExitCode.OUTPUT_NOT_CONFIRMED)
        await super().crash(reason)


def create_app(settings: WardenSettings, services: Services) -> faust.App:
    """A Faust app with the ingest and scoring agents of one worker."""
    kafka = settings.kafka
    if kafka.bootstrap_servers is None:
        raise ValueError("create_app needs a broker address in the settings")
    web.check_exposure(settings)
    datadir = settings.dev.state_dir / "worker-data" / settings.worker.app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = WorkerApp(
        settings.worker.app_id,
        broker=[f"{SCHEME}://{server}" for server in kafka.bootstrap_servers.split(",")],
        store="memory://",
        autodiscover=False,
        datadir=str(datadir),
        web_enabled=True,
        web_bind=settings.worker.web_host,
        web_host=settings.worker.web_host,
        web_port=settings.worker.web_port,
        # Faust's own views on the same port: /router tells the cluster's layout and /table
        # reads table keys, to anyone. Warden routes nothing across workers and keeps no tables.
        web_router_enabled=False,
        web_tables_enabled=False,
        broker_session_timeout=kafka.session_timeout_s,
        broker_rebalance_timeout=kafka.rebalance_timeout_s,
        broker_heartbeat_interval=kafka.heartbeat_interval_s,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        topic_partitions=kafka.partitions,
        topic_replication_factor=kafka.replication_factor,
        topic_allow_declare=False,
        producer_acks=-1 if kafka.acks == "all" else int(kafka.acks),
        producer_max_request_size=16 * 1024 * 1024,
        producer_compression_type=None if kafka.compression_type == "none" else kafka.compression_type,
        consumer_max_fetch_size=16 * 1024 * 1024,
        broker_credentials=broker_credentials(kafka),
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
    )
    app.fetch_max_wait_ms = kafka.fetch_max_wait_ms
    app.isolation_level = kafka.isolation_level
    app.enable_idempotence = kafka.enable_idempotence
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
    verdicts = channel(topics.verdicts)
    feature_log = channel(topics.feature_log)
    stats = services.stats

    # One scoring stage for every kind: the scoring agents on the features topics use it
    # and, in a one-hop worker (the default), so do the ingest agents, right after ingest.
    scoring = score.ScoringStage(
        app,
        verdicts,
        feature_log,
        dead_letters,
        settings,
        services.store,
        services.slot,
        services.served,
        stats,
        review=services.review,
    )
    in_ingest = None if settings.worker.split_stages else scoring
    # One isolated child for the large records of every kind (started on the first one), not one
    # spawned Python per input topic.
    isolated = app.isolated_ingest = IsolatedIngest(settings)
    ingest.register(
        app,
        mail_events,
        mail_features,
        dead_letters,
        settings,
        services.pseudonymiser,
        stats,
        pool=services.ingest_pool,
        scoring=in_ingest,
        isolated=isolated,
    )
    if settings.worker.split_stages:  # a one-hop worker reads no features topic: nothing to forge there
        score.register(app, mail_features, scoring, settings, stats)
    # Calendar and contacts: their own input topics, one features topic, the same workers.
    activity_features = channel(topics.activity_features)
    activity_inputs: tuple[tuple[ActivityKind, Topic], ...] = (
        ("calendar", topics.calendar_events),
        ("contacts", topics.contacts_events),
    )
    for kind, events_topic in activity_inputs:
        ingest.register(
            app,
            channel(events_topic),
            activity_features,
            dead_letters,
            settings,
            services.pseudonymiser,
            stats,
            kind=kind,
            scoring=in_ingest,
            isolated=isolated,
        )
    if settings.worker.split_stages:
        score.register(app, activity_features, scoring, settings, stats, record_type=ActivityFeatures)
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

    # asyncio.sleep, not app.sleep (here and in serving.worker.retry): in a running worker mode's
    # Service.sleep returned at once (seen: ~500 store retries a second with Redis refusing AUTH),
    # so both loops spun hot. Both loops end with the app (`while True` kept a stopping worker
    # from exiting on SIGTERM).

    async def _connect_store() -> None:
        # Degrade, don't die: a worker that starts while Redis is down waits for it.
        await retry.until_answered(
            services.store.start, stats, retry.CONNECT, running=lambda: not app.should_stop
        )

    async def _assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        assigned = args[0] if args else kwargs.get("assigned", ())
        stats.assigned_partitions = len(assigned)
        stats.started = True

    async def _follow_registry() -> None:
        # Hot swap: load a newly promoted (or shadowed) version beside the one serving.
        while not app.should_stop:
            await asyncio.sleep(settings.serving.reload_interval_s)
            await services.slot.refresh()

    app.task(_connect_store)
    app.task(_follow_registry)
    app.on_partitions_assigned.connect(_assigned)
    web.register(app, settings, services, isolated)
    monitor.register(app, settings, stats)
    return app
