"""Preview plots of an embedding: 2-D projections coloured by density, and a sample grid."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import umap
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PROJECTIONS = ("pca", "tsne", "umap")


def project(features: np.ndarray, method: str, seed: int) -> np.ndarray:
    """[N, D] -> [N, 2] with PCA, t-SNE (on 50 PCA components) or UMAP."""

    x = np.asarray(features, dtype=np.float32)
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    reduced = PCA(n_components=min(50, *x.shape), random_state=seed).fit_transform(x)
    if method == "tsne":
        perplexity = float(min(30, max(2, (len(x) - 1) / 3)))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
            reduced
        )
    if method == "umap":
        neighbours = int(min(15, max(2, len(x) - 1)))
        return umap.UMAP(n_neighbors=neighbours, random_state=seed).fit_transform(reduced)
    raise ValueError(f"embed.projections: unknown method {method!r} (expected {', '.join(PROJECTIONS)})")


def plot_projections(
    features, labels, folder: Path, methods: list[str], max_points: int, seed: int
) -> list[Path]:
    """``embeddings_<method>.png`` per method; at most ``max_points`` images (a seeded sample)."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(labels)
    index = np.arange(len(labels))
    if len(index) > max_points:
        index = np.sort(np.random.default_rng(seed).choice(index, max_points, replace=False))
    x = np.asarray(features[index])
    paths = []
    for method in methods:
        points = project(x, method, seed)
        fig, ax = plt.subplots(figsize=(5, 4.5))
        for density in sorted(set(labels[index])):
            mask = labels[index] == density
            ax.scatter(points[mask, 0], points[mask, 1], s=8, label=f"density {density}")
        ax.set_title(f"{method.upper()} of {len(index)} embeddings")
        ax.legend(markerscale=2, fontsize=8)
        fig.tight_layout()
        path = folder / f"embeddings_{method}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_sample_grid(source, labels, path: Path, count: int) -> None:
    """The first ``count`` preprocessed images (as the model sees them) with their density."""
    count = min(count, len(labels))
    cols = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 1.8 * rows), squeeze=False)
    image = np.empty(source.preprocessing.shape, dtype=np.float16)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < count:
            source.read_into(k, image)
            ax.imshow(image.astype(np.float32), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"density {labels[k]}", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
