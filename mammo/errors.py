"""User-facing errors.

They derive from Hydra's ``CompactHydraException`` so that Hydra prints them as one line (no traceback
wall) and exits non-zero, while the run directory still records the failure in ``summary.json``.
"""

from hydra.errors import CompactHydraException


class MammoError(CompactHydraException):
    """A problem with the user's data or configuration; the message names the file, row or key."""


class DataError(MammoError):
    """Bad or missing input data: CSV, DICOM folder or file."""


class ConfigError(MammoError):
    """A configuration value that cannot work (unknown model, unreachable weights, ...)."""


class TrainingError(MammoError):
    """Training cannot go on (e.g. the loss became NaN)."""


class OutputError(MammoError):
    """A run's output cannot be written (a full or read-only disk); the message names the path."""
