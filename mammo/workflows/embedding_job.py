"""``python -m mammo.embed``'s job: every image's embedding, its clustering metrics and previews,
read from its config."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mammo.artifacts.io import write_json
from mammo.artifacts.runlog import route_library_logs
from mammo.data.cache import DicomDataset
from mammo.embeddings.extract import Embedder, clustering_metrics, extract, write_joined
from mammo.embeddings.projection_plots import plot_projections, plot_sample_grid
from mammo.models.device import resolve_device

log = logging.getLogger("mammo")


def embed(cfg: DictConfig, out: Path, summary) -> dict:
    """Extract, write and describe the embeddings; returns summary fields."""
    route_library_logs()
    L.seed_everything(cfg.seed, verbose=False)
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.prepare_samples()
    samples = datamodule.samples
    table = samples.table
    log.info("Found %d images from %d patients", len(table), table["PatientID"].nunique())
    summary.update(model_config=OmegaConf.to_container(cfg.embed, resolve=True))
    write_json(out / "data_manifest.json", datamodule.manifest)
    summary.update(data_config=datamodule.describe_samples())

    e = cfg.embed
    device = resolve_device(cfg.device)
    log.info("Embedding on %s", device)
    embedder = Embedder(e.backbone, e.layer, e.pretrained, e.weights, list(e.mean), list(e.std), device)
    dataset = DicomDataset(table, datamodule.source)
    start = time.perf_counter()
    features = extract(embedder, dataset, out / "features.npy", cfg.batch_size, cfg.data.num_workers)
    seconds = time.perf_counter() - start
    log.info(
        "Embedded %d images -> %s %s in %.1fs (%.1f img/s)",
        len(table),
        out / "features.npy",
        features.shape,
        seconds,
        len(table) / seconds,
    )
    labels = np.asarray(samples.class_labels)[table["label"].to_numpy()]
    write_joined(out / "joined.csv", table, labels, features)
    metrics = clustering_metrics(features, labels, len(samples.class_labels), cfg.seed)
    write_json(out / "clustering_metrics.json", metrics)
    plot_projections(features, labels, out / "preview", list(e.projections), int(e.max_points), cfg.seed)
    plot_sample_grid(datamodule.source, labels, out / "preview" / "sample_grid.png", int(e.grid_images))
    return {
        "num_images": len(table),
        "embedding_dim": int(features.shape[1]),
        "images_per_second": round(len(table) / seconds, 2),
        "artifacts": {
            "features": "features.npy",
            "joined": "joined.csv",
            "clustering": "clustering_metrics.json",
        },
    }
