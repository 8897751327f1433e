"""Precomputed embeddings (``mammo.embed`` output) matched to a sample table, for fusion models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mammo.core.errors import DataError


def embedding_rows(embeddings_dir: str | Path | None, image_ids) -> tuple[np.ndarray, np.ndarray]:
    """``features.npy`` (memory-mapped) and the row of each of ``image_ids`` in it (by ``joined.csv``)."""
    if not embeddings_dir:
        raise DataError("model.embeddings_fusion=true needs data.embeddings_dir=<mammo.embed output folder>")
    folder = Path(embeddings_dir)
    features_file, joined_file = folder / "features.npy", folder / "joined.csv"
    for path in (features_file, joined_file):
        if not path.is_file():
            raise DataError(f"data.embeddings_dir: {path} not found (run python -m mammo.embed first)")
    features = np.load(features_file, mmap_mode="r")
    joined = pd.read_csv(joined_file, usecols=["row", "image_id"], dtype={"image_id": str})
    row_of = dict(zip(joined["image_id"], joined["row"]))
    missing = [i for i in image_ids if i not in row_of]
    if missing:
        raise DataError(
            f"{joined_file}: no embedding for {len(missing)} image(s), e.g. {missing[0]!r}; "
            "re-run python -m mammo.embed on the same data"
        )
    return features, np.array([row_of[i] for i in image_ids])
