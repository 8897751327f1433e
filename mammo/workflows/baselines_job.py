"""``python -m mammo.baselines``'s job: classical baselines on the embeddings and on classical
features, read from its config."""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from mammo.artifacts.io import atomic_write_text, write_json
from mammo.core.errors import DataError
from mammo.embeddings.classical import (
    METRICS,
    classical_features,
    evaluate,
    fold_indices,
    make_pipeline,
    report,
    statistical_tests,
)

log = logging.getLogger("mammo")


def run_baselines(cfg: DictConfig, out: Path) -> dict:
    """Every model on both feature kinds under one fold split; the metrics, tests and report."""
    folder = Path(cfg.embeddings_dir)
    for name in ("features.npy", "joined.csv", "summary.json"):
        if not (folder / name).is_file():
            raise DataError(f"embeddings_dir: {folder / name} not found (run python -m mammo.embed first)")
    embedded = np.load(folder / "features.npy", mmap_mode="r")
    joined = pd.read_csv(
        folder / "joined.csv", usecols=["row", "image_id", "relpath", "PatientID", "laterality", "label"]
    )
    joined = joined.sort_values("row").reset_index(drop=True)
    source = json.loads((folder / "summary.json").read_text())["data_config"]
    log.info("Loaded %s embeddings of %d images from %s", embedded.shape, len(joined), folder)
    c = cfg.classical
    classical, n_stats = classical_features(joined, source, int(c.img_size), int(c.histogram_bins))
    labels = joined["label"].to_numpy()
    classes = np.unique(labels)
    y = np.searchsorted(classes, labels)
    folds = fold_indices(y, joined["PatientID"].to_numpy(), int(cfg.folds), int(cfg.seed))
    features = {
        "embeddings": (np.asarray(embedded, dtype=np.float64), None),
        "classical": (classical, n_stats),
    }
    results = {}
    for kind, (x, stats_columns) in features.items():
        for model in cfg.models:
            factory = functools.partial(
                make_pipeline, model, stats_columns, int(c.pca_components), int(cfg.seed)
            )
            result = evaluate(x, y, folds, factory, len(classes))
            result.update(features=kind, model=model, num_folds=len(folds), classes=classes.tolist())
            write_json(out / f"{kind}_{model}_metrics.json", result)
            results[(kind, model)] = result
            log.info(
                "%s + %s: %s",
                kind,
                model,
                ", ".join(f"{m} {result['metrics'][m]['mean']:.3f}" for m in METRICS),
            )
    tests = statistical_tests(results, list(cfg.models))
    write_json(out / "statistical_tests.json", tests)
    atomic_write_text(out / "report.md", report(results, tests, len(joined), len(folds)))
    return {"num_images": len(joined), "num_folds": len(folds), "embeddings_dir": str(folder)}
