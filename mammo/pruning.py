"""Optuna pruning from inside a trial's job (``hydra.sweeper.pruner``).

The released hydra-optuna-sweeper asks and tells in the sweep process and never hands the trial
to the job, so nothing could prune. Here the job finds its own trial through the study's
storage (study name, storage URL and pruner from the sweeper config, trial number from
``hpo.trial``), reports the monitored metric and asks the pruner:

* a plain trial reports after every validation epoch (step = Lightning's 0-based
  ``current_epoch``, as in Optuna's own Lightning callback) and stops training
  at the end of the epoch the pruner rejects (:class:`PruneOnPlateau` callback); the last
  epoch is reported but not judged (the trial has run in full);
* a trial that runs all ``cv.folds`` in its job reports after every fold (step = fold - 1) the
  running mean of the folds' monitored metric, and skips the remaining folds when rejected.

A pruned job finishes its run directory (status ``pruned`` in summary.json and
optuna_trial.json, with the step reached) and raises :class:`optuna.TrialPruned`, which the
sweeper records as PRUNED. So a pruner's ``n_warmup_steps=2`` lets every trial run 2 epochs
(or 2 folds) before it can be pruned.
"""

from __future__ import annotations

import logging

import lightning as L

from mammo.distributed import broadcast_from_rank_zero

log = logging.getLogger("mammo")


class TrialLink:
    """This job's Optuna trial, reached through the study's storage."""

    def __init__(
        self, study_name: str, storage: str, number: int, pruner, step_unit: str, connect: bool = True
    ):
        import optuna

        self.number, self.step_unit = number, step_unit
        self.pruned_at: int | None = None  # the (0-based) step at which the pruner stopped this trial
        self.last_value: float | None = None
        self.trial = None  # the other ranks of a DDP job only follow rank zero's decision
        if connect:
            study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
            trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
            self.trial = optuna.trial.Trial(study, trial_id)

    @classmethod
    def from_job(cls, cfg) -> TrialLink | None:
        """The link of a sweep job with a pruner and a storage; ``None`` otherwise."""
        from hydra.core.hydra_config import HydraConfig
        from hydra.utils import instantiate

        if cfg.hpo.get("trial") is None or not HydraConfig.initialized():
            return None
        sweeper = HydraConfig.get().sweeper
        if sweeper.get("pruner") is None:
            return None
        if not sweeper.get("storage"):
            log.warning(
                "hydra.sweeper.pruner needs a storage that jobs reach (hydra.sweeper.storage): not pruning"
            )
            return None
        from mammo.distributed import is_rank_zero

        unit = "fold" if cfg.cv.get("folds") is not None and cfg.cv.get("fold") is None else "epoch"
        return cls(
            str(sweeper.study_name),
            str(sweeper.storage),
            int(cfg.hpo.trial),
            instantiate(sweeper.pruner),
            unit,
            connect=is_rank_zero(),
        )

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
        import math

        self.last_value = value
        if math.isfinite(value):
            self.trial.report(value, step)
        if ask and self.trial.should_prune():
            self.pruned_at = step
            return True
        return False


class PruneOnPlateau(L.Callback):
    """Report the monitored metric after each validation epoch; end the run at the end of the
    epoch the pruner rejects. Under DDP rank zero asks and the decision is broadcast."""

    def __init__(self, link: TrialLink | None, monitor: str) -> None:
        self.link, self.monitor = link, monitor

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = False
        if self.link is not None and trainer.is_global_zero and self.monitor in trainer.callback_metrics:
            step = trainer.current_epoch
            # the last epoch is reported but never pruned: the trial has run in full by then
            last = step + 1 >= (trainer.max_epochs or 0)
            prune = self.link.should_prune(float(trainer.callback_metrics[self.monitor]), step, ask=not last)
            if prune:
                log.info(
                    "Optuna pruned trial %d at epoch %d (%s %.4f): stopping after this epoch",
                    self.link.number,
                    step + 1,
                    self.monitor,
                    self.link.last_value,
                )
        if broadcast_from_rank_zero(prune):
            trainer.should_stop = True
