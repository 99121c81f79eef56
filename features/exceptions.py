"""Errors raised by Warden's feature layer."""

from warden.streams.exceptions import WardenError


class FeaturesError(WardenError):
    """Root of every error raised by ``features``."""


class StoreUnavailable(FeaturesError):
    """The feature store cannot be reached; the caller backs off and retries the batch."""


class PseudonymKeyError(FeaturesError):
    """A pseudonymisation key or key file is missing, malformed or inconsistent (never shows a secret)."""


class StoreNotConfigured(FeaturesError):
    """The settings name no Redis (neither a URL nor cluster nodes), so no client can be built."""


class IncompatibleLibrary(FeaturesError, ImportError):
    """An installed library lacks what Warden relies on (raised at import, says which and why)."""


class PrivacyBudgetExhausted(FeaturesError):
    """A differentially private release would spend more than the remaining privacy budget."""


class PrivacyAuditFailed(FeaturesError):
    """The privacy audit found raw identifiers, content or keys without a TTL."""
