"""Train a density classifier: ``python -m mammo.train [key=value ...]``.

Hydra composes ``conf/train.yaml``; this entry instantiates the datamodule, model and trainer,
fits, and returns the best epoch's monitored metric (the objective for sweeps). Heavy imports
live inside ``train`` so that ``--help`` stays fast.
"""

from __future__ import annotations

import logging
import signal
import sys
import traceback
from collections import Counter
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from mammo import CONFIG_DIR
from mammo.artifacts.rundir import register_resolvers
from mammo.artifacts.runlog import FILE_ONLY

register_resolvers()
log = logging.getLogger("mammo")

HYPERPARAMETERS = (
    "epochs",
    "batch_size",
    "img_size",
    "learning_rate",
    "optimizer",
    "scheduler",
    "warmup_epochs",
    "weight_decay",
    "class_weights",
    "train_augment",
    "backbone_lr_factor",
    "dropout_rate",
    "early_stopping_patience",
    "monitor",
    "deterministic",
)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def hydra_entry(cfg: DictConfig) -> float:
    return train(cfg)


def main() -> None:
    """``python -m mammo.train [overrides]``: Hydra's entry, stoppable by Ctrl-C at any moment.

    SIGINT raises ``KeyboardInterrupt`` even where the process was started with it ignored (a
    background job of a script inherits that), and Lightning's graceful shutdown, which ignores
    SIGINT from then on, is undone when the run ends. An interrupted run (Ctrl-C or SIGTERM) has
    recorded its status and resume command by the time it gets here; it ends with one line and
    exit code 1, like any other failed run.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        hydra_entry()
    except KeyboardInterrupt as exc:
        sys.stderr.write(f"Interrupted{f': {exc}' if str(exc) else ''}\n")
        raise SystemExit(1) from None
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def train(cfg: DictConfig) -> float:
    """Run one training job in Hydra's output directory; returns ``best_<monitor>``, or with
    ``cv=kfold`` and no ``cv.fold`` the mean over all folds, trained one after another here."""
    from hydra.core.hydra_config import HydraConfig

    from mammo.distributed import finish_job, is_rank_zero, release_claims

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if cfg.get("resume"):
        cfg = _original_config(cfg, run_dir)
    record = link = None
    if cfg.hpo.get("trial") is not None:
        from mammo.pruning import TrialLink

        link = TrialLink.from_job(cfg)  # None without a pruner; reports only from rank zero
        if is_rank_zero():
            from mammo.hpo import TrialRecord

            record = TrialRecord(run_dir, cfg)
    try:
        check_settings(cfg, run_dir)
        if cfg.cv.folds is not None and cfg.cv.fold is None:
            from mammo.cv import run_all_folds

            value = run_all_folds(cfg, run_dir, link=link)
        else:
            cv_dir = Path(cfg.paths.cv_dir) if cfg.cv.folds is not None else None
            value = run(cfg, run_dir, fold=cfg.cv.fold, cv_dir=cv_dir, link=link)
    except BaseException as exc:
        if record is not None:
            record.finish(None, unwrap_worker_error(exc))
        raise
    finally:  # DDP: the ranks this job started end with it; the next job of a sweep starts its own
        finish_job()
        release_claims(run_dir)
    pruned = link is not None and link.pruned_at is not None
    if record is not None:
        record.finish(value, pruned=link.describe() if pruned else None)
    if pruned:
        import optuna

        raise optuna.TrialPruned(f"trial {link.number} pruned after {link.step_unit} {link.pruned_at + 1}")
    return value


def run(
    cfg: DictConfig,
    run_dir: Path,
    fold: int | None = None,
    datamodule=None,
    cv_dir: Path | None = None,
    link=None,
) -> float:
    """One training run (or one CV fold) into ``run_dir``.

    Args:
        fold: the CV fold this run validates on (recorded as ``integration.cv_fold``).
        datamodule: a set-up datamodule to reuse (the folds of one process share it).
        cv_dir: where the fold assignment (``folds.csv``) goes.
        link: the HPO trial to report every epoch to (``mammo.pruning.TrialLink``), which may
            stop the run early; it then ends with status ``pruned``.
    """
    from mammo.artifacts.io import as_output_error

    run_dir.mkdir(parents=True, exist_ok=True)
    summary = start_summary(cfg, run_dir, fold)
    log.info(
        "Starting density classification training%s", f" (fold {fold} of {cfg.cv.folds})" if fold else ""
    )
    log.info("Run directory: %s", run_dir)
    try:
        return _fit(cfg, run_dir, summary, fold, datamodule, cv_dir, link)
    except BaseException as exc:
        exc = as_output_error(unwrap_worker_error(exc), run_dir)
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        summary.finish(status, error={"type": type(exc).__name__, "message": str(exc)})
        log.error("Run %s: %s: %s (run dir: %s)", status, type(exc).__name__, exc, run_dir)
        log.error(traceback.format_exc().rstrip(), extra=FILE_ONLY)
        raise exc from None


def check_settings(cfg: DictConfig, run_dir: Path) -> None:
    """Before any work: a bad value stops the run with one line naming its key
    (``mammo.settings``), and the run directory's summary.json says failed."""
    from mammo.errors import ConfigError
    from mammo.settings import check_train_settings

    try:
        check_train_settings(cfg)
    except ConfigError as exc:
        start_summary(cfg, run_dir).finish("failed", error={"type": type(exc).__name__, "message": str(exc)})
        log.error("Run failed: %s", exc)
        raise


