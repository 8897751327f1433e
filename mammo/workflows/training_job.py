"""One Hydra job of ``mammo.train``: the settings check, a resumed run's own config, the HPO
trial around the run, and the DDP ranks it started."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from mammo import TRUSTED_TARGETS
from mammo.artifacts.closing import command, say_closing
from mammo.artifacts.redact import mask_files
from mammo.core.errors import ConfigError, JobInterrupted, ResumeRefused, unwrap_worker_error
from mammo.core.targets import check_targets
from mammo.core.train_settings import check_train_settings, warms_up
from mammo.distributed.claims import release_claims
from mammo.distributed.launcher import finish_job
from mammo.distributed.ranks import is_rank_zero
from mammo.hpo.trial import TrialJob
from mammo.models.classifier import make_loss
from mammo.models.multiview import check_multiview_settings
from mammo.review_pages.build import check_review_setting
from mammo.workflows.components import runs_all_folds, starting_weights, trial_settings
from mammo.workflows.fit import fit_run
from mammo.workflows.folds import run_all_folds
from mammo.workflows.lr_finder import tune_settings
from mammo.workflows.resume import RunLogMark
from mammo.workflows.run_context import Run

log = logging.getLogger("mammo")


def train(cfg: DictConfig) -> float:
    """Run one training job in ``paths.run_dir``; returns ``best_<monitor>``, or with
    ``cv=kfold`` and no ``cv.fold`` the mean over all folds, trained one after another here."""
    run_dir = Path(cfg.paths.run_dir)
    mask_files(run_dir / ".hydra")  # Hydra's copy of a config file's password
    if not cfg.get("resume"):
        return train_job(cfg, run_dir)
    run_log = RunLogMark(run_dir)
    try:
        return train_job(original_config(cfg, run_dir), run_dir)
    except ResumeRefused:
        run_log.restore()  # the refused attempt's lines and traceback stay off the run's log
        raise


def train_job(cfg: DictConfig, run_dir: Path) -> float:
    """:func:`train` of a job whose config is settled (a resumed run's own)."""
    trial = TrialJob.of(trial_settings(cfg), run_dir)
    link = trial.link if trial else None
    try:
        check_settings(cfg, run_dir)
        if runs_all_folds(cfg):
            value = run_all_folds(cfg, run_dir, link=link)
        else:
            cv_dir = Path(cfg.paths.cv_dir) if cfg.cv.folds is not None else None
            value = fit_run(cfg, run_dir, fold=cfg.cv.fold, cv_dir=cv_dir, link=link)
        if is_rank_zero():
            say_closing(*where_it_went(run_dir, runs_all_folds(cfg), int(cfg.seed)))
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
    (``mammo.core.train_settings``), and the run directory's summary.json says failed."""
    try:
        check_targets(cfg, TRUSTED_TARGETS)
        check_review_setting(cfg.get("review"))
        tune_settings(cfg)
        fit_warmup_to_epochs(cfg, {override_key(o) for o in given_overrides()})
        check_train_settings(cfg)
        make_loss(cfg.loss.name, cfg.label_smoothing)  # label smoothing is cross-entropy's
        if "unit" in cfg.model:  # model=multiview
            check_multiview_settings(cfg.model.unit, cfg.model.get("fusion", "attention"))
        starting_weights(cfg.model)  # ImageNet weights that cannot be had stop here, in seconds
    except ConfigError as exc:
        Run.start(cfg, run_dir).fail(exc)
        raise


RESUME_OVERRIDES = ("resume", "data.num_workers", "paths.output_dir")
"""What may be given with ``resume=``: settings that cannot change the run's result (where its
directory is found, how many processes read its data)."""


def fit_warmup_to_epochs(cfg: DictConfig, given: set[str]) -> None:
    """``epochs=1`` alone on the command line, under a preset's ``warmup_epochs=1``: the warm-up
    is shortened to fit, with one line saying so. Given both, a contradiction stays an error
    (``mammo.core.train_settings`` names the fix)."""
    warmup, epochs = cfg.get("warmup_epochs"), cfg.get("epochs")
    if not warms_up(cfg) or "warmup_epochs" in given or "epochs" not in given:
        return
    if isinstance(warmup, int) and isinstance(epochs, int) and 1 <= epochs <= warmup:
        cfg.warmup_epochs = epochs - 1
        log.info(
            "warmup_epochs=%d shortened to %d to fit epochs=%d (scheduler=cosine)",
            warmup,
            epochs - 1,
            epochs,
        )


def where_it_went(run_dir: Path, all_folds: bool, seed: int) -> tuple[str, Path, str]:
    """The job's last console line: a CV job's ``cv_summary.json`` and its review; a run's review
    page and a seed sweep of the same command, else the run's folder and its review."""
    if all_folds:
        review = command("mammo.review", run_dir) + "  (the out-of-fold review)"
        return "CV summary", run_dir / "cv_summary.json", review
    found = run_dir / "metrics" / "lr_find.json"
    if found.is_file() and not (run_dir / "best_model.pt").is_file():  # tune=lr_find alone
        suggestion = json.loads(found.read_text())["suggestion"]
        kept = [
            o for o in given_overrides() if override_key(o).split(".")[0] not in ("tune", "learning_rate")
        ]
        train = (
            command("mammo.train", *kept, f"learning_rate={suggestion:.3g}") if suggestion else "see the plot"
        )
        return "Learning-rate finder", run_dir / "plots" / "lr_find.png", train
    page = run_dir / "review" / "index.html"
    if not page.is_file():
        return "Run", run_dir, command("mammo.review", run_dir) + "  (where the model fails)"
    kept = [o for o in given_overrides() if override_key(o) not in ("seed", "resume")]
    seeds = f"seed={seed},{seed + 1},{seed + 2}"
    return "Review page", page, command("mammo.train", "-m", *kept, seeds) + "  (the spread over seeds)"


def original_config(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """A resumed run keeps the config it was started with (only ``resume`` and the
    :data:`RESUME_OVERRIDES` are new); an override that would change it is refused, and so is a
    run whose best model is gone."""
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file() or not (run_dir / "summary.json").is_file():
        raise ConfigError(f"resume={run_dir}: not a mammo run directory (no summary.json or .hydra/)")
    refuse_changing_overrides(run_dir)
    refuse_lost_best_model(run_dir)
    original = OmegaConf.load(saved)
    if original.cv.get("folds") is not None or original.hpo.get("trial") is not None:
        raise ConfigError(f"resume={run_dir}: CV and HPO runs are re-run, not resumed")
    if isinstance(original.get("optimizer"), str):  # before optimizers were config nodes
        raise ConfigError(
            f"resume={run_dir}: started by an older mammo (optimizer={original.optimizer!r} as a name); "
            "continue it with that version, or train it again"
        )
    original.resume = str(run_dir)
    if any(override_key(o) == "data.num_workers" for o in given_overrides()):
        original.data.num_workers = cfg.data.num_workers
    return original


def refuse_changing_overrides(run_dir: Path) -> None:
    """``resume=<dir> epochs=4``: one line naming the overrides a resumed run cannot take."""
    given = [o for o in given_overrides() if override_key(o) not in RESUME_OVERRIDES]
    if given:
        raise ResumeRefused(
            f"resume={run_dir}: {', '.join(given)} would change the run it continues (a resumed run keeps "
            f"its own config; only {', '.join(RESUME_OVERRIDES[1:])} may be given with resume=); "
            "start a new run with them instead"
        )


def given_overrides() -> list[str]:
    """The command line's overrides of the config (Hydra's ``overrides.task``)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def override_key(override: str) -> str:
    """The key of a command-line override (``+a.b=1`` -> ``a.b``, ``model=tiny`` -> ``model``).

    >>> override_key("++trainer.devices=2"), override_key("~logger"), override_key("epochs=4")
    ('trainer.devices', 'logger', 'epochs')
    """
    return override.split("=", 1)[0].lstrip("+~")


def refuse_lost_best_model(run_dir: Path) -> None:
    """A run with validated epochs whose ``best_model.pt`` was deleted cannot end as it would
    have: its best epoch's model is gone."""
    if (run_dir / "checkpoints" / "last.ckpt").is_file() and not (run_dir / "best_model.pt").is_file():
        raise ResumeRefused(
            f"resume={run_dir}: best_model.pt is missing, so the best epoch's model cannot be recovered "
            "and the run cannot end as it would have; train a new run"
        )
