"""Evaluate a trained model on labelled data (``python -m mammo.evaluate``)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from mammo.artifacts.files import predictions_frame, write_metrics, write_predictions
from mammo.artifacts.plots import plot_confusion
from mammo.evaluation.calibration import write_reliability
from mammo.evaluation.inference import predict_probs
from mammo.evaluation.intervals import EvalSettings, metric_intervals
from mammo.evaluation.levels import write_levels
from mammo.evaluation.metrics import SHORT_NAMES, confusion_matrix, density_metrics
from mammo.evaluation.subgroups import SUBGROUP_COLUMNS, label_subgroups, with_subgroups, write_subgroups
from mammo.models.checkpoint import load_checkpoint
from mammo.models.device import resolve_device

log = logging.getLogger("mammo")


def write_evaluation(
    out: Path,
    table,
    probs,
    classes: list[int],
    split: str,
    evaluation: EvalSettings,
    prefix: str = "eval",
    predictions: str = "predictions.csv",
    subgroups: tuple[str, ...] = (),
    unit: str | None = None,
) -> tuple[dict, dict | None, dict]:
    """``predictions`` (per image), ``metrics/<prefix>_metrics.*`` (with ``evaluation.bootstrap``
    patient-bootstrap 95 % CIs), ``metrics/<prefix>_confusion.png`` and the breast- and
    exam-level files (:func:`~mammo.evaluation.levels.write_levels`) and the subgroups'
    (``metrics/<prefix>_subgroups.*``); returns the metrics, the
    intervals and the levels' results. ``unit``: what a multi-view model predicts (``probs`` then
    give each image its unit's probabilities)."""
    resamples, aggregate, seed = evaluation.bootstrap, evaluation.aggregate, evaluation.seed
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
    levels = write_levels(out, prefix, Path(predictions).stem, frame, aggregate, resamples, seed, unit)
    columns = (*SUBGROUP_COLUMNS, *subgroups)  # the scanner, view, laterality and the label file's own
    write_subgroups(out, prefix, with_subgroups(frame, table, columns), resamples, seed, columns)
    return metrics, intervals, levels


def evaluate_test_split(run_dir: Path, datamodule, model_path: Path, evaluation: EvalSettings) -> dict:
    """The best model on the locked test split, once, after training (batches as the
    datamodule's): ``test_predictions.csv`` and ``metrics/test_metrics.*``; returns summary.json's
    ``test_metrics`` and ``test_confidence_intervals`` (short names), or nothing without a test
    split or a model."""
    table = datamodule.test_table
    if table is None or table.empty or not model_path.exists():
        return {}
    checkpoint = load_checkpoint(model_path)
    log.info("Test split: evaluating the best model on %d held-out images", len(table))
    device = resolve_device("auto")
    loading, classes = datamodule.loading, checkpoint.class_labels
    dataset, temperature = datamodule.dataset(table), checkpoint.temperature
    probs = predict_probs(
        checkpoint.model, dataset, loading.batch_size, loading.num_workers, device, temperature
    )
    metrics, intervals, levels = write_evaluation(
        run_dir,
        table,
        probs,
        classes,
        "test",
        evaluation,
        "test",
        "test_predictions.csv",
        label_subgroups(datamodule),
        checkpoint.unit,
    )
    bounds = (intervals or {}).get("confidence_intervals", {})
    return {
        "test_metrics": {f"test_{SHORT_NAMES[k]}": v for k, v in metrics.items()},
        "test_confidence_intervals": {f"test_{SHORT_NAMES[k]}": v for k, v in bounds.items()},
        "test_levels": levels,
    }
