"""Lightning callbacks of a trial's run: report to the pruner, stream the epochs."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import lightning as L

from mammo.artifacts.summary import now
from mammo.distributed.collectives import broadcast_from_rank_zero
from mammo.hpo.trial import TrialLink

log = logging.getLogger("mammo")


class PruneOnPlateau(L.Callback):
    """Report the monitored metric after each validation epoch (step = Lightning's 0-based
    ``current_epoch``, as in Optuna's own Lightning callback); end the run at the end of the epoch
    the pruner rejects. The last epoch is reported but not judged (the trial has run in full).
    Under DDP rank zero asks and the decision is broadcast."""

    def __init__(self, link: TrialLink | None, monitor: str) -> None:
        self.link, self.monitor = link, monitor

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = False
        if self.link is not None and trainer.is_global_zero and self.monitor in trainer.callback_metrics:
            step = trainer.current_epoch
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


class EpochStream(L.Callback):
    """Appends one JSON line per validation epoch to ``path`` (``hpo_trial<n>.jsonl``)."""

    def __init__(self, path: Path, trial_name: str, fold: int | None = None) -> None:
        self.path, self.trial_name, self.fold = Path(path), trial_name, fold

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after the epoch's validation: callback_metrics hold this epoch's train_* and val_*
        record = {"trial_name": self.trial_name, "iteration": trainer.current_epoch + 1}
        if self.fold is not None:
            record["fold"] = self.fold
        metrics = {k: float(v) for k, v in sorted(trainer.callback_metrics.items())}
        record.update({k: v if math.isfinite(v) else None for k, v in metrics.items()})
        record["timestamp"] = now()
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
