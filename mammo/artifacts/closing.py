"""Every entry's last console line: where its main result is, and the next command worth running.

A newcomer follows what the commands print: a run names its folder (or its review page), a CV job
its ``cv_summary.json``, a sweep its ``sweep_summary.json``, and each says what to run next.
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path

log = logging.getLogger("mammo")


def closing_line(what: str, where: str | Path, next_command: str) -> str:
    """The line itself.

    >>> closing_line("Run", "outputs/x/results_1", "python -m mammo.review outputs/x/results_1")
    'Run: outputs/x/results_1 | next: python -m mammo.review outputs/x/results_1'
    """
    return f"{what}: {where} | next: {next_command}"


def say_closing(what: str, where: str | Path, next_command: str) -> None:
    """Log :func:`closing_line` (the console and run.log of a Hydra entry)."""
    log.info(closing_line(what, where, next_command))


def command(entry: str, *arguments) -> str:
    """``python -m <entry> <arguments>``, each argument quoted for a POSIX shell where needed.

    >>> command("mammo.report", "runs=[a,b]", Path("out dir"))
    "python -m mammo.report 'runs=[a,b]' 'out dir'"
    """
    return " ".join(["python", "-m", entry, *(shlex.quote(str(a)) for a in arguments)])


def review_next(folder: Path) -> tuple[str, Path, str]:
    """What a folder with a prediction file says last: its review page and how to share it once
    written, else the folder and the command that writes the page."""
    page = folder / "review" / "index.html"
    if page.is_file():
        return "Review page", page, command("mammo.review", folder, "--deidentify") + "  (a page to share)"
    return "Results", folder, command("mammo.review", folder) + "  (where the model fails)"
