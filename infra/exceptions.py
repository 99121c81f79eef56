"""Errors raised by Warden's infrastructure: the dev stack and the tools around it."""

from warden.streams.exceptions import WardenError


class InfraError(WardenError):
    """Root of every error raised by ``infra``."""


class DevStackError(InfraError):
    """The embedded broker or Redis could not be found, started or reached."""
