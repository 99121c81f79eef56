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


class WebServerUnprotected(StreamsError):
    """The worker's web server would listen beyond loopback while ``POST /score`` needs no token."""
