"""Scale-out through a real SLURM scheduler (``make test-slurm`` starts a one-node cluster here).

Every job goes through ``sbatch`` (hydra-submitit-launcher) or ``srun``: seed sweeps, CV fold
sweeps, DDP over SLURM tasks, HPO workers as SLURM jobs and a cancelled job. Each test bounds its
own waiting and fails with the tail of the jobs' submitit logs when SLURM does not run them.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mammo.hpo.storage import open_storage
from tests.conftest import SMALL_DEMO, TINY
from tests.distributed.test_distributed import check_complete_ddp_run, finish, mammo, only_run_dir

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

WAIT_S = 300  # per sweep: the jobs are seconds of work each
# what a job asks of the cluster: one CPU, no memory or GPU request (the local node declares none);
# MAMMO_SLURM_ARGS adds a real cluster's partition, account, setup lines
RESOURCES = [
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=null",
    "hydra.launcher.timeout_min=20",
    *shlex.split(os.environ.get("MAMMO_SLURM_ARGS", "")),
]
EXPERIMENT = "mammo_tiny_density"


def tiny(out: Path, demo_root: Path, *extra: str) -> list[str]:
    return [
        *TINY,
        *SMALL_DEMO,
        "epochs=2",
        "gradcam_per_class=0",
        "trainer=cpu",
        f"paths.output_dir={out}",
        f"paths.demo_dir={demo_root}",
        *extra,
    ]


def submitit_logs(out: Path, lines: int = 40) -> str:
    """The last lines of every submitit log under ``out`` (what a job printed, or why it died)."""
    tails = []
    for log in sorted(out.rglob(".submitit/*/*_log.*")):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        tails.append(f"--- {log.relative_to(out)}\n" + "\n".join(text))
    return "\n".join(tails) or "(no submitit logs: the jobs never started)"


def queue() -> str:
    return subprocess.run(["squeue", "-o", "%i %j %T %R"], capture_output=True, text=True).stdout


def run_sweep(out: Path, *args: str, expect_ok: bool = True, proc=None) -> str:
    """``python -m mammo.train -m launcher=slurm ...`` to its end (or WAIT_S): its console."""
    proc = proc or mammo("-m", "launcher=slurm", *RESOURCES, *args, cwd=out)
    try:
        console, _ = proc.communicate(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        console, _ = proc.communicate()
        why = f"SLURM did not finish the sweep in {WAIT_S} s"
        pytest.fail(f"{why}\n{queue()}\n{console[-3000:]}\n{submitit_logs(out)}")
    if expect_ok:
        assert proc.returncode == 0, f"{console[-3000:]}\n{submitit_logs(out)}"
    return console


def summary_of(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_a_seed_sweep_runs_as_a_job_array(tmp_path, small_demo):
    run_sweep(tmp_path, *tiny(tmp_path, small_demo, "seed=1,2"))
    exp = tmp_path / EXPERIMENT
    runs = sorted(exp.glob("results_*"))
    assert [summary_of(r)["status"] for r in runs] == ["completed", "completed"]
    assert sorted(summary_of(r)["seed"] for r in runs) == [1, 2]
    sweep = json.loads((exp / "sweeps" / "sweep_1" / "sweep_summary.json").read_text())
    assert sorted(r["seed"] for r in sweep["runs"]) == [1, 2]
    assert all(r["status"] == "completed" for r in sweep["runs"])
    array = {log.parent.name.split("_")[0] for log in exp.glob(".submitit/*/*_log.out")}
    assert len(array) == 1, array  # one array job, two tasks
    assert len(list(exp.glob(".submitit/*/*_log.out"))) == 2


def test_a_cv_fold_sweep_matches_the_folds_run_here(tmp_path, small_demo):
    cv = ["cv=kfold", "cv.folds=3", "cv.fold=1,2,3"]
    slurm, local = tmp_path / "slurm", tmp_path / "local"
    slurm.mkdir(), local.mkdir()
    run_sweep(slurm, *tiny(slurm, small_demo, *cv))
    finish(mammo("-m", *tiny(local, small_demo, *cv), cwd=local))
    by_slurm, here = (o / "density_experiments" / "results_k3_seed42" for o in (slurm, local))
    slurm_summary, local_summary = (json.loads((d / "cv_summary.json").read_text()) for d in (by_slurm, here))
    assert slurm_summary["num_folds_aggregated"] == 3
    assert slurm_summary["metrics"] == local_summary["metrics"]
    assert (by_slurm / "folds.csv").read_bytes() == (here / "folds.csv").read_bytes()


def test_ddp_over_two_slurm_tasks_writes_one_run(tmp_path, small_demo):
    args = tiny(tmp_path, small_demo, "trainer=ddp_cpu", "trainer.devices=2", "seed=7")
    console = run_sweep(tmp_path, *args, "hydra.launcher.tasks_per_node=2")
    run = only_run_dir(tmp_path)
    check_complete_ddp_run(run)
    assert summary_of(run)["environment"]["world_size"] == 2, console[-2000:]
    logs = list((tmp_path / EXPERIMENT).glob(".submitit/*/*_log.out"))
    assert len(logs) == 2  # one log per task: both ranks were SLURM tasks


def test_two_hpo_workers_as_slurm_jobs_share_one_study(tmp_path, small_demo):
    import optuna

    storage = f"journal:{tmp_path}/optuna.journal"  # a shared file system's storage, no server
    args = tiny(tmp_path, small_demo, "hpo=density_optuna", "epochs=1", "hydra.sweeper.n_trials=4")
    worker = " ".join(
        shlex.quote(a)
        for a in [sys.executable, "-m", "mammo.train", "-m", *args, f"hydra.sweeper.storage={storage}"]
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    jobs = [
        subprocess.run(
            ["sbatch", "--parsable", "-c", "1", "-o", f"{tmp_path}/worker{i}.out", "--wrap", worker],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for i in (1, 2)
    ]
    wait_for_jobs(jobs, tmp_path)
    study = optuna.load_study(study_name=f"{EXPERIMENT}_density_optuna", storage=open_storage(storage))
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]  # none lost, none twice, n_trials kept
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["mammo:worker"] for t in trials}) == 2  # both SLURM jobs ran trials


def wait_for_jobs(jobs: list[str], out: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if not subprocess.run(
            ["squeue", "-h", "-j", ",".join(jobs)], capture_output=True, text=True
        ).stdout.strip():
            return
        time.sleep(2)
    subprocess.run(["scancel", *jobs])
    tails = "\n".join(p.read_text()[-2000:] for p in sorted(out.glob("worker*.out")))
    pytest.fail(f"SLURM jobs {jobs} still queued or running after {WAIT_S} s\n{queue()}\n{tails}")


def test_a_cancelled_job_is_recorded_and_reruns(tmp_path, small_demo):
    exp = tmp_path / EXPERIMENT
    args = tiny(tmp_path, small_demo, "seed=1,2", "epochs=20")  # long enough to be cancelled mid-run
    proc = mammo("-m", "launcher=slurm", *RESOURCES, *args, cwd=tmp_path)
    victim = wait_for_training(exp, seed=2)
    job_id = submitit_job_of(victim)
    subprocess.run(["scancel", job_id], check=True)
    console = run_sweep(tmp_path, expect_ok=False, proc=proc)
    assert proc.returncode != 0
    assert summary_of(victim)["status"] in ("interrupted", "failed"), console[-2000:]
    sweep = json.loads((exp / "sweeps" / "sweep_1" / "sweep_summary.json").read_text())
    status = {r["seed"]: r["status"] for r in sweep["runs"]}
    assert status == {1: "completed", 2: "failed"}, f"{status}\n{console[-2000:]}"
    survivor = next(r for r in exp.glob("results_*") if summary_of(r)["seed"] == 1)
    assert summary_of(survivor)["status"] == "completed"
    run_sweep(tmp_path, *tiny(tmp_path, small_demo, "seed=2"))  # the cancelled job alone, again
    rerun = [r for r in exp.glob("results_*") if summary_of(r)["seed"] == 2 and r != victim]
    assert [summary_of(r)["status"] for r in rerun] == ["completed"]
    assert summary_of(survivor)["status"] == "completed"  # untouched


def wait_for_training(exp: Path, seed: int) -> Path:
    """The run directory of ``seed``'s job once it has finished an epoch (it is then training)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        for run in exp.glob("results_*"):
            log = run / "run.log"
            if log.is_file() and "Epoch 1/20" in log.read_text() and summary_of(run).get("seed") == seed:
                return run
        time.sleep(1)
    pytest.fail(
        f"no job of seed {seed} trained an epoch in {WAIT_S} s\n{queue()}\n{submitit_logs(exp.parent)}"
    )


def submitit_job_of(run: Path) -> str:
    """The SLURM job id (``<array>_<task>``) of the running job that writes ``run``, from squeue
    and the job's submitit log (where mammo prints its run directory)."""
    for line in queue().splitlines()[1:]:
        job_id, _, state, _ = line.split(maxsplit=3)
        logs = (run.parent / ".submitit" / job_id).glob("*.out")
        if state == "RUNNING" and any(str(run) in log.read_text(errors="replace") for log in logs):
            return job_id
    raise AssertionError(f"no running SLURM job writes {run}\n{queue()}")
