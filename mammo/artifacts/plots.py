"""Figures of a run: training curves, confusion matrices and reliability diagrams (matplotlib, file
output only)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_train_curves(history: list[dict], path: Path) -> None:
    """Loss, accuracy and quadratic kappa per epoch, train vs val."""
    epochs = [row["epoch"] for row in history]
    panels = [("loss", "Loss"), ("acc", "Accuracy"), ("kappa", "Quadratic kappa")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for ax, (key, title) in zip(axes, panels):
        for split, style in (("train", "-o"), ("val", "-s")):
            values = [row.get(f"{split}_{key}", np.nan) for row in history]
            if not np.all(np.isnan(np.asarray(values, dtype=float))):
                ax.plot(epochs, values, style, markersize=3, label=split)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    _save(fig, path)


def plot_confusion(cm: list[list[int]], class_labels: list, path: Path, title: str) -> None:
    """Confusion matrix: counts, with the row-normalised share shaded."""
    counts = np.asarray(cm, dtype=float)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.6, 4))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            color = "white" if share[i, j] > 0.5 else "black"
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", color=color)
    ticks = range(len(class_labels))
    ax.set_xticks(ticks, [str(c) for c in class_labels])
    ax.set_yticks(ticks, [str(c) for c in class_labels])
    ax.set_xlabel("predicted density")
    ax.set_ylabel("true density")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of true class")
    fig.tight_layout()
    _save(fig, path)


def plot_reliability(bins: dict, path: Path, title: str) -> None:
    """Reliability diagram: accuracy against mean confidence per bin of the top probability
    (bars), the diagonal of perfect calibration, and how many images each bin holds (below)."""
    edges, count = bins["edges"], bins["count"]
    centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(4.6, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    filled = count > 0
    accuracy, confidence = bins["accuracy"][filled], bins["confidence"][filled]
    top.bar(centres[filled], accuracy, width[filled], edgecolor="black", alpha=0.7, label="accuracy")
    top.plot(confidence, accuracy, "o", color="tab:red", markersize=3, label="mean confidence")
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy of the top class")
    top.set_title(f"{title} (ECE {bins['ece']:.3f})")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centres, count, width, color="grey")
    bottom.set_xlabel("top-class probability")
    bottom.set_ylabel("images")
    bottom.set_xlim(0, 1)
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
