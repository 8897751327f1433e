"""summary.json: one writer, rewritten atomically at every status change.

Layout follows ``shared/spec/artifact-logging.md`` (experiment_type, run_id, seed, git_*,
hyperparameters, data_config, model_config, environment, execution, integration) plus ``status``,
``best_epoch``, ``best_<metric>`` values of the best epoch and ``error`` for failed runs.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

from mammo.artifacts.io import atomic_open, write_json
from mammo.artifacts.provenance import command_line, environment_info, git_info
from mammo.artifacts.redact import masked
from mammo.artifacts.runlog import FILE_ONLY
from mammo.core.errors import OutputError

log = logging.getLogger("mammo")


def now() -> str:
    """The local time as the run records write it (ISO 8601, seconds)."""
    return datetime.now().isoformat(timespec="seconds")


class RunSummary:
    """The structured record of one run, kept in memory and mirrored to ``summary.json``."""

    def __init__(self, path: Path, experiment_type: str, run_id: str, seed: int, write: bool = True) -> None:
        self.path = Path(path)
        self.write = write  # False on the other ranks of a DDP job: only rank zero keeps the file
        self._t0 = time.monotonic()
        self._on_finish: list = []
        self.data: dict[str, Any] = {
            "experiment_type": experiment_type,
            "run_id": run_id,
            "status": "running",
            "seed": seed if isinstance(seed, int) else None,  # None: not an integer (a failed run)
            **git_info(),
            "hyperparameters": {},
            "data_config": {},
            "model_config": {},
            "environment": environment_info(),
            "execution": {
                "start_time": now(),
                "end_time": None,
                "duration_seconds": None,
                "command_line": command_line(),
                **this_process(),
            },
            "integration": {"optuna_trial_id": None, "ray_trial_name": None, "cv_fold": None},
        }

    def continue_from_file(self) -> None:
        """Resume: keep what the file holds (start time, data, model, ...), mark it running again."""

        self._before = self.path.read_bytes()
        previous = json.loads(self._before)
        self._t0 -= previous.get("execution", {}).get("duration_seconds") or 0  # the time already run
        resumed = [*previous.get("execution", {}).get("resumed_at", []), now()]
        previous.pop("error", None)
        self.data = {**previous, "status": "running"}
        self.data["execution"] = {**previous.get("execution", {}), "resumed_at": resumed, **this_process()}
        self.save()

    def restore(self) -> None:
        """A refused resume: ``summary.json`` back as it was before :meth:`continue_from_file`."""
        if getattr(self, "_before", None) is not None:
            self.data = json.loads(self._before)
            if self.write:
                with atomic_open(self.path, "wb") as f:  # byte for byte as it was
                    f.write(self._before)

    def update(self, **fields: Any) -> None:
        """Merge ``fields`` into the summary (dicts are merged one level deep) and save."""
        for key, value in fields.items():
            if isinstance(value, dict) and isinstance(self.data.get(key), dict):
                self.data[key].update(value)
            else:
                self.data[key] = value
        self.save()

    def finish(self, status: str, **fields: Any) -> None:
        """Record the final status and the execution end time.

        A run that is already failing and cannot write the file (a full disk) says so on the
        console and lets the original error through; a completed run that cannot raises.
        """
        execution = {
            "end_time": now(),
            "duration_seconds": round(time.monotonic() - self._t0, 3),
        }
        try:
            self.update(status=status, execution=execution, **fields)
        except OutputError as exc:
            if status == "completed":
                raise
            log.error("The run's status '%s' is not recorded in summary.json: %s", status, exc)
        self.tell_finished()

    def when_finished(self, record) -> None:
        """Call ``record(summary_data)`` once the run ends, whatever its status (the trackers that
        mirror the run elsewhere: ``logger=mlflow``)."""
        self._on_finish.append(record)

    def tell_finished(self) -> None:
        """The :meth:`when_finished` calls; one that fails is logged: the run's own files stand."""
        for record in self._on_finish:
            try:
                record(self.data)
            except Exception as exc:  # a tracking server gone: the run directory still has it all
                name = getattr(record, "__qualname__", record)
                log.warning("Could not record the run's end in %s: %s", name, exc)

    def save(self) -> None:
        if self.write:
            write_json(self.path, masked(self.data))  # no password of a URL (command line, errors)


def this_process() -> dict:
    """``pid`` and ``process_start`` of the process writing the run (with ``environment.hostname``,
    what ``mammo.runs`` needs to tell a running run from one whose process was killed)."""
    return {"pid": os.getpid(), "process_start": process_start(os.getpid())}


def process_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat``): tells a
    live process from a later one that got the same pid. ``None`` where there is no ``/proc``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22, after the command name in brackets


def process_gone(summary: dict) -> bool:
    """Whether a run that says ``running`` has no process left: it was started on this host and
    its pid is gone or is another process now (a SIGKILL, the out-of-memory killer, a power cut
    end a run before it can record its end). A run of another host is not judged."""
    execution, environment = summary.get("execution") or {}, summary.get("environment") or {}
    pid = execution.get("pid")
    if (
        summary.get("status") != "running"
        or pid is None
        or environment.get("hostname") != socket.gethostname()
    ):
        return False
    started = process_start(int(pid))
    if started is None:  # no such process (where /proc exists to say so)
        return Path("/proc").is_dir()
    recorded = execution.get("process_start")
    return recorded is not None and started != recorded


def record_failure(summary: RunSummary, exc: BaseException, status: str = "failed") -> None:
    """A run that ends with ``exc``: summary.json says ``status`` with the error, run.log has the
    one-line reason (on the console too) and the traceback (file only)."""
    summary.finish(status, error={"type": type(exc).__name__, "message": str(exc)})
    log.error("Run %s: %s: %s (run dir: %s)", status, type(exc).__name__, exc, summary.path.parent)
    log.error(traceback.format_exc().rstrip(), extra=FILE_ONLY)


def run_recorded(experiment_type: str, out: Path, seed: int, body) -> None:
    """Run ``body(out, summary) -> dict`` with a summary.json in ``out`` that ends ``completed``
    (plus the returned fields) or ``failed`` (:func:`record_failure`). The shared frame of the
    entries other than training (embed, evaluate, predict, export, report, baselines)."""
    summary = RunSummary(out / "summary.json", experiment_type, out.name, seed)
    try:
        summary.finish("completed", **body(out, summary))
    except BaseException as exc:
        record_failure(summary, exc)
        raise
