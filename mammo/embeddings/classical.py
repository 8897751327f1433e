"""Classical baselines (``python -m mammo.baselines``).

Logistic regression and an RBF SVM on the ``mammo.embed`` embeddings versus on classical features
(intensity statistics and a histogram of each preprocessed image, plus PCA of its downsampled
pixels), under one patient-grouped stratified k-fold. Every transform — scaling and PCA — lives in
a scikit-learn Pipeline fitted on the training folds only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from mammo.core.errors import DataError
from mammo.data.datamodule import kfold_assignment
from mammo.data.images import Preprocessing
from mammo.evaluation.metrics import density_metrics, mean_std

log = logging.getLogger("mammo")
METRICS = ("balanced_accuracy", "kappa_quadratic", "macro_f1", "auc_ovr")
FEATURES = ("embeddings", "classical")


def classical_features(joined, source: dict, size: int, bins: int) -> tuple[np.ndarray, int]:
    """Per image: intensity statistics and a histogram of the preprocessed image (as training
    sees it), then its ``size``x``size`` pixels. Returns (features, number of statistic columns)."""

    settings = {k: v for k, v in source["preprocessing"].items() if k != "pipeline_version"}
    preprocess = Preprocessing(**{**settings, "img_size": size})
    root = Path(source["dicom_root"])
    rows = []
    for relpath, laterality in zip(joined["relpath"], joined["laterality"].fillna("")):
        image = preprocess(root / relpath, laterality or None)
        rows.append(np.concatenate([intensity_statistics(image, bins), image.ravel()]))
    return np.asarray(rows, dtype=np.float64), 9 + bins


def intensity_statistics(image: np.ndarray, bins: int) -> np.ndarray:
    """Mean, std, 10/25/50/75/90th percentiles, dense share (> 0.5) and tissue share (> 0.05)
    of an image in [0, 1], and its normalised histogram.

    >>> intensity_statistics(np.linspace(0, 1, 101).reshape(1, -1), 4)[:3].round(2).tolist()
    [0.5, 0.29, 0.1]
    """
    values = image.ravel()
    stats = [values.mean(), values.std(), *np.percentile(values, [10, 25, 50, 75, 90])]
    stats += [(values > 0.5).mean(), (values > 0.05).mean()]
    hist = np.histogram(values, bins=bins, range=(0.0, 1.0))[0] / values.size
    return np.concatenate([stats, hist])


def fold_indices(
    y: np.ndarray, groups: np.ndarray, folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    assignment = kfold_assignment(y, groups, folds, seed)
    return [(np.flatnonzero(assignment != k), np.flatnonzero(assignment == k)) for k in range(1, folds + 1)]


def make_pipeline(model: str, stats_columns: int | None, pca_components: int, seed: int):
    """Scaling (+ PCA of the pixel columns for classical features) and the classifier, as one
    scikit-learn Pipeline: ``fit`` only ever sees the training rows it is given."""

    classifiers = {
        "lr": lambda: LogisticRegression(max_iter=5000, class_weight="balanced"),
        # probabilities by internal 3-fold calibration of the training rows (SVC(probability=True)
        # is deprecated in scikit-learn 1.9)
        "svm": lambda: CalibratedClassifierCV(
            SVC(kernel="rbf", class_weight="balanced"), cv=3, ensemble=False
        ),
    }
    if model not in classifiers:
        raise DataError(f"models: unknown model {model!r} (expected {', '.join(classifiers)})")
    if stats_columns is None:
        transform = StandardScaler()
    else:
        pixels = Pipeline(
            [("scale", StandardScaler()), ("pca", PCA(n_components=pca_components, random_state=seed))]
        )
        transform = ColumnTransformer(
            [
                ("stats", StandardScaler(), slice(0, stats_columns)),
                ("pixels", pixels, slice(stats_columns, None)),
            ]
        )
    return Pipeline([("features", transform), ("classifier", classifiers[model]())])


def evaluate(x: np.ndarray, y: np.ndarray, folds, factory: Callable, num_classes: int) -> dict:
    """Fit ``factory()`` on each training fold, score its validation fold; per-fold and mean ± std."""

    per_fold = []
    for k, (train, val) in enumerate(folds, start=1):
        pipeline = factory().fit(x[train], y[train])
        probs = np.zeros((len(val), num_classes))
        probs[:, pipeline.classes_] = pipeline.predict_proba(x[val])
        metrics = density_metrics(torch.tensor(probs), torch.tensor(y[val]))
        per_fold.append({"fold": k, "train_samples": len(train), "val_samples": len(val), **metrics})
    stats = {name: mean_std(f[name] for f in per_fold) for name in METRICS}
    return {"folds": per_fold, "metrics": stats}


def statistical_tests(results: dict, models: list[str]) -> dict:
    """Embeddings vs classical, per model and metric, on the paired fold scores."""

    out = {"pairs": "embeddings - classical (same folds)", "tests": []}
    for model in models:
        for name in METRICS:
            a = np.asarray(results[("embeddings", model)]["metrics"][name]["values"])
            b = np.asarray(results[("classical", model)]["metrics"][name]["values"])
            diff = a - b
            t = stats.ttest_rel(a, b)
            nonzero = diff[diff != 0]
            if len(nonzero):
                w = stats.wilcoxon(a, b)
                ranks = stats.rankdata(np.abs(nonzero))
                positive, negative = ranks[nonzero > 0].sum(), ranks[nonzero < 0].sum()
                wilcoxon = {"statistic": float(w.statistic), "p_value": float(w.pvalue)}
                rank_biserial = float((positive - negative) / (positive + negative))
            else:
                wilcoxon, rank_biserial = {"statistic": None, "p_value": None}, 0.0
            sd = diff.std(ddof=1)
            out["tests"].append(
                {
                    "model": model,
                    "metric": name,
                    "embeddings_mean": float(a.mean()),
                    "classical_mean": float(b.mean()),
                    "mean_difference": float(diff.mean()),
                    "paired_t_test": {"statistic": _float(t.statistic), "p_value": _float(t.pvalue)},
                    "wilcoxon_signed_rank": wilcoxon,
                    "cohens_dz": float(diff.mean() / sd) if sd > 0 else None,
                    "rank_biserial": rank_biserial,
                    "num_folds": len(a),
                }
            )
    return out


def report(results: dict, tests: dict, num_images: int, num_folds: int) -> str:
    lines = [
        "# Embeddings vs classical features",
        "",
        f"{num_images} images, {num_folds}-fold patient-grouped stratified CV; mean ± std over folds.",
        "",
        "| features | model | balanced accuracy | quadratic kappa | macro-F1 | AUC (OvR) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for (kind, model), r in results.items():
        cells = [f"{r['metrics'][m]['mean']:.3f} ± {r['metrics'][m]['std']:.3f}" for m in METRICS]
        lines.append(f"| {kind} | {model} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Embeddings − classical, paired over folds",
        "",
        "| model | metric | mean difference | t-test p | Wilcoxon p | Cohen's dz | rank-biserial |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in tests["tests"]:
        p_t, p_w = _fmt(t["paired_t_test"]["p_value"]), _fmt(t["wilcoxon_signed_rank"]["p_value"])
        lines.append(
            f"| {t['model']} | {t['metric']} | {t['mean_difference']:+.3f} | {p_t} | {p_w} "
            f"| {_fmt(t['cohens_dz'])} | {t['rank_biserial']:+.2f} |"
        )
    lines += [
        "",
        f"With {num_folds} folds the smallest possible two-sided Wilcoxon p is {2 / 2**num_folds:.3f}.",
        "",
    ]
    return "\n".join(lines)


def _float(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3g}"
