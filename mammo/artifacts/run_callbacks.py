"""Lightning callbacks that write a training run's artifacts into its directory.

``BestModelCheckpoint`` is Lightning's ``ModelCheckpoint`` writing ``best_model.pt`` (weights and
mammo's metadata, no optimizer state). ``RunArtifacts`` is the single writer of run.log's epoch
lines, ``train_history.{json,csv}``, ``val_predictions.csv``, ``metrics/val_metrics.*`` and
``plots/``; whenever the checkpoint callback records a new best score it rewrites the best-epoch
files, so they always describe the best epoch, even if the run dies later. Under DDP only global
rank zero writes; the validation outputs it writes are already gathered from all ranks.
"""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from mammo.artifacts.files import predictions_frame, write_history, write_metrics, write_predictions
from mammo.artifacts.io import write_npy
from mammo.artifacts.plots import plot_confusion, plot_train_curves
from mammo.core.errors import TrainingError
from mammo.core.interrupts import raise_if_requested
from mammo.evaluation.metrics import SHORT_NAMES
from mammo.models.schedules import learning_rates

log = logging.getLogger("mammo")


class BestModelCheckpoint(ModelCheckpoint):
    """``best_model.pt`` in the run directory, replaced whenever the monitored metric improves."""

    FILE_EXTENSION = ".pt"

    def __init__(self, dirpath: str | Path, monitor: str, mode: str) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="best_model",
            monitor=monitor,
            mode=mode,
            save_top_k=1,
            save_weights_only=True,
            auto_insert_metric_name=False,
            enable_version_counter=False,
            # save right after validation, before RunArtifacts.on_train_epoch_end reads the score
            save_on_train_epoch_end=False,
        )


class LastCheckpoint(ModelCheckpoint):
    """``checkpoints/last.ckpt`` at the end of every epoch: the full training state (weights,
    optimizer, scheduler, loops, callbacks) that ``resume=<run dir>`` continues from."""

    def __init__(self, run_dir: str | Path) -> None:
        super().__init__(
            dirpath=Path(run_dir) / "checkpoints",
            filename="last",
            save_top_k=1,
            enable_version_counter=False,
            save_on_train_epoch_end=True,  # after validation and RunArtifacts: a whole epoch
        )


