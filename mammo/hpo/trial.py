"""A trial's job: its Optuna trial, its record (``optuna_trial.json``), and how it ends.

The released hydra-optuna-sweeper asks and tells in the sweep process and never hands the trial
to the job, so nothing could prune. Here the job finds its own trial through the study's
storage (``hpo.study_name``, ``hpo.storage`` and ``hpo.pruner``, which the hpo preset takes from
the sweeper config; the trial number is ``hpo.trial``), reports the monitored metric and asks the
pruner (``mammo.hpo.trial_callbacks.PruneOnPlateau`` after every epoch, or after every fold for a trial
that runs all ``cv.folds``). A pruned job finishes its run directory (status ``pruned`` in
summary.json and optuna_trial.json, with the step reached) and raises :class:`optuna.TrialPruned`,
which the sweeper records as PRUNED. So a pruner's ``n_warmup_steps=2`` lets every trial run 2
epochs (or 2 folds) before it can be pruned.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from mammo.artifacts.io import write_json
from mammo.artifacts.summary import now
from mammo.distributed.ranks import is_rank_zero
from mammo.hpo.optuna_api import running_trial
from mammo.hpo.storage import open_storage

log = logging.getLogger("mammo")


def trial_id(study_name: str | None, number: int) -> str:
    """The spec's ``trial_id``, unique across studies.

    >>> trial_id("mammo_tiny_density_density_optuna", 3)
    'mammo_tiny_density_density_optuna_trial3'
    """
    return f"{study_name}_trial{int(number)}"


@dataclass(frozen=True)
class TrialSettings:
    """What a sweep job knows of the trial it runs (read from ``hpo.*`` and the run's settings by
    ``mammo.workflows.components.trial_settings``)."""

    study_name: str
    storage: str | None
    number: int
    pruner: Any
    """The instantiated Optuna pruner, ``None`` without one."""
    params: dict
    """The searched settings' values, as records write them."""
    metric: str
    budget: int
    """The epochs the trial may train: epochs, times the folds when it runs them all."""
    step_unit: str
    """What the pruner's steps count: ``fold`` when the job runs all CV folds, else ``epoch``."""

    @property
    def trial_id(self) -> str:
        return trial_id(self.study_name, self.number)


class TrialLink:
    """This job's Optuna trial, reached through the study's storage."""

    def __init__(
        self, study_name: str, storage: str, number: int, pruner, step_unit: str, connect: bool = True
    ):
        self.number, self.step_unit = number, step_unit
        self.pruned_at: int | None = None  # the (0-based) step at which the pruner stopped this trial
        self.last_value: float | None = None
        self.trial = None  # the other ranks of a DDP job only follow rank zero's decision
        if connect:
            study = optuna.load_study(study_name=study_name, storage=open_storage(storage), pruner=pruner)
            self.trial = running_trial(study, number)

    @classmethod
    def of(cls, trial: TrialSettings) -> TrialLink | None:
        """The link of a sweep job with a pruner and a storage; ``None`` otherwise."""
        if trial.pruner is None:
            return None
        if not trial.storage:
            log.warning(
                "hydra.sweeper.pruner needs a storage that jobs reach (hydra.sweeper.storage): not pruning"
            )
            return None
        return cls(
            trial.study_name,
            trial.storage,
            trial.number,
            trial.pruner,
            trial.step_unit,
            connect=is_rank_zero(),
        )

    @property
    def pruned(self) -> bool:
        return self.pruned_at is not None

    def describe(self) -> dict:
        """What summary.json, cv_summary.json and optuna_trial.json record of a pruned trial:
        the 0-based step, the epoch (or fold) it was stopped after, the value it reported."""
        return {
            "step": self.pruned_at,
            "step_unit": self.step_unit,
            self.step_unit: self.pruned_at + 1,
            "reported_value": self.last_value,
        }

    def should_prune(self, value: float, step: int, ask: bool = True) -> bool:
        """Report ``value`` at ``step`` and (with ``ask``) ask the pruner."""
        self.last_value = value
        if math.isfinite(value):
            self.trial.report(value, step)
        if ask and self.trial.should_prune():
            self.pruned_at = step
            return True
        return False


class TrialRecord:
    """``optuna_trial.json`` of the trial running in ``run_dir``."""

    def __init__(self, run_dir: Path, trial: TrialSettings) -> None:
        self.path = Path(run_dir) / "optuna_trial.json"
        self.data = {
            "trial_id": trial.trial_id,
            "trial_number": trial.number,
            "study_name": trial.study_name,
            "storage": trial.storage,
            "params": trial.params,
            "value": None,
            "metric": trial.metric,
            "state": "RUNNING",
            "datetime_start": now(),
            "datetime_complete": None,
            "run_dir": str(run_dir),
        }
        self.budget = trial.budget
        write_json(self.path, self.data)

    def finish(
        self, value: float | None, error: BaseException | None = None, pruned: dict | None = None
    ) -> None:
        """Record the outcome; ``pruned`` (:meth:`TrialLink.describe`) marks a trial that the
        pruner stopped (``value`` is then its objective over what it ran)."""
        ok = error is None and value is not None and math.isfinite(value)
        state = "PRUNED" if pruned and error is None else "COMPLETE" if ok else "FAIL"
        reason = None
        if state == "FAIL":
            reason = f"{type(error).__name__}: {error}" if error else f"objective is {value}"
        self.data.update(
            value=value if ok else None,
            state=state,
            datetime_complete=now(),
            reason=reason,
            pruned=pruned,
            **epoch_budget(self.path.parent, self.budget),
        )
        write_json(self.path, self.data)


def epoch_budget(trial_dir: Path, budget: int) -> dict:
    """``epochs_run`` (from the run's summary.json, or its folds') and ``epochs_budget``."""
    run = 0
    for summary in [trial_dir / "summary.json", *sorted(trial_dir.glob("fold_*/results/summary.json"))]:
        if summary.is_file():
            run += int(json.loads(summary.read_text()).get("epochs_completed") or 0)
    return {"epochs_run": run, "epochs_budget": budget}


class TrialJob:
    """The HPO side of one trial's job: the link its runs report to, and its record.

    ``None`` from :meth:`of` outside a search. Only rank zero writes the record.
    """

    def __init__(self, trial: TrialSettings, run_dir: Path) -> None:
        self.link = TrialLink.of(trial)  # None without a pruner; reports only from rank zero
        self.record = TrialRecord(run_dir, trial) if is_rank_zero() else None

    @classmethod
    def of(cls, trial: TrialSettings | None, run_dir: Path) -> TrialJob | None:
        return None if trial is None else cls(trial, run_dir)

    def failed(self, error: BaseException) -> None:
        if self.record is not None:
            self.record.finish(None, error)

    def finish(self, value: float) -> float:
        """Record the objective; a pruned trial ends with :class:`optuna.TrialPruned`."""
        pruned = self.link is not None and self.link.pruned
        if self.record is not None:
            self.record.finish(value, pruned=self.link.describe() if pruned else None)
        if pruned:
            link = self.link
            raise optuna.TrialPruned(
                f"trial {link.number} pruned after {link.step_unit} {link.pruned_at + 1}"
            )
        return value
