"""A run killed before it could record its end (SIGKILL, the out-of-memory killer) is shown as
``dead`` by ``mammo.runs``, not as ``running`` for ever."""

from __future__ import annotations

import os
import subprocess
import sys

from mammo.artifacts.run_index import find_runs
from mammo.artifacts.summary import RunSummary, process_gone


def summary_in(folder, pid: int | None = None) -> dict:
    summary = RunSummary(folder / "summary.json", "density_classification", folder.name, 1)
    if pid is not None:  # as the process ``pid`` would have written it
        summary.data["execution"].update(pid=pid, process_start=None)
    summary.save()
    return summary.data


def test_a_running_run_whose_process_is_gone_is_dead(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    alive = summary_in(tmp_path / "results_1")
    assert alive["execution"]["pid"] == os.getpid() and alive["execution"]["process_start"] is not None
    summary_in(tmp_path / "results_2", pid=child.pid)  # that process has ended
    statuses = {row["run"]: row["status"] for row in find_runs(tmp_path)}
    assert statuses == {"results_1": "running", "results_2": "dead"}
    # the same pid taken by a later process is not the run's process
    reused = {
        **alive,
        "execution": {**alive["execution"], "process_start": alive["execution"]["process_start"] - 1},
    }
    assert process_gone(reused) and not process_gone(alive)
    # another host's run is not judged from here; a finished run is what it says
    assert not process_gone({**reused, "environment": {"hostname": "another-node"}})
    assert not process_gone({**reused, "status": "completed"})
