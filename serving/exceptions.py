"""Errors raised by Warden's serving layer."""

from warden.streams.exceptions import WardenError


class ServingError(WardenError):
    """Root of every error raised by ``serving``."""


class ReviewError(ServingError):
    """The review queue cannot do what was asked: unknown group or event, unreadable ranker."""