def start_summary(cfg: DictConfig, run_dir: Path, fold: int | None = None):
    """The run's ``summary.json`` (status ``running``), with the settings it was asked for; a
    resumed run continues its own file. Under DDP only rank zero writes it."""
    from mammo.artifacts.summary import RunSummary
    from mammo.distributed import is_rank_zero
    from mammo.settings import plain

    run_id = f"fold_{fold}" if fold is not None else run_dir.name
    summary = RunSummary(
        run_dir / "summary.json", "density_classification", run_id, cfg.seed, write=is_rank_zero()
    )
    if cfg.get("resume"):
        summary.continue_from_file()
    summary.update(
        hyperparameters={"arch": cfg.model.arch, **{k: plain(cfg[k]) for k in HYPERPARAMETERS}},
        integration={"cv_fold": fold, "optuna_trial_id": _trial_id(cfg)},
    )
    return summary


def _fit(
    cfg: DictConfig, run_dir: Path, summary, fold: int | None, datamodule, cv_dir: Path | None, link=None
) -> float:
    import lightning as L
    from hydra.utils import instantiate

    from mammo.artifacts.callbacks import (
        BestModelCheckpoint,
        FiniteLossGuard,
        LastCheckpoint,
        RandomState,
        RunArtifacts,
    )
    from mammo.artifacts.io import write_csv, write_json
    from mammo.artifacts.runlog import route_library_logs
    from mammo.distributed import is_rank_zero

    route_library_logs()
    writes = is_rank_zero()  # under DDP only global rank zero writes the run directory
    if datamodule is None:
        datamodule = instantiate(cfg.data, _convert_="all")
        try:
            datamodule.setup("fit")
        except BaseException:  # e.g. no split possible: keep what is known of the data
            if writes and datamodule.manifest is not None:
                write_json(run_dir / "data_manifest.json", datamodule.manifest)
                summary.update(data_config=datamodule.describe_samples())
            raise
    if fold is not None:
        datamodule.use_fold(fold)
        if writes:
            write_csv(cv_dir / "folds.csv", datamodule.folds_frame())
    # seeded after the data is ready (preparing it may draw random numbers), so that a fold
    # trains the same whether it runs alone or after other folds in one process
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data_config = datamodule.describe()
    summary.update(data_config=data_config)
    if writes:
        write_csv(run_dir / "split.csv", datamodule.split)
        write_json(run_dir / "data_manifest.json", datamodule.manifest)
    log.info(
        "Found %d samples (%d train, %d val) from %d patients",
        data_config["num_train"] + data_config["num_val"],
        data_config["num_train"],
        data_config["num_val"],
        data_config["num_patients"],
    )
    log.info("Class distribution: %s", data_config["class_distribution"])
    if datamodule.samples.excluded:
        reasons = Counter(r["reason"] for r in datamodule.samples.excluded)
        log.info(
            "Excluded %d row(s): %s",
            len(datamodule.samples.excluded),
            "; ".join(f"{reason} ({n})" for reason, n in reasons.items()),
        )
    if datamodule.samples.skipped:
        log.info("Skipped %d bad file(s)/row(s); see data_manifest.json", len(datamodule.samples.skipped))
    log.info("Data manifest sha256: %s", data_config["manifest_sha256"])

    embedding_dim = 0
    if cfg.model.get("embeddings_fusion"):
        embedding_dim = datamodule.attach_embeddings(cfg.data.embeddings_dir)
        log.info("Embeddings fusion: %d-wide embeddings from %s", embedding_dim, cfg.data.embeddings_dir)
    class_labels = datamodule.samples.class_labels
    model = instantiate(  # the hyperparameters come with cfg.model (it interpolates them); these
        cfg.model,  # are what the data decides
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
    summary.update(
        model_config={
            **OmegaConf.to_container(cfg.model, resolve=True),
            "num_classes": len(class_labels),
            "freeze_backbone": cfg.freeze_backbone,
            "unfreeze_last_block": cfg.unfreeze_last_block,
            "total_params": total,
            "trainable_params": trainable,
            "embeddings_fusion": bool(cfg.model.get("embeddings_fusion")),
            "embeddings_dir": cfg.data.get("embeddings_dir"),
            "embedding_dim": embedding_dim,
        }
    )
    model.checkpoint_meta = {
        "arch": cfg.model.arch,
        "backbone": cfg.model.backbone,
        "class_labels": class_labels,
        "img_size": cfg.img_size,
        "mean": list(cfg.model.mean),
        "std": list(cfg.model.std),
        "preprocessing": datamodule.preprocessing.settings(),
        "run_id": run_dir.name,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }

    artifacts = RunArtifacts(run_dir, datamodule.val_table, class_labels, cfg.monitor)
    checkpoint = BestModelCheckpoint(run_dir, cfg.monitor, cfg.monitor_mode)
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c] + [
        artifacts,
        checkpoint,
        LastCheckpoint(run_dir),
        RandomState(),
        FiniteLossGuard(),
    ]
    if link is not None:
        from mammo.pruning import PruneOnPlateau

        callbacks.append(PruneOnPlateau(link, cfg.monitor))
    if cfg.hpo.get("trial") is not None and writes:
        from hydra.core.hydra_config import HydraConfig

        from mammo.hpo import EpochStream

        trial_dir = Path(HydraConfig.get().runtime.output_dir)
        stream = trial_dir / f"hpo_trial{cfg.hpo.trial}.jsonl"
        callbacks.append(EpochStream(stream, _trial_id(cfg), fold))
    loggers = [instantiate(c, save_dir=str(run_dir)) for c in cfg.logger.values() if c] if cfg.logger else []
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    summary.update(
        environment={
            "strategy": type(trainer.strategy).__name__,
            "world_size": trainer.num_devices * trainer.num_nodes,
            "num_nodes": trainer.num_nodes,
        }
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    ckpt_path = str(last) if cfg.get("resume") and last.is_file() else None
    if cfg.get("resume"):
        log.info("Resuming from %s" if ckpt_path else "No checkpoint in %s: starting from scratch", last)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=False)
    except SystemExit as exc:  # Lightning turns Ctrl-C and SIGTERM into an exit after shutting down
        if not trainer.interrupted:
            raise
        done = len(artifacts.history)
        summary.update(epochs_completed=done, resume_from=str(last) if last.is_file() else None)
        raise KeyboardInterrupt(
            f"training interrupted in epoch {trainer.current_epoch + 1} ({type(exc).__name__}); "
            f"{done} complete epoch(s) saved, continue with resume={run_dir}"
        ) from None

    best = artifacts.best_metrics()
    model_path = run_dir / "best_model.pt"
    if not writes:  # another DDP rank: rank zero reports and writes the rest
        return best.get(f"best_{cfg.monitor}", float("nan"))
    if cfg.get("gradcam_per_class") and model_path.exists():
        from mammo.inference import gradcam_samples

        count, path = gradcam_samples(model, datamodule, model_path, run_dir, int(cfg.gradcam_per_class))
        log.info("Grad-CAM of %d validation images: %s", count, path)
    pruned = link is not None and link.pruned_at is not None
    if pruned:
        log.info("Training stopped: pruned by Optuna after epoch %d", link.pruned_at + 1)
    else:
        log.info("Training Complete")
    log.info("Best epoch: %s", best.get("best_epoch"))
    for key in dict.fromkeys((f"best_{cfg.monitor}", "best_val_kappa", "best_val_acc", "best_val_macro_f1")):
        if key in best:
            log.info("Best %s: %.4f", key.removeprefix("best_"), best[key])
    if model_path.exists():
        log.info("Model saved to: %s", model_path)
    else:  # fast_dev_run (no checkpointing) or no validation epoch
        log.info("No model saved: %s", _why_no_model(trainer))
    summary.finish(
        "pruned" if pruned else "completed",
        **({"pruned": link.describe()} if pruned else {}),
        **best,
        best_metric={"name": cfg.monitor, "mode": cfg.monitor_mode, "value": best.get(f"best_{cfg.monitor}")},
        epochs_completed=len(artifacts.history),
        artifacts={"best_model": model_path.name if model_path.exists() else None},
    )
    return best.get(f"best_{cfg.monitor}", float("nan"))


