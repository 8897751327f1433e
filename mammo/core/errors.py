"""User-facing errors.

They derive from Hydra's ``CompactHydraException`` so that Hydra prints them as one line (no traceback
wall) and exits non-zero, while the run directory still records the failure in ``summary.json``.
"""

import re
import sys
import traceback

from hydra.errors import CompactHydraException

from mammo.artifacts.redact import mask


class MammoError(CompactHydraException):
    """A problem with the user's data or configuration; the message names the file, row or key."""


class DataError(MammoError):
    """Bad or missing input data: CSV, DICOM folder or file."""


class ConfigError(MammoError):
    """A configuration value that cannot work (unknown model, unreachable weights, ...)."""


class ResumeRefused(ConfigError):
    """``resume=`` that would not continue the same run (changed data or settings, a lost best
    model): refused, and the run directory is left as it was."""


class TrainingError(MammoError):
    """Training cannot go on (e.g. the loss became NaN)."""


class OutputError(MammoError):
    """A run's output cannot be written (a full or read-only disk); the message names the path."""


class JobInterrupted(MammoError):
    """A scheduler's job stopped by a signal (``scancel``, a time limit). Raised instead of
    ``KeyboardInterrupt`` at the job's end, so that Hydra records the job as failed (its sweep
    line, the sweep summary) and the launcher gets a result for it."""


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message``: an exception in one line (libraries' messages often
    run to a paragraph)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def unwrap_worker_error(exc: BaseException) -> BaseException:
    """A mammo error raised in a DataLoader worker comes back with the worker's traceback as its
    message; give it back its own one-line message."""
    text = str(exc)
    if isinstance(exc, MammoError) and "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        return type(exc)(last.split(": ", 1)[1] if ": " in last else last)
    return exc


def install_compact_errors() -> None:
    """Print a mammo error as its one line wherever Python reports an uncaught exception.

    Hydra 1.4 reports an exception raised inside a job through ``sys.excepthook``, with the job's
    traceback, even for a ``CompactHydraException``; the traceback stays in run.log. Every other
    exception goes to the hook that was installed before.
    """
    if sys.excepthook is not _report:
        _previous_hook[0], sys.excepthook = sys.excepthook, _report


_previous_hook = [sys.__excepthook__]


def refused_target(key: str, target: str, origin: str) -> str:
    """The one line for a config ``_target_`` that mammo does not run (``mammo.core.targets``)."""
    return (
        f"{key}={target}: not a target mammo runs (the classes and functions conf/ names; set in "
        f"{origin}); to run your own code, add it to MAMMO_TRUSTED_TARGETS "
        "(e.g. MAMMO_TRUSTED_TARGETS=mylab.*)"
    )


def whitelist_refusal(exc: BaseException) -> str | None:
    """Hydra's own refusal of a target (e.g. in ``hydra.callbacks``, instantiated before a job's
    checks), as :func:`refused_target`'s line; ``None`` for any other exception."""
    found = re.search(
        r"Target '([^']+)'.* is not in the Hydra execution whitelist.*full_key: (\S+)", str(exc), re.S
    )
    return refused_target(f"{found[2]}._target_", found[1], "the composed config") if found else None


def _report(exc_type, exc, tb) -> None:
    if issubclass(exc_type, MammoError):
        sys.stderr.write(f"{mask(str(exc))}\n")
        return
    refusal = whitelist_refusal(exc)
    if refusal:
        sys.stderr.write(f"{refusal}\n")
        return
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    if mask(text) != text:  # a library's error naming a URL with its password
        sys.stderr.write(mask(text))
    else:
        _previous_hook[0](exc_type, exc, tb)
