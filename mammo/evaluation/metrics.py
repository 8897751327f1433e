"""The one set of density metrics used by training, evaluation and cross-validation.

Computed with torchmetrics from class probabilities; ``balanced_accuracy_adjusted`` is the
chance-adjusted balanced accuracy of scikit-learn (``balanced_accuracy_score(adjusted=True)``),
which torchmetrics lacks, and ``brier`` the multi-class Brier score (the mean over images of the
squared distance between the probabilities and the one-hot label).

The ``dense_*`` metrics are the binary dense (BI-RADS C/D) vs non-dense (A/B) reading of the
same predictions: a prediction is dense when its most probable class is C or D, and
``dense_auc`` ranks the images by P(C) + P(D).

Each metric has a file name (``metrics/val_metrics.*``) and a short name used in logs, the
history and summary.json (``val_kappa``), both as the spec spells them.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.classification import (
    binary_auroc,
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_calibration_error,
    multiclass_cohen_kappa,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_recall,
)

DENSE = (2, 3)
"""Class indices of BI-RADS C and D (the labels start at 1 = A)."""
ECE_BINS = 15

SHORT_NAMES: dict[str, str] = {
    "accuracy": "acc",
    "balanced_accuracy": "bal_acc",
    "balanced_accuracy_adjusted": "bal_acc_adj",
    "kappa_quadratic": "kappa",
    "macro_f1": "macro_f1",
    "auc_ovr": "auc",
    "kappa_linear": "kappa_linear",
    "dense_accuracy": "dense_acc",
    "dense_sensitivity": "dense_sens",
    "dense_specificity": "dense_spec",
    "dense_auc": "dense_auc",
    "ece": "ece",
    "brier": "brier",
}
"""File name -> short name, in reporting order."""

TITLES: dict[str, str] = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "balanced_accuracy_adjusted": "Balanced accuracy (chance-adjusted)",
    "kappa_quadratic": "Quadratic kappa",
    "macro_f1": "Macro-F1",
    "auc_ovr": "AUC (OvR)",
    "kappa_linear": "Linear kappa",
    "dense_accuracy": "Dense vs non-dense accuracy",
    "dense_sensitivity": "Dense sensitivity",
    "dense_specificity": "Dense specificity",
    "dense_auc": "Dense vs non-dense AUC",
    "ece": "Expected calibration error",
    "brier": "Brier score",
}
"""File name -> the title tables give it."""


def density_metrics(probs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Metrics of class probabilities ``probs`` [N, K] against integer ``targets`` [N].

    Balanced accuracy is the mean recall over the classes present in ``targets`` (as scikit-learn);
    the adjusted form rescales it so that chance is 0 and perfect is 1.

    >>> p = torch.tensor([[.9, .1, 0, 0], [.1, .8, .1, 0], [0, .2, .7, .1], [0, 0, .3, .7]])
    >>> m = density_metrics(p, torch.tensor([0, 1, 2, 3]))
    >>> m["accuracy"], m["kappa_quadratic"], m["balanced_accuracy_adjusted"]
    (1.0, 1.0, 1.0)
    """
    probs = probs.detach().float().cpu()
    targets = targets.detach().long().cpu()
    k = probs.shape[1]
    present = torch.bincount(targets, minlength=k) > 0
    recall = multiclass_recall(probs, targets, num_classes=k, average="none")
    balanced = float(recall[present].mean())
    n_present = int(present.sum())
    chance = 1.0 / n_present
    adjusted = (balanced - chance) / (1.0 - chance) if n_present > 1 else float("nan")
    try:
        auc = float(multiclass_auroc(probs, targets, num_classes=k, average="macro"))
    except ValueError:
        auc = float("nan")
    return {
        "accuracy": float(multiclass_accuracy(probs, targets, num_classes=k, average="micro")),
        "balanced_accuracy": balanced,
        "balanced_accuracy_adjusted": adjusted,
        "kappa_quadratic": float(multiclass_cohen_kappa(probs, targets, num_classes=k, weights="quadratic")),
        "macro_f1": float(multiclass_f1_score(probs, targets, num_classes=k, average="macro")),
        "auc_ovr": auc,
        "kappa_linear": float(multiclass_cohen_kappa(probs, targets, num_classes=k, weights="linear")),
        **(dense_metrics(probs, targets) if k > max(DENSE) else {}),
        "ece": float(multiclass_calibration_error(probs, targets, num_classes=k, n_bins=ECE_BINS, norm="l1")),
        "brier": float(((probs - torch.eye(k)[targets]) ** 2).sum(dim=1).mean()),
    }


def dense_metrics(probs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Dense (C/D) vs non-dense (A/B): accuracy, sensitivity and specificity of the predicted
    class, AUC of P(C) + P(D); ``nan`` where the images hold no dense or no non-dense one."""
    dense = torch.isin(targets, torch.tensor(DENSE))
    predicted = torch.isin(probs.argmax(dim=1), torch.tensor(DENSE))
    positives, negatives = int(dense.sum()), int((~dense).sum())
    nan = float("nan")
    return {
        "dense_accuracy": float((predicted == dense).float().mean()),
        "dense_sensitivity": float((predicted & dense).sum() / positives) if positives else nan,
        "dense_specificity": float((~predicted & ~dense).sum() / negatives) if negatives else nan,
        "dense_auc": float(binary_auroc(probs[:, list(DENSE)].sum(dim=1), dense.long()))
        if positives and negatives
        else nan,
    }


def mean_std(values) -> dict:
    """``mean``, sample ``std`` (``ddof=1``; 0 for a single value) and the ``values`` themselves;
    ``None`` statistics when there are no values. The one reduction behind every mean ± std mammo
    reports (seed sweeps, CV, baselines, the report pack).

    >>> mean_std([1.0, 2.0, 3.0])
    {'mean': 2.0, 'std': 1.0, 'values': [1.0, 2.0, 3.0]}
    """
    array = np.asarray(list(values), dtype=float)
    return {
        "mean": float(array.mean()) if array.size else None,
        "std": float(array.std(ddof=1)) if array.size > 1 else (0.0 if array.size else None),
        "values": [float(v) for v in array],
    }


def labelled_mean_std(values, labels, name: str) -> dict:
    """:func:`mean_std` of the values that are not ``None``, with the labels of those values
    under ``name`` (the folds or run ids they come from).

    >>> labelled_mean_std([1.0, None, 3.0], [1, 2, 3], "folds")
    {'mean': 2.0, 'std': 1.4142135623730951, 'values': [1.0, 3.0], 'folds': [1, 3]}
    """
    pairs = [(v, label) for v, label in zip(values, labels) if v is not None]
    return {**mean_std(v for v, _ in pairs), name: [label for _, label in pairs]}


def confusion_matrix(probs: torch.Tensor, targets: torch.Tensor) -> list[list[int]]:
    """Counts with true classes as rows and predicted classes as columns."""
    k = probs.shape[1]
    cm = multiclass_confusion_matrix(probs.float().cpu(), targets.long().cpu(), num_classes=k)
    return cm.tolist()


def short(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    """``{"kappa_quadratic": x}`` -> ``{"val_kappa": x}`` for ``prefix="val"``."""
    return {f"{prefix}_{SHORT_NAMES[name]}": value for name, value in metrics.items()}
