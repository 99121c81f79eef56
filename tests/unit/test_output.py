"""Delivery confirmation per micro-batch (serving.worker.output), with a producer double that refuses
records."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from warden.serving.worker import output
from warden.serving.worker.output import Deliveries, Output
from warden.streams.exceptions import OutputNotConfirmed


class Refused(Exception):
    """What the producer double's broker answers for a refused record."""


class ProducerSendError(Exception):
    """What Faust's producer raises when it cannot even queue a record."""


@dataclass
class Producer:
    """Delivers each record when the test says so; refuses it the first ``refusals[value]`` times."""

    refusals: Counter[bytes] = field(default_factory=Counter)
    #: Values whose send raises at once (as Faust does for a record it cannot queue), as often.
    raises: Counter[bytes] = field(default_factory=Counter)
    sends: Counter[bytes] = field(default_factory=Counter)
    pending: list[tuple[bytes, asyncio.Future[str]]] = field(default_factory=list)

    async def send(
        self, topic: str, key: bytes, value: bytes, *, partition: Any, timestamp: Any, headers: Any
    ) -> asyncio.Future[str]:
        self.sends[value] += 1
        if self.raises[value] > 0:
            self.raises[value] -= 1
            raise ProducerSendError("metadata for the topic never came")
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.pending.append((value, future))
        return future

    def answer(self) -> None:
        """The broker answers every request in flight: written, or refused."""
        pending, self.pending = self.pending, []
        for value, future in pending:
            if self.refusals[value] > 0:
                self.refusals[value] -= 1
                future.set_exception(Refused("INVALID_RECORD"))
            else:
                future.set_result("written")


@dataclass
class App:
    producer: Producer
    crashes: list[BaseException] = field(default_factory=list)

    async def crash(self, reason: BaseException) -> None:
        self.crashes.append(reason)


@dataclass
class Message:
    refcount: int = 1  # the stream's own reference

    def incref(self) -> None:
        self.refcount += 1


@dataclass
class Event:
    message: Message = field(default_factory=Message)


@dataclass
class Stream:
    acked: list[Event] = field(default_factory=list)

    async def ack(self, event: Event) -> None:
        event.message.refcount -= 1
        self.acked.append(event)


class Channel:
    def __init__(self, name: str) -> None:
        self._name = name

    def get_topic_name(self) -> str:
        return self._name


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output, "RESEND_BACKOFF_S", 0.0)


async def answering(producer: Producer, until: asyncio.Future[Any]) -> None:
    """Play the broker: answer whatever is in flight, over and over, until ``until`` is done."""
    while not until.done():
        await asyncio.sleep(0)
        producer.answer()


async def run_batch(app: App, values: list[bytes], events: list[Event], stream: Stream) -> None:
    verdicts = Output(app, Channel("verdicts"))
    sent = Deliveries(app, events)
    for value in values:
        await verdicts.send(sent, key=b"k", value=value)
    release = asyncio.ensure_future(sent.release(stream))
    await asyncio.gather(release, answering(app.producer, release))


async def test_events_are_held_until_every_output_is_written() -> None:
    app, stream = App(Producer()), Stream()
    events = [Event(), Event()]
    verdicts = Output(app, Channel("verdicts"))
    sent = Deliveries(app, events)
    assert [e.message.refcount for e in events] == [2, 2]  # held: the stream's own ack is not the last
    for value in (b"a", b"b", b"c"):
        await verdicts.send(sent, key=b"k", value=value)
    release = asyncio.ensure_future(sent.release(stream))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not release.done()
    assert stream.acked == []  # nothing acked while the broker has not answered
    app.producer.answer()
    await release
    assert stream.acked == events
    assert app.crashes == []


async def test_a_refused_record_is_sent_again_and_the_batch_confirmed() -> None:
    app, stream = App(Producer(refusals=Counter({b"b": 2}))), Stream()
    events = [Event()]
    await run_batch(app, [b"a", b"b", b"c"], events, stream)
    assert app.producer.sends == Counter({b"a": 1, b"b": 3, b"c": 1})  # only the refused one again
    assert stream.acked == events
    assert app.crashes == []


async def test_a_send_that_raises_is_a_failed_delivery_sent_again() -> None:
    app, stream = App(Producer(raises=Counter({b"b": 1}))), Stream()
    events = [Event()]
    await run_batch(app, [b"a", b"b"], events, stream)
    assert app.producer.sends == Counter({b"a": 1, b"b": 2})
    assert stream.acked == events


async def test_a_record_refused_every_time_crashes_the_app_and_leaves_the_events_held() -> None:
    app, stream = App(Producer(refusals=Counter({b"b": 1000}))), Stream()
    events = [Event(), Event()]
    with pytest.raises(OutputNotConfirmed, match="refused 1 records after 3 re-sends"):
        await run_batch(app, [b"a", b"b", b"c"], events, stream)
    assert app.producer.sends[b"b"] == 1 + output.RESENDS
    assert app.producer.sends[b"a"] == 1
    assert len(app.crashes) == 1
    assert isinstance(app.crashes[0], OutputNotConfirmed)
    assert stream.acked == []
    assert [e.message.refcount for e in events] == [2, 2]  # never acked: their offsets stay uncommitted


async def test_each_batch_confirms_its_own_records() -> None:
    producer = Producer(refusals=Counter({b"second": 1000}))
    app, stream = App(producer), Stream()
    verdicts = Output(app, Channel("verdicts"))
    first_events, second_events = [Event()], [Event()]
    first, second = Deliveries(app, first_events), Deliveries(app, second_events)
    await verdicts.send(first, key=b"k", value=b"first")
    await verdicts.send(second, key=b"k", value=b"second")
    assert (len(first), len(second)) == (1, 1)
    releasing = asyncio.ensure_future(first.release(stream))
    await asyncio.gather(releasing, answering(producer, releasing))
    assert stream.acked == first_events  # the other batch's refused record does not hold this one
    releasing = asyncio.ensure_future(second.release(stream))
    with pytest.raises(OutputNotConfirmed):
        await asyncio.gather(releasing, answering(producer, releasing))
    assert stream.acked == first_events


async def test_a_batch_that_sent_nothing_is_released_at_once() -> None:
    app, stream = App(Producer()), Stream()
    events = [Event()]
    await Deliveries(app, events).release(stream)
    assert stream.acked == events
