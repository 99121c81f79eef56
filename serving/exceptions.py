"""Errors raised by Warden's serving layer."""


class ServingError(Exception):
    """Root of every error raised by ``serving``."""


class ModelRejected(ServingError):
    """A model cannot be served: wrong schema, unreadable file, bad outputs."""


class NoModel(ServingError):
    """The registry has no promoted model to serve."""


class ReviewError(ServingError):
    """The review queue cannot do what was asked: unknown group or event, unreadable ranker."""
