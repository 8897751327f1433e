"""Evaluate a trained model on labelled data (``python -m mammo.evaluate``)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from mammo.artifacts.files import predictions_frame, write_metrics, write_predictions
from mammo.artifacts.io import write_json
from mammo.artifacts.plots import plot_confusion
from mammo.artifacts.runlog import route_library_logs
from mammo.core.errors import ConfigError
from mammo.evaluation.calibration import write_reliability
from mammo.evaluation.gradcam import gradcam_figure
from mammo.evaluation.inference import checkpoint_datamodule, predict_probs
from mammo.evaluation.intervals import eval_settings, metric_intervals
from mammo.evaluation.levels import write_levels
from mammo.evaluation.metrics import SHORT_NAMES, confusion_matrix, density_metrics
from mammo.evaluation.subgroups import SUBGROUP_COLUMNS, label_subgroups, with_subgroups, write_subgroups
from mammo.models.checkpoint import Checkpoint, load_checkpoint
from mammo.models.device import resolve_device

log = logging.getLogger("mammo")
SPLITS = ("all", "val", "train", "test")


def evaluate(cfg: DictConfig, out: Path, summary) -> dict:
    """Predict ``cfg.split`` of the data with ``cfg.ckpt``; write predictions, metrics, plots."""
    route_library_logs()
    if cfg.split not in SPLITS:
        raise ConfigError(f"split={cfg.split!r}: expected one of {', '.join(SPLITS)}")
    checkpoint = load_checkpoint(cfg.ckpt)
    datamodule, table = evaluation_data(cfg, checkpoint)
    write_json(out / "data_manifest.json", datamodule.manifest)
    classes = checkpoint.class_labels
    log.info("Evaluating %d images (%s) with %s", len(table), cfg.split, checkpoint.meta.get("arch"))
    dataset = datamodule.dataset(table)
    device = resolve_device(cfg.device)
    log.info("Inference on %s", device)
    if checkpoint.temperature != 1.0:
        log.info("Temperature scaling from the checkpoint: T = %.4f", checkpoint.temperature)
    workers, temperature = int(cfg.data.num_workers), checkpoint.temperature
    probs = predict_probs(checkpoint.model, dataset, int(cfg.batch_size), workers, device, temperature)
    (resamples, aggregate), seed = eval_settings(cfg), int(cfg.seed)
    metrics, _, levels = write_evaluation(
        out,
        table,
        probs,
        classes,
        cfg.split,
        resamples,
        seed,
        aggregate=aggregate,
        subgroups=label_subgroups(datamodule),
    )
    if cfg.gradcam_per_class:
        path = out / "plots" / "gradcam_samples.png"
        count = gradcam_figure(checkpoint.model, dataset, table, classes, int(cfg.gradcam_per_class), path)
        log.info("Grad-CAM of %d images: %s", count, path)
    return {
        "checkpoint": str(checkpoint.path),
        "training_run": {"run_id": checkpoint.meta.get("run_id"), "run_dir": str(checkpoint.run_dir)},
        "data_config": {**datamodule.describe_samples(), "split": cfg.split, "num_evaluated": len(table)},
        "model_config": {
            "arch": checkpoint.meta.get("arch"),
            "backbone": checkpoint.meta.get("backbone"),
            "class_labels": classes,
        },
        "metrics": metrics,
        "levels": levels,
    }


def evaluation_data(cfg: DictConfig, checkpoint: Checkpoint):
    """The datamodule (preprocessed as the checkpoint's training data) and the rows to evaluate:
    all of them, or the ``val`` / ``train`` / ``test`` rows of the training run's ``split.csv``."""
    split_csv = None
    if cfg.split != "all":
        split_csv = checkpoint.run_dir / "split.csv"
        if not split_csv.is_file():
            raise ConfigError(f"split={cfg.split}: {split_csv} not found (the checkpoint's run directory)")
    datamodule = checkpoint_datamodule(cfg, checkpoint, str(split_csv) if split_csv else None)
    if split_csv:
        datamodule.setup("validate")
        table = {"val": datamodule.val_table, "train": datamodule.train_table, "test": datamodule.test_table}[
            cfg.split
        ]
        if table.empty:
            raise ConfigError(f"split={cfg.split}: the training run's {split_csv} has no {cfg.split} rows")
    else:
        datamodule.prepare_samples()
        table = datamodule.samples.table
    if checkpoint.model.hparams.embeddings_fusion:
        datamodule.attach_embeddings(checkpoint.model.hparams.embeddings_dir)
    return datamodule, table


def write_evaluation(
    out: Path,
    table,
    probs,
    classes: list[int],
    split: str,
    resamples: int = 0,
    seed: int = 0,
    prefix: str = "eval",
    predictions: str = "predictions.csv",
    aggregate: str = "mean",
    subgroups: tuple[str, ...] = (),
) -> tuple[dict, dict | None, dict]:
    """``predictions`` (per image), ``metrics/<prefix>_metrics.*`` (with ``resamples``
    patient-bootstrap 95 % CIs), ``metrics/<prefix>_confusion.png`` and the breast- and
    exam-level files (:func:`~mammo.evaluation.levels.write_levels`) and the subgroups'
    (``metrics/<prefix>_subgroups.*``); returns the metrics, the
    intervals and the levels' results."""
    targets = torch.tensor(table["label"].to_numpy())
    metrics = density_metrics(torch.tensor(probs), targets)
    confusion = confusion_matrix(torch.tensor(probs), targets)
    frame = predictions_frame(table, probs, classes)
    write_predictions(out / predictions, frame)
    extra = {
        "num_samples": len(table),
        "class_labels": classes,
        "confusion_matrix": confusion,
        "split": split,
    }
    intervals = metric_intervals(probs, targets.numpy(), table["PatientID"].to_numpy(), resamples, seed)
    write_metrics(out / "metrics", prefix, metrics, extra, intervals)
    title = f"Evaluation ({split})" if prefix == "eval" else f"Test split ({len(table)} images)"
    plot_confusion(confusion, classes, out / "metrics" / f"{prefix}_confusion.png", title=title)
    write_reliability(probs, targets.numpy(), out / "plots" / f"reliability_{prefix}.png", title)
    for name, value in metrics.items():
        log.info("%s: %.4f", name, value)
    frame["PatientID"] = table["PatientID"].to_numpy()
    levels = write_levels(out, prefix, Path(predictions).stem, frame, aggregate, resamples, seed)
    columns = (*SUBGROUP_COLUMNS, *subgroups)  # the scanner, view, laterality and the label file's own
    write_subgroups(out, prefix, with_subgroups(frame, table, columns), resamples, seed, columns)
    return metrics, intervals, levels


def evaluate_test_split(cfg: DictConfig, run_dir: Path, datamodule, model_path: Path) -> dict:
    """The best model on the locked test split, once, after training: ``test_predictions.csv``
    and ``metrics/test_metrics.*``; returns summary.json's ``test_metrics`` and
    ``test_confidence_intervals`` (short names), or nothing without a test split or a model."""
    table = datamodule.test_table
    if table is None or table.empty or not model_path.exists():
        return {}
    checkpoint = load_checkpoint(model_path)
    log.info("Test split: evaluating the best model on %d held-out images", len(table))
    device = resolve_device("auto")
    workers = int(cfg.data.num_workers)
    dataset, temperature = datamodule.dataset(table), checkpoint.temperature
    probs = predict_probs(checkpoint.model, dataset, int(cfg.batch_size), workers, device, temperature)
    (resamples, aggregate), classes, seed = eval_settings(cfg), checkpoint.class_labels, int(cfg.seed)
    metrics, intervals, levels = write_evaluation(
        run_dir,
        table,
        probs,
        classes,
        "test",
        resamples,
        seed,
        "test",
        "test_predictions.csv",
        aggregate,
        label_subgroups(datamodule),
    )
    bounds = (intervals or {}).get("confidence_intervals", {})
    return {
        "test_metrics": {f"test_{SHORT_NAMES[k]}": v for k, v in metrics.items()},
        "test_confidence_intervals": {f"test_{SHORT_NAMES[k]}": v for k, v in bounds.items()},
        "test_levels": levels,
    }
