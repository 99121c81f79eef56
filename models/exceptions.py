"""Errors raised by Warden's model layer."""

from warden.streams.exceptions import WardenError


class ModelsError(WardenError):
    """Root of every error raised by ``models``."""


class ModelRejected(ModelsError):
    """A model cannot be served: wrong schema, unreadable file, bad outputs."""


class NoModel(ModelsError):
    """The registry has no promoted model to serve."""


class ExportError(ModelsError):
    """A booster cannot be exported to ONNX, or ONNX Runtime cannot load the result."""


class ModelRefused(ModelsError):
    """A candidate model fails a check (schema, parity, integrity) and is not registered."""


class RegistryError(ModelsError):
    """The registry is missing, corrupt, or has no such version."""


class TrainingError(ModelsError):
    """The training data cannot produce a model (too few rows, one class only)."""


class ReportError(ModelsError):
    """The evaluation data handed to the report renderer is inconsistent."""


class SigningKeyError(ModelsError):
    """A registry key (Ed25519 signing or verify key) is missing, unreadable, malformed or exposed."""


class PeerError(ModelsError):
    """A peer filter (bogofilter, SpamAssassin, Rspamd) failed to start, learn or score."""
