"""One Hydra job of ``mammo.train``: the settings check, a resumed run's own config, the HPO
trial around the run, and the DDP ranks it started."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mammo.artifacts.summary import record_failure
from mammo.distributed.claims import release_claims
from mammo.distributed.launcher import finish_job
from mammo.errors import ConfigError, JobInterrupted, unwrap_worker_error
from mammo.hpo.trial import TrialJob, runs_all_folds
from mammo.settings import check_train_settings
from mammo.workflows.fit import fit_run, start_summary
from mammo.workflows.folds import run_all_folds

log = logging.getLogger("mammo")


def train(cfg: DictConfig) -> float:
    """Run one training job in ``paths.run_dir``; returns ``best_<monitor>``, or with
    ``cv=kfold`` and no ``cv.fold`` the mean over all folds, trained one after another here."""
    run_dir = Path(cfg.paths.run_dir)
    if cfg.get("resume"):
        cfg = original_config(cfg, run_dir)
    trial = TrialJob.of(cfg, run_dir)
    link = trial.link if trial else None
    try:
        check_settings(cfg, run_dir)
        if runs_all_folds(cfg):
            value = run_all_folds(cfg, run_dir, link=link)
        else:
            cv_dir = Path(cfg.paths.cv_dir) if cfg.cv.folds is not None else None
            value = fit_run(cfg, run_dir, fold=cfg.cv.fold, cv_dir=cv_dir, link=link)
    except BaseException as exc:
        if trial:
            trial.failed(unwrap_worker_error(exc))
        if isinstance(exc, KeyboardInterrupt) and runs_one_job_per_process():
            raise JobInterrupted(f"job interrupted by a signal: {exc}".rstrip(": ")) from None
        raise
    finally:  # DDP: the ranks this job started end with it; the next job of a sweep starts its own
        finish_job()
        release_claims(run_dir)
    return trial.finish(value) if trial else value


def runs_one_job_per_process() -> bool:
    """A job the scheduler runs in a process of its own (hydra-submitit-launcher's SLURM jobs):
    there a signal stops this job only, which is recorded as failed like any other; in a local
    sweep Ctrl-C stops the whole sweep."""
    return bool(os.environ.get("SUBMITIT_EXECUTOR"))


def check_settings(cfg: DictConfig, run_dir: Path) -> None:
    """Before any work: a bad value stops the run with one line naming its key
    (``mammo.settings``), and the run directory's summary.json says failed."""
    try:
        check_train_settings(cfg)
    except ConfigError as exc:
        record_failure(start_summary(cfg, run_dir), exc)
        raise


def original_config(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """A resumed run keeps the config it was started with (only ``resume`` is new)."""
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file() or not (run_dir / "summary.json").is_file():
        raise ConfigError(f"resume={run_dir}: not a mammo run directory (no summary.json or .hydra/)")
    original = OmegaConf.load(saved)
    if original.cv.get("folds") is not None or original.hpo.get("trial") is not None:
        raise ConfigError(f"resume={run_dir}: CV and HPO runs are re-run, not resumed")
    if isinstance(original.get("optimizer"), str):  # before optimizers were config nodes
        raise ConfigError(
            f"resume={run_dir}: started by an older mammo (optimizer={original.optimizer!r} as a name); "
            "continue it with that version, or train it again"
        )
    original.resume = str(run_dir)
    return original
