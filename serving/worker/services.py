"""The resources one worker needs (:class:`Services`), built from settings by the entry point and
injected into the Faust app (:func:`serving.worker.app.create_app`)."""

from __future__ import annotations

from dataclasses import dataclass

from warden.features.ingest.pseudonym import KeyRing, Pseudonymiser
from warden.features.store.keys import Keys
from warden.features.store.redis import RedisStore
from warden.features.store.redis_client import async_client
from warden.features.store.served import FeedbackLedger, ServedRows
from warden.models.registry import Registry
from warden.serving.review.queue import ReviewQueue, load_ranker
from warden.serving.slot import ModelSlot
from warden.serving.worker.ingest_pool import IngestPool
from warden.serving.worker.metrics import WorkerStats
from warden.streams.settings import WardenSettings


@dataclass
class Services:
    """Resources a worker needs, built by the entry point and injected."""

    store: RedisStore
    served: ServedRows
    ledger: FeedbackLedger
    slot: ModelSlot
    pseudonymiser: Pseudonymiser
    stats: WorkerStats
    #: Child processes for ingest (``WorkerSettings.ingest_processes``); None: ingest in the loop.
    ingest_pool: IngestPool | None = None
    #: The ops review queue fed by the scoring agent (None: not fed).
    review: ReviewQueue | None = None


def build_services(settings: WardenSettings) -> Services:
    """The worker's resources, from settings.

    Raises NoModel / ModelRejected for bad models, StoreNotConfigured when the settings name no Redis.
    """
    stats = WorkerStats()
    slot = ModelSlot.from_registry(Registry.from_settings(settings), stats)  # verify key only
    client = async_client(settings.redis)
    # An id's first digest is kept as long as its served row (FeedbackSettings.row_ttl_seconds) or
    # memo, whichever lives longer: while either is there, a reused id is told apart.
    store = RedisStore(
        client,
        Keys(settings.redis.key_prefix),
        settings.redis.ttl_seconds,
        settings.redis.memo_ttl_seconds,
        id_ttl_seconds=max(settings.redis.memo_ttl_seconds, settings.feedback.row_ttl_seconds),
    )
    pseudonymiser = KeyRing.from_settings(settings.privacy).current()  # ingest follows the ring's rotations
    prefix = settings.redis.key_prefix
    served = ServedRows(client, prefix, settings.feedback.row_ttl_seconds)
    ledger = FeedbackLedger(client, prefix, settings.feedback.row_ttl_seconds)
    pool = None
    if settings.worker.ingest_processes > 0:
        pool = IngestPool(settings, settings.worker.ingest_processes, pseudonymiser)
        pool.warm()
    review = (
        ReviewQueue(client, prefix, settings.review, load_ranker(settings.review))
        if settings.review.enabled
        else None
    )
    return Services(
        store=store,
        served=served,
        ledger=ledger,
        slot=slot,
        pseudonymiser=pseudonymiser,
        stats=stats,
        ingest_pool=pool,
        review=review,
    )
