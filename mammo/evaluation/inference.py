"""Shared by evaluate and predict: the data config of a checkpoint, batched inference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from mammo.data.cache import collate
from mammo.data.units import UnitDataset, per_image
from mammo.models.device import autocast, for_inference, pin_memory, to_device


@torch.inference_mode()
def predict_probs(
    model,
    dataset,
    batch_size: int,
    num_workers: int = 0,
    device: torch.device | None = None,
    temperature: float = 1.0,
) -> np.ndarray:
    """Class probabilities (float64), ``softmax(logits / temperature)``, for every item of a
    DicomDataset, in order, computed on ``device`` (the CPU by default; see ``mammo.models.device``)."""
    device = device or torch.device("cpu")
    model = for_inference(model, device)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory(device),
    )
    out, rows = [], []
    units = isinstance(dataset, UnitDataset)
    for images, _, batch_rows, *extra in loader:
        with autocast(device):
            logits = model(to_device(images, device), *(to_device(e, device) for e in extra))
        probs = (logits.float() / temperature).softmax(1).double().cpu()
        out.append((per_image(probs, extra[0]) if units else probs).numpy())
        rows.append(batch_rows.numpy())
    if not out:
        return np.zeros((0, model.hparams.num_classes))
    probs = np.concatenate(out)
    if units:  # the units' images, back in the dataset's order
        probs = probs[pd.Index(np.concatenate(rows)).get_indexer(dataset.rows)]
    return probs


def routed_probs(ensemble, datamodule, table, batch_size: int, num_workers: int, device) -> np.ndarray:
    """A per-view ensemble's probabilities for the rows of ``table``: each image's mean over the
    members trained on its view (``table["view"]``)."""
    total, count = np.zeros((len(table), len(ensemble.class_labels))), np.zeros(len(table))
    for model, rows in ensemble.routes(table["view"].tolist()):
        if rows.any():
            total[rows] += predict_probs(
                model, datamodule.dataset(table[rows]), batch_size, num_workers, device
            )
            count[rows] += 1
    return total / count[:, None]
