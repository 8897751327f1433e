"""One training run's parts in one object, handed to each step of the run (``workflows/fit.py``,
``workflows/components.py``) instead of threaded through their parameters."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mammo.artifacts.summary import RunSummary, record_failure
from mammo.core.train_settings import hyperparameters
from mammo.distributed.ranks import is_rank_zero
from mammo.hpo.trial import trial_id


@dataclass
class Run:
    """A training run, as detectron2's ``DefaultTrainer`` holds its parts: the settings, the
    directory, ``summary.json``'s writer and whether this process writes at all, decided once
    where the run starts; then each part as a step builds it (datamodule, model, artifacts,
    trainer), for every later step to read."""

    cfg: DictConfig
    directory: Path
    summary: RunSummary
    writes: bool
    """Whether this process writes the run directory: global rank zero under DDP."""
    fold: int | None = None
    """The CV fold this run validates on (``None``: the one split)."""
    cv_dir: Path | None = None
    """Where a CV job's shared files go (``folds.csv``)."""
    link: Any = None
    """The HPO trial the run reports each epoch to (:class:`~mammo.hpo.trial.TrialLink`), if any."""
    datamodule: Any = None
    model: Any = None
    artifacts: Any = None
    trainer: Any = None

    @classmethod
    def start(
        cls,
        cfg: DictConfig,
        directory: Path,
        fold: int | None = None,
        cv_dir: Path | None = None,
        link=None,
        datamodule=None,
    ) -> Run:
        """The run with its ``summary.json`` started (status ``running``, the settings it was asked
        for; a resumed run continues its own file). Under DDP only rank zero writes."""
        writes = is_rank_zero()
        run_id = f"fold_{fold}" if fold is not None else directory.name
        summary = RunSummary(
            directory / "summary.json", "density_classification", run_id, cfg.seed, write=writes
        )
        if cfg.get("resume"):
            summary.continue_from_file()
        summary.update(
            hyperparameters=hyperparameters(cfg),
            integration={"cv_fold": fold, "optuna_trial_id": job_trial_id(cfg)},
        )
        return cls(cfg, directory, summary, writes, fold, cv_dir, link, datamodule)

    def fail(self, exc: BaseException) -> None:
        """The one place a run's end by an error is recorded: ``interrupted`` for a signal,
        ``failed`` otherwise, with the error in ``summary.json``."""
        record_failure(self.summary, exc, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")


def job_trial_id(cfg: DictConfig) -> str | None:
    """The ``trial_id`` of the trial this job runs (``None`` outside a search)."""
    trial = cfg.hpo.get("trial")
    return None if trial is None else trial_id(str(cfg.hpo.study_name), trial)
