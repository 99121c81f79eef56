"""Errors raised by Warden's infrastructure: settings, the dev stack, the CLI."""


class InfraError(Exception):
    """Root of every error raised by ``infra``."""


class SettingsError(InfraError):
    """A setting is missing, malformed, or the settings file cannot be read."""


class DevStackError(InfraError):
    """The embedded broker or Redis could not be found, started or reached."""


class UsageError(InfraError):
    """The command line asks for something that cannot be done as asked."""


class PrivacyBudgetExhausted(InfraError):
    """A differentially private release would spend more than the remaining privacy budget."""


class PrivacyAuditFailed(InfraError):
    """The privacy audit found raw identifiers, content or keys without a TTL."""