class RandomState(L.Callback):
    """Python, NumPy and torch (CPU and CUDA) random states in checkpoints, restored on resume, so
    that a resumed run draws the same shuffles, augmentations and dropout masks as an
    uninterrupted one."""

    def state_dict(self) -> dict:
        state = {"python": random.getstate(), "numpy": numpy_state(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        random.setstate(state["python"])
        set_numpy_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def numpy_state() -> tuple:
    """NumPy's global random state with its key array as a tensor: a checkpoint then holds only
    what ``torch.load(weights_only=True)`` reads (a NumPy array would need unpickling)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached


def set_numpy_state(state) -> None:
    name, keys, pos, has_gauss, cached = state
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, cached))


class InterruptGuard(L.Callback):
    """Stop at the next batch when a Ctrl-C's ``KeyboardInterrupt`` was lost (``mammo.core.interrupts``);
    raised here, Lightning shuts down as for any Ctrl-C and the run is recorded as interrupted."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        raise_if_requested()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0):
        raise_if_requested()


class FiniteLossGuard(L.Callback):
    """Stop the run with a clear error as soon as the training loss is NaN or infinite (a
    diverged run; an HPO trial is then recorded as failed instead of scoring garbage).

    On the CPU every step is checked at once. On a GPU reading the loss would wait for the step
    to finish (a host sync per step), so the first bad step is recorded on the device and checked
    every ``check_every`` steps and before each validation: the run stops within that many steps,
    before a diverged model can be validated or saved. ``defer`` forces either way.
    """

    def __init__(self, check_every: int = 50, defer: bool | None = None) -> None:
        self.check_every, self.defer = check_every, defer
        self.first_bad: torch.Tensor | None = None  # [batch index, loss] of the first bad step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        loss = loss.detach().float()
        if not (self.defer if self.defer is not None else loss.device.type != "cpu"):
            self._raise_if_bad(trainer, pl_module, batch_idx, float(loss))
            return
        if self.first_bad is None or self.first_bad.device != loss.device:
            self.first_bad = torch.tensor([-1.0, 0.0], device=loss.device)
        step = torch.stack([torch.full_like(loss, batch_idx), loss])
        fresh = (self.first_bad[0] < 0) & ~torch.isfinite(loss)
        self.first_bad = torch.where(fresh, step, self.first_bad)
        if (batch_idx + 1) % self.check_every == 0:
            self._check(trainer, pl_module)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._check(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._check(trainer, pl_module)

    def _check(self, trainer, pl_module) -> None:
        if self.first_bad is not None:
            batch_idx, loss = self.first_bad.tolist()  # the one host sync
            if batch_idx >= 0:
                self._raise_if_bad(trainer, pl_module, int(batch_idx), loss)

    def _raise_if_bad(self, trainer, pl_module, batch_idx: int, loss: float) -> None:
        if not math.isfinite(loss):
            raise TrainingError(
                f"training loss is {loss} at epoch {trainer.current_epoch + 1}, batch {batch_idx + 1}"
                f" (learning_rate={pl_module.hparams.get('learning_rate')}); the run diverged"
            )


class RunArtifacts(L.Callback):
    """Epoch log lines, history, best-epoch predictions/metrics and final plots.

    Args:
        run_dir: the run directory.
        val_samples: the validation rows of the sample table (index = dataset row index).
        class_labels: density label of each class index, e.g. ``[1, 2, 3, 4]``.
        monitor: the metric that selects the best epoch (``val_kappa``).
    """

    def __init__(
        self, run_dir: Path, val_samples: pd.DataFrame, class_labels: list[int], monitor: str
    ) -> None:
        self.run_dir = Path(run_dir)
        self.val_samples = val_samples
        self.class_labels = list(class_labels)
        self.monitor = monitor
        self.history: list[dict] = []
        self.best: dict | None = None
        self._best_score: float | None = None
        self._best_outputs = None  # the best epoch's ValOutputs (probabilities, metrics, confusion)
        self._epoch_lrs: dict[str, float] = {}  # the learning rates this epoch trains at

    # ----------------------------------------------------------------- per epoch
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_lrs = learning_rates(trainer.optimizers)
        if trainer.is_global_zero:
            log.info("Epoch %d/%d", trainer.current_epoch + 1, trainer.max_epochs)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        row = {"epoch": trainer.current_epoch + 1}
        row.update({k: metrics[k] for k in ("train_loss", "train_acc", "train_kappa") if k in metrics})
        row.update({k: v for k, v in metrics.items() if k.startswith("val_")})
        row.update(self._epoch_lrs or learning_rates(trainer.optimizers))
        self.history.append(row)
        outputs = getattr(pl_module, "val_outputs", None)
        new_best = outputs is not None and self._is_new_best(trainer)
        if new_best:
            self.best = row
        if not trainer.is_global_zero:  # under DDP the other ranks keep the history, write nothing
            return
        write_history(self.run_dir, self.history)
        log.info(_line(row, ("train_loss", "train_acc", "train_kappa")))
        log.info(_line(row, ("val_loss", "val_acc", "val_kappa", "val_macro_f1", "val_auc")))
        if new_best:
            self._write_best_epoch(outputs, row["epoch"])
            log.info("✓ New best model (%s: %.4f)", self.monitor.removeprefix("val_"), row[self.monitor])

    def _is_new_best(self, trainer: L.Trainer) -> bool:
        ckpt = trainer.checkpoint_callback
        if ckpt is None or ckpt.best_model_score is None:  # no checkpointing (fast_dev_run)
            return True
        score = float(ckpt.best_model_score)
        if self._best_score is not None and score == self._best_score:
            return False
        self._best_score = score
        return True

    def _write_best_epoch(self, outputs, epoch: int) -> None:
        samples = self.val_samples.loc[outputs.rows.numpy()]
        frame = predictions_frame(samples, outputs.probs.numpy(), self.class_labels)
        write_predictions(self.run_dir / "val_predictions.csv", frame)
        extra = {
            "epoch": epoch,
            "num_samples": len(frame),
            "class_labels": self.class_labels,
            "confusion_matrix": outputs.confusion,
        }
        write_metrics(self.run_dir / "metrics", "val", outputs.metrics, extra)
        if outputs.features is not None:  # rows aligned with val_predictions.csv
            write_npy(self.run_dir / "embeddings_val.npy", outputs.features.numpy().astype("float32"))
        self._best_outputs = outputs

    # ----------------------------------------------------------------- end of fit
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.history or not trainer.is_global_zero:
            return
        plot_train_curves(self.history, self.run_dir / "plots" / "train_curves.png")
        best = self._best_outputs
        if best is not None:
            plot_confusion(
                best.confusion,
                self.class_labels,
                self.run_dir / "plots" / "confusion_matrix.png",
                title=f"Validation, best epoch {self.best['epoch']}",
            )
            headline = ", ".join(
                f"{SHORT_NAMES[k]} {v:.3f}"
                for k, v in best.metrics.items()
                if k in ("accuracy", "kappa_quadratic", "macro_f1", "auc_ovr")
            )
            plot_confusion(
                best.confusion,
                self.class_labels,
                self.run_dir / "metrics" / "val_metrics.png",
                title=headline,
            )

    # ----------------------------------------------------------------- resume
    def state_dict(self) -> dict:
        """Saved in checkpoints/last.ckpt, so a resumed run continues its history and best epoch."""
        best = self._best_outputs
        return {
            "history": self.history,
            "best": self.best,
            "best_score": self._best_score,
            "best_metrics": None if best is None else dict(best.metrics),
            "best_confusion": None if best is None else best.confusion,
        }

    def load_state_dict(self, state: dict) -> None:
        self.history, self.best, self._best_score = state["history"], state["best"], state["best_score"]
        if state["best_metrics"] is not None:
            self._best_outputs = SimpleNamespace(
                metrics=state["best_metrics"], confusion=state["best_confusion"]
            )

    def best_metrics(self) -> dict[str, float]:
        """``best_epoch`` and ``best_<metric>`` for every val metric of the best epoch."""
        if self.best is None:
            return {}
        out = {"best_epoch": self.best["epoch"]}
        out.update({f"best_{k}": v for k, v in self.best.items() if k.startswith("val_")})
        return out


def _line(row: dict, keys: tuple[str, ...]) -> str:
    parts = [f"{k}: {row[k]:.4f}" for k in keys if k in row and math.isfinite(row[k])]
    return " | ".join(parts)
