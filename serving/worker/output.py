"""Records out of an agent, straight to the app's producer, confirmed per micro-batch.

``faust.Topic.send`` wraps each record in a ``PendingMessage`` and a
``FutureMessage``, calls the sensors and attaches a callback before it
reaches the producer: ~75 us per record including the producer's own work,
in a profiled worker that sends three records per mail. The agents' outputs carry bytes they
have already encoded and need none of that, so :class:`Output` hands them to
the same producer directly.

Delivery: Faust flushes the producer before it commits offsets, but a flush
waits without raising, so a record the broker refused would be lost while
the offset of its input was committed. Each micro-batch therefore collects
the delivery futures of everything it sends in a :class:`Deliveries`, and an
agent lets the batch's input offsets be committed (acks its events) only
after :meth:`Deliveries.confirm` has seen the broker write every one of
them. A refused record is sent again a few times; if it is still refused
the worker stops with :class:`~streams.exceptions.OutputNotConfirmed`
without committing anything more, and its input is read again after a
restart or by another worker of the group.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from warden.streams.exceptions import OutputNotConfirmed

log = logging.getLogger(__name__)

#: Times a refused record is sent again before the worker gives up on the batch. The
#: producer already retries what the broker calls retriable (a leader moving, a timeout)
#: until its request timeout; what reaches this layer was refused outright or timed out,
#: so a few spaced attempts cover a broker that recovers, and more only delay the crash
#: that hands the batch to a healthy worker.
RESENDS = 3
#: Pause before the first re-send; doubled before each next one (0.5 + 1 + 2 s in all).
RESEND_BACKOFF_S = 0.5


#: Record headers, as the producer takes them.
Headers = list[tuple[str, bytes]]


class Output:
    """One topic an agent writes encoded records to."""

    def __init__(self, app: Any, channel: Any) -> None:
        self._app = app
        self.name: str = channel.get_topic_name()

    async def send(
        self, deliveries: Deliveries, *, key: bytes, value: bytes, headers: Headers | None = None
    ) -> None:
        """Queue one record on the app's producer and track its delivery in ``deliveries``.

        Returns once queued, like ``Topic.send``; a send the producer refuses at
        once (a record over its size limit, metadata that never came) is tracked
        as a failed delivery, re-sent and reported by :meth:`Deliveries.confirm`.
        """
        deliveries.track(self, key, value, headers, await self._deliver(key, value, headers))

    async def _deliver(self, key: bytes, value: bytes, headers: Headers | None) -> asyncio.Future[Any]:
        try:
            pending = await self._app.producer.send(
                self.name, key, value, partition=None, timestamp=None, headers=headers
            )
        except Exception as exc:  # Faust's ProducerSendError, or aiokafka's own for a bad record
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            return failed
        delivery: asyncio.Future[Any] = asyncio.ensure_future(pending)
        return delivery


#: One record handed to the producer: where, its key, value and headers, and the future of its delivery.
_Sent = tuple[Output, bytes, bytes, Headers | None, "asyncio.Future[Any]"]


class Deliveries:
    """A micro-batch's events, held, and what the batch has sent, until the broker confirms it.

    An agent makes one per micro-batch as soon as it has the batch's events,
    passes it to every :meth:`Output.send` of the batch, and ends the batch
    with :meth:`release`. The events are held from the start (one reference
    more than the stream's own ack): if anything fails before :meth:`release`
    returns, their offsets are never committed, whatever Faust's ``take_events``
    acks when the agent's iterator is closed.
    """

    def __init__(self, app: Any, events: Sequence[Any] = ()) -> None:
        self._app = app
        self._events = list(events)
        self._sent: list[_Sent] = []
        for event in self._events:
            event.message.incref()

    def __len__(self) -> int:
        return len(self._sent)

    def track(
        self, output: Output, key: bytes, value: bytes, headers: Headers | None, delivery: asyncio.Future[Any]
    ) -> None:
        """Keep a record and its delivery until :meth:`confirm` (called by :meth:`Output.send`)."""
        self._sent.append((output, key, value, headers, delivery))

    async def confirm(self) -> None:
        """Return once the broker has written every record sent for this batch.

        Called by an agent after the batch's last send and before it acks the
        batch's events (so before their offsets can be committed). One pass
        over the batch's deliveries (see :func:`_settle`: an ``asyncio.wait`` on
        every future cost ~3-4 us of CPU a record, measured); records the
        broker refused are sent again up to
        :data:`RESENDS` times with a doubling backoff. If some are still
        refused, the app is crashed with :class:`OutputNotConfirmed` (a
        worker's app ends the process there, without a commit: see
        :class:`serving.worker.app.WorkerApp`), and the error raised: the events stay
        unacked, their offsets are never committed, and the input is delivered
        again after a restart (or to another worker of the group).
        """
        pending, self._sent = self._sent, []
        delay = RESEND_BACKOFF_S
        for attempt in range(RESENDS + 1):
            failed = await _settle(pending)
            if not failed:
                return
            if attempt == RESENDS:
                break
            log.warning(
                "the broker refused %d of %d records of a batch (%s); sending them again in %.1f s",
                len(failed),
                len(pending),
                _describe(failed),
                delay,
            )
            await asyncio.sleep(delay)
            delay *= 2
            pending = [
                (out, key, value, headers, await out._deliver(key, value, headers))
                for out, key, value, headers, _ in failed
            ]
        error = OutputNotConfirmed(
            f"the broker refused {len(failed)} records after {RESENDS} re-sends ({_describe(failed)}); "
            "stopping the worker so that their input is read again"
        )
        log.error("%s", error)
        await self._app.crash(error)
        raise error

    async def release(self, stream: Any) -> None:
        """Confirm the batch's outputs (:meth:`confirm`), then ack its events on ``stream``.

        Called once at the end of each micro-batch; from here on its offsets
        may be committed. Raises :class:`OutputNotConfirmed` (events left held).
        """
        await self.confirm()
        for event in self._events:
            await stream.ack(event)


async def _settle(pending: list[_Sent]) -> list[_Sent]:
    """Wait until every delivery in ``pending`` is done; the ones that failed.

    The producer answers a whole request of records at once, so after the
    first wait most futures are done: the loop suspends about once per
    produce request still in flight, not once per record.
    """
    for sent in pending:
        if not sent[4].done():
            await asyncio.wait((sent[4],))  # unlike ``await``, never cancels the producer's future
    return [sent for sent in pending if _failure(sent[4]) is not None]


def _failure(delivery: asyncio.Future[Any]) -> BaseException | None:
    """Why a finished delivery failed, or None if the broker wrote the record."""
    if delivery.cancelled():
        return asyncio.CancelledError()
    return delivery.exception()


def _describe(failed: Iterable[_Sent]) -> str:
    """Failures counted by topic and error, in one line (no record content)."""
    counts = Counter((output.name, type(_failure(delivery)).__name__) for output, _, _, _, delivery in failed)
    return ", ".join(f"{n} to {topic}: {error}" for (topic, error), n in counts.most_common())
