"""summary.json: one writer, rewritten atomically at every status change.

Layout follows ``shared/spec/artifact-logging.md`` (experiment_type, run_id, seed, git_*,
hyperparameters, data_config, model_config, environment, execution, integration) plus ``status``,
``best_epoch``, ``best_<metric>`` values of the best epoch and ``error`` for failed runs.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

from mammo.artifacts.io import write_json
from mammo.artifacts.provenance import command_line, environment_info, git_info


def _now() -> str:
    return datetime.now().isoformat(timespec="seconds")


class RunSummary:
    """The structured record of one run, kept in memory and mirrored to ``summary.json``."""

    def __init__(self, path: Path, experiment_type: str, run_id: str, seed: int) -> None:
        self.path = Path(path)
        self._t0 = time.monotonic()
        self.data: dict[str, Any] = {
            "experiment_type": experiment_type,
            "run_id": run_id,
            "status": "running",
            "seed": int(seed),
            **git_info(),
            "hyperparameters": {},
            "data_config": {},
            "model_config": {},
            "environment": environment_info(),
            "execution": {
                "start_time": _now(),
                "end_time": None,
                "duration_seconds": None,
                "command_line": command_line(),
            },
            "integration": {"optuna_trial_id": None, "ray_trial_name": None, "cv_fold": None},
        }

    def update(self, **fields: Any) -> None:
        """Merge ``fields`` into the summary (dicts are merged one level deep) and save."""
        for key, value in fields.items():
            if isinstance(value, dict) and isinstance(self.data.get(key), dict):
                self.data[key].update(value)
            else:
                self.data[key] = value
        self.save()

    def finish(self, status: str, **fields: Any) -> None:
        """Record the final status and the execution end time."""
        execution = {
            "end_time": _now(),
            "duration_seconds": round(time.monotonic() - self._t0, 3),
        }
        self.update(status=status, execution=execution, **fields)

    def save(self) -> None:
        write_json(self.path, self.data)