def _why_no_model(trainer) -> str:
    if trainer.fast_dev_run:
        return "trainer.fast_dev_run runs a single batch and writes no checkpoint (a wiring check)"
    return "no validation epoch produced a monitored value"


def class_weights(setting, train_labels, num_classes: int) -> list[float] | None:
    """``auto`` -> inverse class frequency of the training split (scikit-learn's "balanced");
    ``none`` -> unweighted; a list -> used as given (one weight per class)."""
    from mammo.errors import ConfigError

    if setting is None or str(setting).lower() == "none":
        return None
    if str(setting).lower() == "auto":
        import numpy as np
        from sklearn.utils.class_weight import compute_class_weight

        classes = np.arange(num_classes)
        return compute_class_weight("balanced", classes=classes, y=np.asarray(train_labels)).tolist()
    weights = [float(w) for w in setting]
    if len(weights) != num_classes:
        raise ConfigError(f"class_weights: expected {num_classes} weights, got {len(weights)}")
    return weights


def _original_config(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """A resumed run keeps the config it was started with (only ``resume`` is new)."""
    from mammo.errors import ConfigError

    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file() or not (run_dir / "summary.json").is_file():
        raise ConfigError(f"resume={run_dir}: not a mammo run directory (no summary.json or .hydra/)")
    original = OmegaConf.load(saved)
    if original.cv.get("folds") is not None or original.hpo.get("trial") is not None:
        raise ConfigError(f"resume={run_dir}: CV and HPO runs are re-run, not resumed")
    original.resume = str(run_dir)
    return original


def _trial_id(cfg: DictConfig) -> str | None:
    if cfg.hpo.get("trial") is None:
        return None
    from hydra.core.hydra_config import HydraConfig

    from mammo.hpo import trial_id

    return trial_id(HydraConfig.get().sweeper.get("study_name"), cfg.hpo.trial)


def unwrap_worker_error(exc: BaseException) -> BaseException:
    """A mammo error raised in a DataLoader worker comes back with the worker's traceback as its
    message; give it back its own one-line message."""
    from mammo.errors import MammoError

    text = str(exc)
    if isinstance(exc, MammoError) and "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        return type(exc)(last.split(": ", 1)[1] if ": " in last else last)
    return exc


if __name__ == "__main__":
    main()
