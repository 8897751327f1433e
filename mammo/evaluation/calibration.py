"""Calibration: reliability diagrams, and temperature scaling fitted on validation.

The diagrams' bins are the expected calibration error's (:data:`~mammo.evaluation.metrics.ECE_BINS`
equal-width bins of the top probability), so the figure shows what ``ece`` sums up.

``calibrate=temperature`` fits one temperature T on the best epoch's validation predictions (the
T that minimises their negative log-likelihood; Guo et al., ICML 2017) and stores it in
``best_model.pt``; evaluate, predict and the test split then report ``softmax(logits / T)``.
T changes no prediction's class, only how sure it is. As T is fitted on validation, only the test
split's (or another data set's) calibration measures it fairly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar

from mammo.artifacts.checkpoint_io import AtomicCheckpointIO
from mammo.artifacts.plots import plot_reliability
from mammo.evaluation.metrics import ECE_BINS
from mammo.models.backbones import read_torch_file


def reliability_bins(probs: np.ndarray, targets: np.ndarray, n_bins: int = ECE_BINS) -> dict:
    """Per bin of the top probability: its ``edges``, the images' ``count``, mean ``confidence``
    and ``accuracy`` (``nan`` for an empty bin), and the ``ece`` they add up to."""
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(targets)).astype(float)
    edges = np.linspace(0, 1, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(bins, confidence, n_bins) / count
        accuracy = np.bincount(bins, correct, n_bins) / count
    gaps = np.abs(np.nan_to_num(accuracy) - np.nan_to_num(mean_confidence)) * count
    return {
        "edges": edges,
        "count": count,
        "confidence": mean_confidence,
        "accuracy": accuracy,
        "ece": float(gaps.sum() / max(count.sum(), 1)),
    }


def write_reliability(probs, targets, path: Path, title: str) -> Path:
    """The reliability diagram of these predictions at ``path``."""
    plot_reliability(reliability_bins(probs, targets), path, title)
    return path


def fit_temperature(probs: np.ndarray, targets: np.ndarray) -> dict:
    """The temperature that minimises the negative log-likelihood of ``targets`` under
    ``softmax(log(probs) / T)`` (log-probabilities are the logits up to a constant per image),
    with the NLL before and after."""
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0))
    targets = np.asarray(targets)

    def nll(temperature: float) -> float:
        scaled = logits / temperature
        scaled -= scaled.max(axis=1, keepdims=True)
        log_probs = scaled - np.log(np.exp(scaled).sum(axis=1, keepdims=True))
        return float(-log_probs[np.arange(len(targets)), targets].mean())

    best = minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded", options={"xatol": 1e-4})
    return {"temperature": float(best.x), "val_nll_before": nll(1.0), "val_nll_after": nll(float(best.x))}


def store_temperature(model_path: Path, probs: np.ndarray, targets: np.ndarray) -> dict:
    """``calibrate=temperature``: fit T on the best epoch's validation predictions and store it in
    ``best_model.pt`` (``mammo.temperature``, rewritten atomically); returns summary.json's
    ``calibration``."""
    fitted = fit_temperature(probs, targets)
    checkpoint = read_torch_file(model_path, "ckpt")
    checkpoint["mammo"]["temperature"] = fitted["temperature"]
    AtomicCheckpointIO().save_checkpoint(checkpoint, model_path)
    return {"method": "temperature", "fitted_on": "val_predictions.csv", "num_images": len(targets), **fitted}
