"""95 % confidence intervals for every density metric: a bootstrap that resamples patients.

A patient's images are not independent (two views of two breasts, read alike), so the resampling
unit is the patient (a cluster bootstrap): each resample draws as many patients as there are,
with replacement, and every image of a drawn patient counts as often as the patient was drawn.
The interval is the 2.5th to 97.5th percentile of the metric over the resamples (resamples in
which a metric is undefined, e.g. no dense image drawn, are left out of that metric's interval).

The metrics are recomputed for all resamples at once from image weights (a ``[B, N]`` matrix of
how often each image was drawn): confusion matrices by one matrix product, AUCs from one sort of
the scores, calibration from fixed bins. With unit weights they equal
:func:`mammo.evaluation.metrics.density_metrics` (``tests/evaluation/test_bootstrap.py``).
"""

from __future__ import annotations

import numpy as np

from mammo.evaluation.metrics import DENSE, ECE_BINS

CHUNK = 100
"""Resamples computed together: memory is CHUNK x N floats (8 MB for 20,000 images)."""


def bootstrap_intervals(
    probs: np.ndarray, targets: np.ndarray, patients, resamples: int, seed: int, level: float = 0.95
) -> dict[str, list[float | None]]:
    """``{metric: [low, high]}`` from ``resamples`` patient-bootstrap resamples (seeded).

    Args:
        probs: class probabilities ``[N, K]``.
        targets: 0-based classes ``[N]``.
        patients: the patient of each image ``[N]`` (any values; compared as strings).
        resamples: how many resamples to draw.
        seed: the resampling seed (same seed and data -> same intervals).
        level: the interval's coverage.
    """
    tail = 100 * (1 - level) / 2
    values = resampled_metrics(probs, targets, patients, resamples, seed)
    return {name: _interval(column, tail) for name, column in values.items()}


def resampled_metrics(probs, targets, patients, resamples: int, seed: int) -> dict[str, np.ndarray]:
    """Every metric in each of ``resamples`` patient-bootstrap resamples: ``{name: [resamples]}``."""
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets, dtype=np.int64)
    _, patient_of = np.unique(np.asarray(patients, dtype=str), return_inverse=True)
    n_patients = int(patient_of.max()) + 1
    rng = np.random.default_rng(seed)
    values: dict[str, list[np.ndarray]] = {}
    for start in range(0, resamples, CHUNK):
        size = min(CHUNK, resamples - start)
        drawn = rng.integers(0, n_patients, size=(size, n_patients))
        counts = np.stack([np.bincount(row, minlength=n_patients) for row in drawn])
        for name, column in weighted_metrics(probs, targets, counts[:, patient_of]).items():
            values.setdefault(name, []).append(column)
    return {name: np.concatenate(parts) for name, parts in values.items()}


def _interval(values: np.ndarray, tail: float) -> list[float | None]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return [None, None]
    low, high = np.percentile(finite, [tail, 100 - tail])
    return [float(low), float(high)]


def weighted_metrics(probs: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of :func:`~mammo.evaluation.metrics.density_metrics` under image weights
    ``[B, N]`` -> ``{name: [B]}``."""
    weights = np.asarray(weights, dtype=np.float64)
    k = probs.shape[1]
    predicted = probs.argmax(axis=1)
    pairs = np.zeros((len(targets), k * k))
    pairs[np.arange(len(targets)), targets * k + predicted] = 1.0
    confusion = (weights @ pairs).reshape(-1, k, k)  # [B, true, predicted]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = confusion_metrics(confusion)
        out["auc_ovr"] = np.mean([weighted_auc(probs[:, j], targets == j, weights) for j in range(k)], axis=0)
        if k > max(DENSE):
            dense = np.isin(targets, DENSE)
            out["dense_auc"] = weighted_auc(probs[:, list(DENSE)].sum(axis=1), dense, weights)
        out["ece"] = weighted_ece(probs, targets, weights)
        onehot = np.eye(k)[targets]
        brier = ((probs - onehot) ** 2).sum(axis=1)
        out["brier"] = (weights @ brier) / weights.sum(axis=1)
    return out


def confusion_metrics(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """The metrics that depend only on the confusion matrices ``[B, K, K]`` (true x predicted)."""
    k = confusion.shape[1]
    n = confusion.sum(axis=(1, 2))
    diagonal = np.diagonal(confusion, axis1=1, axis2=2)
    support, predicted = confusion.sum(axis=2), confusion.sum(axis=1)
    present = support > 0
    recall = np.where(present, diagonal / np.where(present, support, 1), np.nan)
    balanced = np.nanmean(recall, axis=1)
    n_present = present.sum(axis=1)
    out = {
        "accuracy": diagonal.sum(axis=1) / n,
        "balanced_accuracy": balanced,
        "balanced_accuracy_adjusted": np.where(
            n_present > 1, (balanced - 1 / n_present) / (1 - 1 / np.maximum(n_present, 2)), np.nan
        ),
    }
    classes = np.arange(k)
    for name, power in (("kappa_quadratic", 2), ("kappa_linear", 1)):
        penalty = np.abs(classes[:, None] - classes[None, :]).astype(float) ** power
        expected = support[:, :, None] * predicted[:, None, :] / n[:, None, None]
        out[name] = 1 - (penalty * confusion).sum(axis=(1, 2)) / (penalty * expected).sum(axis=(1, 2))
    errors = support + predicted - 2 * diagonal
    counted = (diagonal + errors) > 0  # torchmetrics' macro F1 skips classes never seen nor predicted
    f1 = np.where(counted, 2 * diagonal / np.where(counted, 2 * diagonal + errors, 1), np.nan)
    out["macro_f1"] = np.nanmean(f1, axis=1)
    if k > max(DENSE):
        dense = np.isin(classes, DENSE)
        tp = confusion[:, dense][:, :, dense].sum(axis=(1, 2))
        fn = confusion[:, dense][:, :, ~dense].sum(axis=(1, 2))
        fp = confusion[:, ~dense][:, :, dense].sum(axis=(1, 2))
        tn = confusion[:, ~dense][:, :, ~dense].sum(axis=(1, 2))
        out["dense_accuracy"] = (tp + tn) / n
        out["dense_sensitivity"] = tp / (tp + fn)
        out["dense_specificity"] = tn / (tn + fp)
    return out


def weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of ``scores`` for the ``positive`` images under each row of ``weights`` (ties
    count half), ``nan`` where a resample has no positive or no negative image."""
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    w = weights[:, order]
    is_positive = positive[order]
    positives = np.add.reduceat(w * is_positive, starts, axis=1)
    negatives = np.add.reduceat(w * ~is_positive, starts, axis=1)
    below = np.cumsum(negatives, axis=1) - negatives
    pairs = positives.sum(axis=1) * negatives.sum(axis=1)
    return np.where(pairs > 0, (positives * (below + 0.5 * negatives)).sum(axis=1) / pairs, np.nan)


def weighted_ece(probs: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Expected calibration error (L1, :data:`ECE_BINS` equal-width bins of the top probability,
    binned as torchmetrics' ``multiclass_calibration_error``)."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == targets).astype(float)
    edges = np.linspace(0, 1, ECE_BINS + 1)
    bins = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, ECE_BINS - 1)
    members = np.zeros((len(targets), ECE_BINS))
    members[np.arange(len(targets)), bins] = 1.0
    count = weights @ members
    gap = np.abs(weights @ (members * correct[:, None]) - weights @ (members * confidence[:, None]))
    return gap.sum(axis=1) / count.sum(axis=1)
