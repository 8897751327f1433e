"""Embed every image of a dataset with a timm backbone (``python -m mammo.embed``)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.progress import Progress
from sklearn.cluster import KMeans
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score
from torch.utils.data import DataLoader

from mammo.artifacts.io import atomic_write_text
from mammo.data.cache import DicomDataset, collate
from mammo.models.backbones import create_backbone
from mammo.models.classifier import backbone_input
from mammo.models.device import autocast, for_inference, pin_memory, to_device

log = logging.getLogger("mammo")


class Embedder:
    """A backbone that maps ``[B, 1, H, W]`` images in [0, 1] to ``[B, D]`` float32 features (on
    the CPU), computed on ``device`` (``mammo.models.device``)."""

    def __init__(
        self,
        backbone: str,
        layer: int | None,
        pretrained: bool,
        weights: str | None,
        mean,
        std,
        device: torch.device | None = None,
    ):
        self.device = device or torch.device("cpu")
        self.model = for_inference(create_backbone(backbone, pretrained, weights), self.device)
        self.layer = layer
        self.mean = torch.tensor(mean, device=self.device)[None, :, None, None]
        self.std = torch.tensor(std, device=self.device)[None, :, None, None]

    def __call__(self, x):
        x = backbone_input(to_device(x, self.device), self.mean, self.std)
        with autocast(self.device):
            if self.layer is None:
                features = self.model(x)
            else:
                (feature_map,) = self.model.forward_intermediates(
                    x, indices=[int(self.layer)], intermediates_only=True
                )
                features = feature_map.mean(dim=(2, 3))
        return features.float().cpu()


@torch.inference_mode()
def extract(embedder: Embedder, dataset: DicomDataset, path: Path, batch_size: int, num_workers: int):
    """Embed every item of ``dataset`` into ``path`` ([N, D] float32), written incrementally into
    a memory-mapped file that replaces ``path`` once complete; returns it memory-mapped."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory(embedder.device),
    )
    tmp = path.with_name(f".{path.name}.tmp")
    features = None
    with Progress(transient=True) as progress:
        task = progress.add_task("Embedding", total=len(dataset))
        for images, _, rows in loader:
            batch = embedder(images).numpy().astype(np.float32)
            if features is None:  # the width is known after the first batch
                features = np.lib.format.open_memmap(
                    tmp, mode="w+", dtype=np.float32, shape=(len(dataset), batch.shape[1])
                )
            features[rows.numpy()] = batch
            progress.advance(task, len(rows))
    features.flush()
    del features
    tmp.replace(path)
    return np.load(path, mmap_mode="r")


def write_joined(path: Path, table, labels, features, chunk: int = 1024) -> None:
    """Metadata + ``row`` + flattened embedding, written in chunks (memory stays flat)."""

    meta = table[["image_id", "relpath", "AccessionNumber", "PatientID", "laterality", "view"]].copy()
    meta.insert(0, "row", range(len(table)))
    meta.insert(len(meta.columns), "label", labels)
    names = [f"f{i}" for i in range(features.shape[1])]
    parts = []
    for start in range(0, len(meta), chunk):
        block = meta.iloc[start : start + chunk].reset_index(drop=True)
        values = pd.DataFrame(np.asarray(features[start : start + chunk]), columns=names)
        parts.append(
            pd.concat([block, values], axis=1).to_csv(index=False, header=start == 0, float_format="%.7g")
        )
    atomic_write_text(path, "".join(parts))


def clustering_metrics(features, labels, k: int, seed: int, silhouette_sample: int = 10_000) -> dict:
    """Silhouette, Davies-Bouldin and Calinski-Harabasz for k-means (k classes) and the true labels.

    The silhouette compares every pair of images, so above ``silhouette_sample`` images it is
    computed on a seeded sample of that size (scikit-learn's ``sample_size``; recorded as
    ``silhouette_sample``): memory and time stay flat in N. The other two are linear in N.
    """
    x = np.asarray(features, dtype=np.float64)
    sample = silhouette_sample if len(x) > silhouette_sample else None

    def scores(assignment) -> dict:
        if len(set(assignment)) < 2:
            return {"silhouette": None, "davies_bouldin": None, "calinski_harabasz": None}
        return {
            "silhouette": float(silhouette_score(x, assignment, sample_size=sample, random_state=seed)),
            "davies_bouldin": float(davies_bouldin_score(x, assignment)),
            "calinski_harabasz": float(calinski_harabasz_score(x, assignment)),
        }

    clusters = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
    return {
        "num_images": len(x),
        "k": k,
        "silhouette_sample": sample,
        "kmeans": scores(clusters),
        "true_labels": scores(labels),
    }
