"""Errors raised by Warden's stream layer."""


class StreamsError(Exception):
    """Root of every error raised by ``streams``."""


class MalformedRecord(StreamsError):
    """An input record cannot be accepted; ``reason`` says why in one line.

    Raised by the decoders at ingest; the agent turns it into a dead letter.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CorpusError(StreamsError):
    """The corpus cannot be fetched or read."""


class BrokerError(StreamsError):
    """The broker cannot be reached or refused a request."""


class OutputNotConfirmed(StreamsError):
    """The broker did not write a micro-batch's outputs, even sent again.

    Raised by :meth:`streams.output.Deliveries.confirm` after it crashed the
    worker's app: the batch's input offsets stay uncommitted.
    """


class IncompleteDeadLetter(StreamsError):
    """A dead letter holds only an excerpt of its record: the whole one is on its source topic."""


class WebServerUnprotected(StreamsError):
    """The worker's web server would listen beyond loopback while ``POST /score`` needs no token."""
