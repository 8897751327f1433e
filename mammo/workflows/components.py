"""The parts of one training run, each built from its config node: data, model, callbacks, trainer."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf
from sklearn.utils.class_weight import compute_class_weight

from mammo.artifacts.io import write_csv, write_json
from mammo.artifacts.progress import EpochProgressBar
from mammo.artifacts.run_callbacks import (
    BestModelCheckpoint,
    FiniteLossGuard,
    InterruptGuard,
    LastCheckpoint,
    RandomState,
)
from mammo.core.errors import ConfigError
from mammo.core.train_settings import setting_value
from mammo.distributed.claims import mark_data_prepared, wait_for_prepared_data
from mammo.evaluation.intervals import EvalSettings
from mammo.hpo.trial import TrialSettings
from mammo.hpo.trial_callbacks import EpochStream, PruneOnPlateau
from mammo.models.backbones import weights_source
from mammo.workflows.resume import ContinuedCSVHistory
from mammo.workflows.run_context import Run, job_trial_id

log = logging.getLogger("mammo")


def build_datamodule(run: Run):
    """``instantiate(cfg.data)``, set up for fitting; if setting up fails (e.g. no split is
    possible), what is known of the data is still written.

    In a DDP job the data is prepared once: rank zero reads the headers, hashes the files and
    fills the disk cache, and the other ranks set up after it, reusing all three (the ranks
    Lightning starts begin after rank zero's setup; those a cluster starts wait for it)."""
    datamodule = instantiate(run.cfg.data, _convert_="all")
    wait_for_prepared_data(run.directory)
    try:
        datamodule.setup("fit")
    except BaseException:
        if run.writes and datamodule.manifest is not None:
            write_json(run.directory / "data_manifest.json", datamodule.manifest)
            run.summary.update(data_config=datamodule.describe_samples())
        raise
    finally:
        mark_data_prepared(run.directory)
    return datamodule


def use_fold(run: Run) -> None:
    """Validate on the run's CV fold (none: the one split); the fold assignment goes to ``folds.csv``."""
    if run.fold is None:
        return
    run.datamodule.use_fold(run.fold)
    if run.writes:
        write_csv(run.cv_dir / "folds.csv", run.datamodule.folds_frame())


def record_data(run: Run) -> None:
    """``split.csv``, ``data_manifest.json``, summary.json's ``data_config`` and the run.log lines."""
    datamodule = run.datamodule
    data_config = datamodule.describe()
    run.summary.update(data_config=data_config)
    if run.writes:
        write_csv(run.directory / "split.csv", datamodule.split)
        write_json(run.directory / "data_manifest.json", datamodule.manifest)
    log.info(
        "Found %d samples (%d train, %d val) from %d patients",
        data_config["num_train"] + data_config["num_val"],
        data_config["num_train"],
        data_config["num_val"],
        data_config["num_patients"],
    )
    log.info("Class distribution: %s", data_config["class_distribution"])
    samples = datamodule.samples
    if samples.excluded:
        reasons = Counter(r["reason"] for r in samples.excluded)
        listed = "; ".join(f"{reason} ({n})" for reason, n in reasons.items())
        log.info("Excluded %d row(s): %s", len(samples.excluded), listed)
    if samples.skipped:
        log.info("Skipped %d bad file(s)/row(s); see data_manifest.json", len(samples.skipped))
    log.info("Data manifest sha256: %s", data_config["manifest_sha256"])


def build_model(run: Run):
    """``instantiate(cfg.model)`` (it interpolates the hyperparameters) with what the data decides:
    the classes, their weights and the width of fused embeddings."""
    cfg, datamodule = run.cfg, run.datamodule
    embedding_dim = 0
    if cfg.model.get("embeddings_fusion"):
        embedding_dim = datamodule.attach_embeddings(cfg.data.embeddings_dir)
        log.info("Embeddings fusion: %d-wide embeddings from %s", embedding_dim, cfg.data.embeddings_dir)
    class_labels = datamodule.samples.class_labels
    model = instantiate(
        cfg.model,
        _convert_="all",  # plain lists in the checkpoint's hyper_parameters (weights_only loading)
        num_classes=len(class_labels),
        class_weights=class_weights(cfg.class_weights, datamodule.train_table["label"], len(class_labels)),
        embedding_dim=embedding_dim,
        keep_val_features=bool(cfg.get("save_embeddings", False)),
    )
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info(
        "Initializing %s (freeze_backbone=%s, unfreeze_last_block=%s)",
        cfg.model.arch,
        cfg.freeze_backbone,
        cfg.unfreeze_last_block,
    )
    log.info("Model has %.2fM parameters (%.2fM trainable)", total / 1e6, trainable / 1e6)
    run.summary.update(
        model_config={
            **OmegaConf.to_container(cfg.model, resolve=True),
            "num_classes": len(class_labels),
            "total_params": total,
            "trainable_params": trainable,
            "embeddings_fusion": bool(cfg.model.get("embeddings_fusion")),
            "embeddings_dir": cfg.data.get("embeddings_dir"),
            "embedding_dim": embedding_dim,
            "weights_source": starting_weights(cfg.model),
        }
    )
    model.checkpoint_meta = checkpoint_meta(cfg, run.directory, datamodule)
    return model


def starting_weights(model: DictConfig) -> dict:
    """Where the ``model`` node's backbone starts from (:func:`~mammo.models.backbones.weights_source`)."""
    return weights_source(
        model.backbone, bool(model.pretrained), model.get("weights"), model.get("weights_prefix")
    )


def checkpoint_meta(cfg: DictConfig, run_dir: Path, datamodule) -> dict:
    """What ``best_model.pt`` carries besides the weights: enough to preprocess new images alike."""
    return {
        "arch": cfg.model.arch,
        "backbone": cfg.model.backbone,
        "class_labels": datamodule.samples.class_labels,
        "img_size": datamodule.preprocessing.settings()["img_size"],
        "mean": list(cfg.model.mean),
        "std": list(cfg.model.std),
        "preprocessing": datamodule.preprocessing.settings(),
        "run_id": run_dir.name,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


def class_weights(setting, train_labels, num_classes: int) -> list[float] | None:
    """``auto`` -> inverse class frequency of the training split (scikit-learn's "balanced");
    ``none`` -> unweighted; a list -> used as given (one weight per class)."""
    if setting is None or str(setting).lower() == "none":
        return None
    if str(setting).lower() == "auto":
        classes = np.arange(num_classes)
        return compute_class_weight("balanced", classes=classes, y=np.asarray(train_labels)).tolist()
    weights = [float(w) for w in setting]
    if len(weights) != num_classes:
        raise ConfigError(f"class_weights: expected {num_classes} weights, got {len(weights)}")
    return weights


def build_callbacks(run: Run) -> list:
    """The config's callbacks (``cfg.callbacks``), the run's own writers and guards, and with an
    HPO trial the pruning report and the epoch stream."""
    cfg, run_dir, link = run.cfg, run.directory, run.link
    configured = [instantiate(c) for c in cfg.callbacks.values() if c]
    callbacks = [*configured, *progress_bar(cfg, configured)] + [
        run.artifacts,
        BestModelCheckpoint(run_dir, cfg.monitor, cfg.monitor_mode),
        LastCheckpoint(run_dir),
        RandomState(),
        FiniteLossGuard(),
        InterruptGuard(),
    ]
    if link is not None:
        callbacks.append(PruneOnPlateau(link, cfg.monitor))
    if cfg.hpo.get("trial") is not None and run.writes:
        stream = Path(cfg.paths.run_dir) / f"hpo_trial{cfg.hpo.trial}.jsonl"  # the trial's directory
        callbacks.append(EpochStream(stream, job_trial_id(cfg), run.fold))
    return callbacks


def progress_bar(cfg: DictConfig, configured: list) -> list:
    """mammo's Rich progress bar (epochs counted from one, as run.log counts them) unless the
    config has a progress bar of its own or turns it off (``trainer.enable_progress_bar=false``)."""
    has_one = any(isinstance(c, ProgressBar) for c in configured)
    if has_one or not cfg.trainer.get("enable_progress_bar", True):
        return []
    return [EpochProgressBar()]


def start_trackers(loggers: list, summary, cfg: DictConfig) -> None:
    """Loggers that track the run elsewhere (``logger=mlflow|wandb``, those with a ``record_run``)
    get summary.json's hyperparameters first (and the composed config, those that keep one),
    summary.json's ``integration`` their run id (``mlflow_run_id``, ``wandb_run_id``), and the
    run's end, failures included, as summary.json records it."""
    for tracker in (logger for logger in loggers if hasattr(logger, "record_run")):
        tracker.log_hyperparams(summary.data.get("hyperparameters", {}))
        if hasattr(tracker, "record_config"):
            tracker.record_config(OmegaConf.to_container(cfg, resolve=True))
        summary.update(integration={tracker.integration_key: tracker.run_id})
        summary.when_finished(tracker.record_run)  # the end as summary.json records it


def build_trainer(run: Run, callbacks: list):
    """``instantiate(cfg.trainer)`` with the callbacks and the config's loggers (in the run's directory)."""
    cfg = run.cfg
    loggers = (
        [instantiate(c, save_dir=str(run.directory)) for c in cfg.logger.values() if c] if cfg.logger else []
    )
    start_trackers(loggers, run.summary, cfg)
    if cfg.get("resume"):  # Lightning's CSVLogger would delete the history of the epochs before
        kept = (ContinuedCSVHistory.kept(logger) for logger in loggers if isinstance(logger, CSVLogger))
        callbacks = [*callbacks, *filter(None, kept)]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    run.summary.update(
        environment={
            "accelerator": type(trainer.accelerator).__name__,
            "precision": str(trainer.precision),
            "strategy": type(trainer.strategy).__name__,
            "world_size": trainer.num_devices * trainer.num_nodes,
            "num_nodes": trainer.num_nodes,
        }
    )
    return trainer


def eval_settings(cfg) -> EvalSettings:
    """``eval.bootstrap``, ``eval.aggregate`` (the defaults of ``conf/eval/default.yaml`` for a
    resumed run whose config predates them) and the run's ``seed``."""
    return EvalSettings(
        int(OmegaConf.select(cfg, "eval.bootstrap", default=1000)),
        str(OmegaConf.select(cfg, "eval.aggregate", default="mean")),
        int(cfg.seed),
    )


def runs_all_folds(cfg) -> bool:
    """Whether this job runs every CV fold itself (``cv=kfold`` without ``cv.fold``)."""
    return cfg.cv.get("folds") is not None and cfg.cv.get("fold") is None


def trial_settings(cfg) -> TrialSettings | None:
    """The Optuna trial this job runs (``hpo.trial`` set by the sweeper), ``None`` outside a search."""
    hpo = cfg.hpo
    if hpo.get("trial") is None:
        return None
    return TrialSettings(
        study_name=str(hpo.study_name),
        storage=None if not hpo.get("storage") else str(hpo.storage),
        number=int(hpo.trial),
        pruner=None if hpo.get("pruner") is None else instantiate(hpo.pruner),
        params={name: setting_value(cfg, name) for name in (hpo.get("params") or {})},
        metric=str(cfg.monitor),
        budget=int(cfg.epochs) * int(cfg.cv.folds if runs_all_folds(cfg) else 1),
        step_unit="fold" if runs_all_folds(cfg) else "epoch",
    )
