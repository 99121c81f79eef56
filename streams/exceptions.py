"""Warden's error root, the errors every floor shares, the exit statuses, and the stream layer's errors.

Each floor's ``exceptions.py`` derives its root from :class:`WardenError`, so
the command line maps every Warden error to an :class:`ExitCode` in one place
(:func:`warden.infra.cli.main.main`).
"""

from enum import IntEnum


class ExitCode(IntEnum):
    """Every exit status of Warden's processes, in one table (schedulers and supervisors read them)."""

    #: Done; for ``warden retrain``: a candidate promoted, or nothing new to train on.
    OK = 0
    #: A Warden error at run time (an unreachable service, a refused model, a privacy finding).
    FAILURE = 1
    #: A usage or settings error: the command as given cannot run.
    USAGE = 2
    #: ``warden retrain``: the candidate did not pass the gates (the champion stays).
    NOT_PROMOTED = 3
    #: ``warden retrain``: too little labelled data, or a gate holdout too small to judge.
    TOO_LITTLE_DATA = 4
    #: ``warden retrain``: another run holds the registry lock.
    LOCKED = 5
    #: A worker stopped because the broker refused its outputs (EX_TEMPFAIL: the input is read
    #: again after a restart, or by another worker of the group).
    OUTPUT_NOT_CONFIRMED = 75


class WardenError(Exception):
    """Root of every error Warden raises on purpose."""


class SettingsError(WardenError):
    """A setting is missing, malformed, or the settings file cannot be read."""


class UsageError(WardenError):
    """The caller asks for something that cannot be done as asked (the command line exits 2)."""


class StreamsError(WardenError):
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

    Raised by :meth:`serving.worker.output.Deliveries.confirm` after it crashed the
    worker's app: the batch's input offsets stay uncommitted.
    """


class IncompleteDeadLetter(StreamsError):
    """A dead letter holds only an excerpt of its record: the whole one is on its source topic."""


class WebServerUnprotected(StreamsError):
    """The worker's web server would listen beyond loopback while ``POST /score`` needs no token."""
