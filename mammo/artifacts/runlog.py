"""run.log format: ``[YYYY-MM-DD HH:MM:SS] message``, warnings as ``[...] WARNING: message``.

Hydra's job logging owns the file (``conf/hydra/job_logging/run_log.yaml``); this module only
provides the formatter and the filter that keeps file-only records (tracebacks) off the console.
"""

from __future__ import annotations

import logging
import sys

from mammo.artifacts.redact import mask

FILE_ONLY = {"file_only": True}
"""Pass as ``extra=`` to log a record to run.log but not to the console."""


class RunLogFormatter(logging.Formatter):
    """The spec's run.log line format.

    >>> rec = logging.LogRecord("x", logging.WARNING, "", 0, "cache truncated", None, None)
    >>> RunLogFormatter().format(rec).split("] ", 1)[1]
    'WARNING: cache truncated'

    A password in a URL is masked (``mammo.artifacts.redact``).
    """

    def __init__(self) -> None:
        super().__init__(fmt="[%(asctime)s] %(message)s", datefmt="%Y-%m-%d %H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging API)
        line = super().formatMessage(record)
        if record.levelno >= logging.WARNING:
            prefix = "WARNING: " if record.levelno == logging.WARNING else f"{record.levelname}: "
            stamp, _, message = line.partition("] ")
            line = f"{stamp}] {prefix}{message}"
        return mask(line)

    def formatException(self, ei) -> str:  # noqa: N802 (logging API)
        return mask(super().formatException(ei))


NOISE_PREFIXES = ("💡 Tip:",)
"""Library messages that say nothing about the run (Lightning's product tips)."""

IGNORED_WARNINGS = (
    r"Checkpoint directory .* exists and is not empty",  # the run dir holds our other artifacts
    # a resumed run's logs/metrics.csv is continued, not deleted (mammo.workflows.resume)
    r"Experiment logs directory .* exists and is not empty",
    r".*isinstance\(treespec, LeafSpec\)",  # Lightning vs newer torch, harmless
    # a machine with SLURM's tools (a login node): mammo reaches SLURM through launcher=slurm,
    # whose jobs run under srun; "prepend srun" is not how a mammo run gets there
    r"The `srun` command is available on your system but is not used",
)


class RunLogFilter(logging.Filter):
    """Keep library noise out of run.log and the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(NOISE_PREFIXES)


class ConsoleFilter(RunLogFilter):
    """Also drop records marked ``file_only`` (e.g. full tracebacks) from the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        return super().filter(record) and not getattr(record, "file_only", False)


class RunLogFileHandler(logging.FileHandler):
    """run.log's handler: when the file cannot be written (a full disk), it says so once on the
    console and stops trying, instead of printing a traceback for every message."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging API)
        if self.level <= logging.CRITICAL:
            error = sys.exc_info()[1]
            sys.stderr.write(f"{self.baseFilename}: cannot write ({error}); logging to the console only\n")
            self.setLevel(logging.CRITICAL + 1)


def route_library_logs() -> None:
    """Send Lightning's messages and Python warnings through Hydra's job handlers only.

    Lightning adds its own console handler to the ``lightning`` logger; without removing it every
    message appears twice on the console. Warnings become ``WARNING:`` lines of run.log.
    """
    import warnings

    lightning_logger = logging.getLogger("lightning")
    for handler in list(lightning_logger.handlers):
        lightning_logger.removeHandler(handler)
    lightning_logger.propagate = True
    for pattern in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    logging.captureWarnings(True)
