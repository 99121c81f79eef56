"""Errors raised by Warden's serving layer."""


class ServingError(Exception):
    """Root of every error raised by ``serving``."""


class ModelRejected(ServingError):
    """A model cannot be served: wrong schema, unreadable file, bad outputs."""


class NoModel(ServingError):
    """The registry has no promoted model to serve."""
