"""The one topic reader (streams.reader.drain) over a broker double: ends, malformed records, deadlines.

The same reader against the real broker: tests/integration/test_topic_reader.py.
"""

from __future__ import annotations

from warden.streams.broker import Message
from warden.streams.exceptions import MalformedRecord
from warden.streams.reader import drain


def digits(raw: bytes) -> int:
    """A decoder: the value must be ASCII digits."""
    if not raw.isdigit():
        raise MalformedRecord(f"not a number: {raw[:20]!r}")
    return int(raw)


class Broker:
    """Partitions of one topic ``t``, served a few records per poll.

    ``listed`` is the end offset the broker lists before reading (by default
    what it holds); less than it holds is what the embedded Tansu lists.
    ``arrive`` records are appended only after the first poll (they arrive
    while the read is under way).
    """

    def __init__(
        self,
        partitions: list[list[bytes]],
        listed: list[int] | None = None,
        per_poll: int = 2,
        arrive: dict[int, list[bytes]] | None = None,
    ) -> None:
        self.held = [list(values) for values in partitions]
        self.listed = listed if listed is not None else [len(values) for values in partitions]
        self.position = [0] * len(partitions)
        self.highwater: list[int | None] = [None] * len(partitions)
        self.per_poll = per_poll
        self.arrive = arrive or {}
        self.polls = 0

    def extent(self) -> dict[tuple[str, int], tuple[int, int]]:
        return {("t", p): (0, end) for p, end in enumerate(self.listed)}

    def progress(self) -> dict[tuple[str, int], tuple[int, int | None]]:
        return {("t", p): (self.position[p], self.highwater[p]) for p in range(len(self.held))}

    def poll(self, timeout_s: float = 0.5) -> list[Message]:
        self.polls += 1
        out = []
        for p, values in enumerate(self.held):
            start = self.position[p]
            for offset in range(start, min(start + self.per_poll, len(values))):
                out.append(Message("t", p, offset, 0, None, values[offset]))
            self.position[p] = min(start + self.per_poll, len(values))
            self.highwater[p] = len(values)
        for p, values in self.arrive.items():
            self.held[p].extend(values)
        self.arrive = {}
        return out


def test_malformed_records_come_back_with_position_and_reason_not_dropped() -> None:
    broker = Broker([[b"1", b"junk", b"2"], [b"\xff\xfe", b"3", b"", b"4"]])
    read = drain(broker, digits)
    assert sorted(read.records) == [1, 2, 3, 4]
    assert read.complete
    found = sorted((m.position.partition, m.position.offset, m.reason) for m in read.malformed)
    assert found == [
        (0, 1, "not a number: b'junk'"),
        (1, 0, "not a number: b'\\xff\\xfe'"),
        (1, 2, "not a number: b''"),
    ]
    assert read.reasons()["not a number: b''"] == 1
    assert read.describe_malformed().count(" x not a number") == 3


def test_an_empty_topic_is_read_in_one_poll() -> None:
    broker = Broker([[], []])
    read = drain(broker, digits)
    assert (read.records, read.malformed, read.unfinished) == ([], [], [])
    assert broker.polls == 1  # the end of an empty partition is known once a fetch reports it


def test_a_broker_that_lists_less_than_it_holds_is_read_to_what_it_holds() -> None:
    # Tansu lists the last batch's base offset: 1 of 6 records here.
    broker = Broker([[b"%d" % i for i in range(6)]], listed=[1])
    read = drain(broker, digits)
    assert read.records == [0, 1, 2, 3, 4, 5]


def test_records_present_at_start_are_all_read_later_ones_may_be() -> None:
    broker = Broker([[b"1", b"2", b"3"]], per_poll=1, arrive={0: [b"4", b"x"]})
    read = drain(broker, digits)
    # The end is fixed at the first fetch that reaches the listed end: after the arrivals.
    assert read.records == [1, 2, 3, 4]
    assert [m.position.offset for m in read.malformed] == [4]


def test_a_partition_that_never_reaches_its_end_stops_at_the_deadline() -> None:
    # Listed at 5 but only 2 ever arrive (a stuck partition): the read ends at the deadline.
    broker = Broker([[b"1", b"2"], [b"7"]], listed=[5, 1])
    read = drain(broker, digits, idle_s=60.0, deadline_s=0.05)
    assert sorted(read.records) == [1, 2, 7]
    assert read.unfinished == [("t", 0)]
    assert not read.complete


def test_a_partition_idle_for_idle_s_stops_the_read() -> None:
    broker = Broker([[b"1"]], listed=[3])
    read = drain(broker, digits, idle_s=0.05)
    assert read.records == [1]
    assert read.unfinished == [("t", 0)]


def test_the_description_of_malformed_records_is_bounded_however_many_reasons() -> None:
    broker = Broker([[b"bad%d" % i for i in range(1000)] + [b"bad0"] * 3], per_poll=500)
    read = drain(broker, digits)
    assert len(read.malformed) == 1003
    line = read.describe_malformed()
    assert line.startswith("4 x not a number: b'bad0'; 1 x ")
    assert line.endswith("; and 995 other reasons")
    assert line.count(" x ") == 5
