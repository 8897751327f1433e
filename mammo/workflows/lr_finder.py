"""``tune=lr_find``: Lightning's learning-rate range test on the run's model and data.

``Tuner.lr_find`` trains ``tune.num_training`` batches at learning rates growing from
``tune.min_lr`` to ``tune.max_lr``, records each batch's loss, and suggests the rate where the loss
falls fastest; the model's weights are then restored as they were. It runs on a trainer of its
own (the run's accelerator and precision, none of its callbacks or loggers), once per job: before
the folds of ``cv=kfold``. Writes ``plots/lr_find.png`` and ``metrics/lr_find.json``; with
``tune.apply=true`` the run then trains at the suggestion (summary.json: ``learning_rate_source``),
else the job ends after the finder.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from hydra.utils import instantiate

from mammo.artifacts.io import write_json
from mammo.core.errors import ConfigError

log = logging.getLogger("mammo")


@dataclass(frozen=True)
class TuneSettings:
    """``conf/tune/``: the finder's range and steps, and whether the run trains at its suggestion."""

    min_lr: float = 1e-7
    max_lr: float = 1.0
    num_training: int = 100
    apply: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.min_lr < self.max_lr:
            raise ConfigError(
                f"tune.min_lr={self.min_lr}, tune.max_lr={self.max_lr}: need 0 < min_lr < max_lr"
            )
        if self.num_training < 2:
            raise ConfigError(f"tune.num_training={self.num_training}: needs at least 2 steps")


def tune_settings(cfg) -> TuneSettings | None:
    """The run's ``tune=lr_find`` settings, ``None`` without a finder; refused under several
    processes (DDP), where one process would tune the model the others train."""
    tune = cfg.get("tune") or {}
    if tune.get("mode") != "lr_find":
        return None
    devices = cfg.trainer.get("devices", 1)
    if str(cfg.trainer.get("strategy", "")).startswith("ddp") or devices not in (1, "1"):
        raise ConfigError(
            "tune=lr_find runs on one process: find the learning rate with trainer.devices=1, then "
            "train with trainer=ddp learning_rate=<its suggestion>"
        )
    settings = TuneSettings(
        float(tune.min_lr), float(tune.max_lr), int(tune.num_training), bool(tune.get("apply", False))
    )
    if cfg.cv.get("folds") is not None and not settings.apply:
        raise ConfigError(
            "tune=lr_find under cv=kfold runs once, before the folds, and trains them at its suggestion: "
            "add tune.apply=true (or find the rate on a single run first)"
        )
    return settings


def tune_learning_rate(run) -> bool:
    """``tune=lr_find`` before the run trains (once per job: a CV job's later folds take the first
    fold's record from the CV directory); returns whether the run goes on to train (``tune.apply``),
    at the suggestion, recorded in summary.json."""
    cfg = run.cfg
    settings = tune_settings(cfg)
    if settings is None:
        return True
    where = run.cv_dir or run.directory
    saved = where / "metrics" / "lr_find.json"
    if run.fold is not None and run.fold > 1 and saved.is_file():
        record = json.loads(saved.read_text())
    else:
        record = find_learning_rate(cfg.trainer, run.model, run.datamodule, where, settings)
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # the finder drew random numbers
    suggestion = record["suggestion"]
    run.summary.update(lr_find={"suggestion": suggestion, "file": str(saved)})
    if not settings.apply:
        run.summary.finish("completed", epochs_completed=0)
        return False
    if suggestion is None:
        raise ConfigError(f"tune.apply=true: the finder suggested no learning rate (see {saved})")
    run.model.hparams.learning_rate = suggestion
    run.summary.update(
        hyperparameters={"learning_rate": suggestion},
        learning_rate_source={"tune": "lr_find", "configured": float(cfg.learning_rate), "file": str(saved)},
    )
    log.info(
        "tune.apply=true: training at learning_rate=%.3g (configured: %g)", suggestion, cfg.learning_rate
    )
    return True


def find_learning_rate(trainer_cfg, model, datamodule, out: Path, settings: TuneSettings) -> dict:
    """Run the range test with a trainer built from ``trainer_cfg`` (no callbacks, no logger);
    write ``out/plots/lr_find.png`` and ``out/metrics/lr_find.json``; returns the record."""
    import matplotlib.pyplot as plt
    from lightning.pytorch.tuner import Tuner

    trainer = instantiate(
        trainer_cfg,
        callbacks=[],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        max_epochs=-1,  # the steps bound it, however few batches an epoch has
        default_root_dir=str(out / "checkpoints"),  # the finder's temporary copy of the model
    )
    finder = Tuner(trainer).lr_find(
        model,
        datamodule=datamodule,
        min_lr=settings.min_lr,
        max_lr=settings.max_lr,
        num_training=settings.num_training,
    )
    suggestion = finder.suggestion()
    figure = finder.plot(suggest=suggestion is not None)
    said = f"suggestion {suggestion:.3g} (red)" if suggestion is not None else "no suggestion"
    figure.axes[0].set_title(f"Learning-rate finder, {settings.num_training} steps: {said}")
    (out / "plots").mkdir(parents=True, exist_ok=True)
    figure.savefig(out / "plots" / "lr_find.png", dpi=120)
    plt.close(figure)
    record = {
        "suggestion": suggestion,
        "lr": [float(v) for v in finder.results["lr"]],
        "loss": [float(v) if math.isfinite(v) else None for v in finder.results["loss"]],
        "min_lr": settings.min_lr,
        "max_lr": settings.max_lr,
        "num_training": settings.num_training,
    }
    write_json(out / "metrics" / "lr_find.json", record)
    said = f"{suggestion:.3g}" if suggestion is not None else "none (the loss never fell steadily)"
    log.info(
        "Learning-rate finder: suggestion %s (%d steps from %g to %g): %s, %s",
        said,
        len(record["lr"]),
        settings.min_lr,
        settings.max_lr,
        out / "plots" / "lr_find.png",
        out / "metrics" / "lr_find.json",
    )
    return record
