"""Hydra callback that aggregates a multirun when it ends.

Every multirun gets ``outputs/<experiment>/sweeps/sweep_N/`` with ``jobs.jsonl`` (one line per
job, appended by the job itself, so any launcher works), a copy of Hydra's ``multirun.yaml``,
and ``sweep_summary.json``: the runs, and per group of runs that differ only in ``seed`` the mean,
std (``ddof=1``) and values of every metric with the run ids — for ``-m seed=42,43,44`` that is
the seed aggregate. Jobs of a fold sweep (``-m cv=kfold cv.fold=1,2,3``) also get their CV
directory's ``cv_summary.json`` (re)written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mammo.artifacts.closing import command, say_closing
from mammo.artifacts.io import write_json
from mammo.artifacts.redact import mask_file
from mammo.artifacts.rundir import allocate_run_dir, sweep_jobs
from mammo.distributed.ranks import is_rank_zero
from mammo.evaluation.cross_validation import aggregate
from mammo.evaluation.metrics import SHORT_NAMES, labelled_mean_std

log = logging.getLogger("mammo")
ENV = "MAMMO_SWEEP_JOBS"
SWEEP_PREFIX = "sweep_"


class SweepCallback(Callback):
    """Registered in ``conf/train.yaml`` under ``hydra.callbacks``."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.dir = allocate_run_dir(Path(config.paths.experiment_dir) / "sweeps", SWEEP_PREFIX)
        self.jobs = self.dir / "jobs.jsonl"
        self.jobs.touch()
        os.environ[ENV] = str(self.jobs.resolve())  # inherited by launcher workers

    def on_job_end(self, config: DictConfig, job_return, **kwargs: Any) -> None:
        target = os.environ.get(ENV)
        if not target or not is_rank_zero():  # a DDP job's other ranks (e.g. SLURM tasks) add no line
            return
        value, error = job_outcome(job_return)
        pruned = type(error).__name__ == "TrialPruned"  # an HPO trial the pruner stopped
        record = {
            "run_dir": str(job_return.hydra_cfg.hydra.runtime.output_dir),
            "status": "completed" if error is None else "pruned" if pruned else "failed",
            "objective": _number(value) if error is None else None,
            "error": f"{type(error).__name__}: {error}" if error is not None and not pruned else None,
            "overrides": list(job_return.overrides or []),
            "seed": config.get("seed"),
            "cv_fold": config.cv.get("fold") if "cv" in config else None,
            "cv_dir": config.paths.get("cv_dir") if "cv" in config and config.cv.get("folds") else None,
        }
        with open(target, "a", encoding="utf-8") as f:  # one short append per job: atomic
            f.write(json.dumps(record) + "\n")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ.pop(ENV, None)
        records = sweep_jobs(self.dir)
        multirun_yaml = Path(config.hydra.sweep.dir) / "multirun.yaml"
        if multirun_yaml.is_file():
            mask_file(multirun_yaml)  # a password from a config file (mammo.artifacts.redact)
            shutil.copy(multirun_yaml, self.dir / "multirun.yaml")
        cv_dirs = sorted({r["cv_dir"] for r in records if r["cv_fold"] is not None and r["cv_dir"]})
        for cv_dir in cv_dirs:
            cv_summary = aggregate(cv_dir, monitor=config.monitor)
            log.info("Wrote %s/cv_summary.json (%d folds)", cv_dir, cv_summary["num_folds_aggregated"])
        summary = summarize(records, config.monitor)
        sweeper = config.hydra.sweeper
        if "study_name" in sweeper and sweeper.get("storage"):
            # built for every run, single ones too: the study report (Optuna) loads only for a study
            from mammo.hpo.study import report

            best = report(Path(config.hydra.sweep.dir), str(sweeper.storage), str(sweeper.study_name))
            summary["hpo"] = {"study_name": str(sweeper.study_name), "best": best}
            log.info("HPO report: %s/best_params.json, trials.csv, plots/", config.hydra.sweep.dir)

        write_json(self.dir / "sweep_summary.json", {"sweep_id": self.dir.name, **summary})
        say_seed_spread(summary["groups"], config.monitor)
        say_closing(*self.where_it_went(summary, cv_dirs, Path(config.hydra.sweep.dir)))

    def where_it_went(self, summary: dict, cv_dirs: list, hpo_dir: Path) -> tuple[str, Path, str]:
        """The multirun's last console line: a fold sweep's ``cv_summary.json``, a study's best
        trial, else the ``sweep_summary.json`` and the report pack of its completed runs."""
        if cv_dirs:
            cv_dir = Path(cv_dirs[-1])
            return "CV summary", cv_dir / "cv_summary.json", command("mammo.review", cv_dir)
        best = (summary.get("hpo") or {}).get("best")
        if best:
            settings = [f"{k}={v}" for k, v in best["params"].items()]
            return "HPO best trial", hpo_dir / "best_params.json", command("mammo.train", *settings)
        runs = [r["run_dir"] for r in summary["runs"] if r["status"] == "completed"]
        report = command("mammo.report", f"runs=[{','.join(runs)}]") + "  (figures and tables)"
        return "Sweep summary", self.dir / "sweep_summary.json", report


