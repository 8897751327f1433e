"""The images a reader is asked to read: the model's confident errors first, mixed with a random
sample of correctly predicted images as controls, so that the order does not say which is which."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class QueueSettings:
    """``errors``: the most confident errors taken (0: all); ``controls``: correct images added
    per error (0.5: one control for two errors); ``seed``: which controls and where they go."""

    errors: int = 50
    controls: float = 0.5
    seed: int = 0


def reading_queue(
    predictions: pd.DataFrame, class_labels: list[int], settings: QueueSettings
) -> pd.DataFrame:
    """The queue of ``predictions`` (a run's or an evaluation's image predictions, with
    ``PatientID``): ``image_id``, ``AccessionNumber``, ``PatientID``, ``label``,
    ``predicted_label``, ``confidence`` and ``control`` (kept for the agreement, never shown).

    The errors are ordered by the model's confidence, highest first; each control takes a random
    place among them (seeded: the same queue for every reader and every start).
    """
    probs = predictions[[f"prob_class{c}" for c in class_labels]].to_numpy(dtype=float)
    frame = pd.DataFrame(
        {
            "image_id": predictions["image_id"].astype(str),
            "AccessionNumber": predictions["AccessionNumber"].astype(str),
            "PatientID": predictions["PatientID"].astype(str),
            "label": predictions["true_label"].astype(int),
            "predicted_label": predictions["predicted_label"].astype(int),
            "confidence": probs.max(axis=1).round(4),
        }
    )
    wrong = frame["label"] != frame["predicted_label"]
    errors = frame[wrong].sort_values(["confidence", "image_id"], ascending=[False, True], kind="stable")
    if settings.errors:
        errors = errors.head(settings.errors)
    rng = np.random.default_rng(settings.seed)
    correct = frame[~wrong].sort_values("image_id")
    count = min(len(correct), int(round(len(errors) * settings.controls)))
    controls = correct.iloc[np.sort(rng.choice(len(correct), size=count, replace=False))]
    order = list(errors.assign(control=False).itertuples(index=False))
    for row in controls.assign(control=True).itertuples(index=False):
        order.insert(int(rng.integers(0, len(order) + 1)), row)
    return pd.DataFrame(order, columns=[*frame.columns, "control"]).reset_index(drop=True)


def still_to_read(queue: pd.DataFrame, read: set[str]) -> pd.DataFrame:
    """The queue without the images a reader has read (where they resume)."""
    return queue[~queue["image_id"].isin(read)].reset_index(drop=True)
