"""A Faust Kafka transport whose consumers take their fetch wait from the settings.

Faust hard-codes ``fetch_max_wait_ms=1500`` for worker consumers. Apache Kafka
answers a fetch as soon as data arrives, so that is harmless there; the
embedded Tansu broker holds a fetch for the whole wait when the consumer is
caught up, which adds up to 1.5 s of latency per topic hop (measured: p50
1.2 s end to end at 20 events/s). :class:`WardenApp` carries
``KafkaSettings.fetch_max_wait_ms`` and this transport applies it.

The transport is registered under the URL scheme ``wardenkafka://``.
"""

from __future__ import annotations

from typing import Any, cast

import faust
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka

from warden.streams.security import kafka_ssl_context
from warden.streams.settings import KafkaSettings

SCHEME = "wardenkafka"


class WardenApp(faust.App):
    """A Faust app that knows Warden's consumer fetch wait, isolation level and idempotence."""

    fetch_max_wait_ms: int = 1500
    #: Faust reads "read_committed" only inside its exactly-once mode; Warden sets it itself.
    isolation_level: str = "read_uncommitted"
    #: Faust enables idempotence only inside its exactly-once mode; Warden sets it itself.
    enable_idempotence: bool = False


def broker_credentials(settings: KafkaSettings) -> SASLCredentials | SSLCredentials | None:
    """Faust's ``broker_credentials`` for the security settings (None for PLAINTEXT).

    Faust hands them to every aiokafka consumer and producer of the worker.
    """
    context = kafka_ssl_context(settings)
    if settings.security_protocol.startswith("SASL"):
        password = settings.sasl_password
        return SASLCredentials(
            username=settings.sasl_username,
            password=None if password is None else password.get_secret_value(),
            ssl_context=context,
            mechanism=settings.sasl_mechanism,
        )
    if context is not None:
        return SSLCredentials(context)
    return None


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read by aiokafka when the consumer starts and builds its fetcher.
        consumer._fetch_max_wait_ms = cast(WardenApp, self.app).fetch_max_wait_ms
        consumer._isolation_level = cast(WardenApp, self.app).isolation_level
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Producer(faust_aiokafka.Producer):
    def _settings_extra(self) -> Any:
        extra = dict(super()._settings_extra())
        if cast(WardenApp, self.app).enable_idempotence:
            extra.update(acks="all", enable_idempotence=True)
        return extra


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
    Producer = Producer


drivers.TRANSPORTS.aliases.setdefault(SCHEME, f"{__name__}:Transport")