def job_outcome(job_return: JobReturn) -> tuple[object, BaseException | None]:
    """``(returned value, None)`` of a completed job, ``(None, exception)`` of a failed one."""
    try:
        return job_return.return_value, None
    except BaseException as exc:  # JobReturn.return_value re-raises the job's exception
        return None, exc


def summarize(records: list[dict], monitor: str) -> dict:
    """Runs and per-group statistics; a group is the runs whose overrides differ only in seed."""
    runs = [
        {**r, "run_id": Path(r["run_dir"]).name, "metrics": run_metrics(Path(r["run_dir"]))} for r in records
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        if r["cv_fold"] is not None:
            continue  # fold jobs are aggregated in their cv_summary.json
        key = tuple(o for o in r["overrides"] if not o.lstrip("+~").startswith("seed="))
        groups.setdefault(key, []).append(r)
    out_groups = []
    for key, members in groups.items():
        completed = [m for m in members if m["status"] == "completed" and m["metrics"]]
        names = list(dict.fromkeys(n for m in completed for n in m["metrics"]))
        out_groups.append(
            {
                "overrides": list(key),
                "seeds": [m["seed"] for m in members],
                "run_ids": [m["run_id"] for m in members],
                "num_runs": len(members),
                "num_completed": len(completed),
                "metrics": {n: _group_stats(completed, n) for n in names},
                **({"split": seed_split(completed)} if len({m["seed"] for m in completed}) > 1 else {}),
            }
        )
    return {
        "monitor": monitor,
        "num_runs": len(runs),
        "num_completed": sum(r["status"] == "completed" for r in runs),
        "groups": out_groups,
        "metrics": out_groups[0]["metrics"] if len(out_groups) == 1 else None,
        "runs": runs,
    }


def seed_split(runs: list[dict]) -> dict:
    """Whether the validation patients of runs that differ only in seed changed with it: a seed
    sweep's spread is then the initialisation's and the split's together (``data.split_seed``
    follows ``seed`` unless set). From each run's ``split.csv`` and ``summary.json``."""
    patients, split_seeds = [], []
    for r in runs:
        folder = Path(r["run_dir"])
        table = folder / "split.csv"
        if table.is_file():
            sides = pd.read_csv(table, dtype=str, usecols=["PatientID", "split"])
            patients.append(frozenset(sides.loc[sides["split"] == "val", "PatientID"]))
        summary = folder / "summary.json"
        data = json.loads(summary.read_text()).get("data_config", {}) if summary.is_file() else {}
        split_seeds.append(data.get("split_seed"))
    changed = len(set(patients)) > 1
    return {
        "changed_with_seed": changed,
        "split_seeds": split_seeds,
        "measures": (
            "initialisation, training order and validation patients (data.split_seed followed seed)"
            if changed
            else "initialisation and training order, on the same validation patients"
        ),
    }


def say_seed_spread(groups: list[dict], monitor: str) -> None:
    """The console's line per seed group: its spread and what it measures."""
    name = next((n for n, short in SHORT_NAMES.items() if f"val_{short}" == monitor), None)
    for group in groups:
        split, stats = group.get("split"), group["metrics"].get(name or "", {})
        if split is None or stats.get("mean") is None:
            continue
        seeds = ", ".join(map(str, group["seeds"]))
        how = (
            "the validation patients changed with the seed: this spread is initialisation and split "
            f"together; add data.split_seed={split['split_seeds'][0]} to keep the split"
            if split["changed_with_seed"]
            else "the same validation patients in every run: this spread is the initialisation's"
        )
        log.info("Seeds %s: %s %.4f ± %.4f; %s", seeds, monitor, stats["mean"], stats["std"] or 0.0, how)


def run_metrics(run_dir: Path) -> dict[str, float]:
    """The best-epoch metrics of a run (``summary.json``), or the fold means of a CV job."""
    cv_file, summary_file = run_dir / "cv_summary.json", run_dir / "summary.json"
    if cv_file.is_file() and not summary_file.is_file():
        stats = json.loads(cv_file.read_text())["metrics"]
        return {
            name: stats[name]["mean"] for name in SHORT_NAMES if stats.get(name, {}).get("mean") is not None
        }
    if not summary_file.is_file():
        return {}
    summary = json.loads(summary_file.read_text())
    return {
        name: summary[f"best_val_{short}"]
        for name, short in SHORT_NAMES.items()
        if f"best_val_{short}" in summary
    }


def _group_stats(runs: list[dict], name: str) -> dict:
    return labelled_mean_std([r["metrics"].get(name) for r in runs], [r["run_id"] for r in runs], "run_ids")


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
