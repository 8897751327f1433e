"""Breasts and exams as samples (``model=multiview``, ``model.unit=breast|exam``).

A **breast** is a patient's exam and side (``PatientID``, ``AccessionNumber``, ``laterality``),
an **exam** a patient's exam (``PatientID``, ``AccessionNumber``): the keys every dataset reader
fills in the sample table, and the ones the breast- and exam-level results use
(``mammo.evaluation.levels``). A unit's label is its images' label; an exam's is its denser
breast's, as BI-RADS assigns it. A unit whose images disagree on the label (at exam level: within
one of its breasts) is not trained on, and its results are left out as the levels leave it out.

:class:`UnitDataset` hands a multi-view model whole units: a batch of ``B`` units is its ``N``
images read through the same image source (memory or disk cache) as an image-level run's, with
their image labels and rows, and an ``assignment`` ``[B, N]`` that says which unit each image
belongs to. So a unit with one view only is one column, and an epoch over breasts reads the same
bytes as an epoch over their images.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from mammo.core.errors import ConfigError, DataError
from mammo.data.cache import BatchBuffers, _Batch

LEVELS = {"breast": ("PatientID", "AccessionNumber", "laterality"), "exam": ("PatientID", "AccessionNumber")}
UNITS = tuple(LEVELS)
TYPICAL_VIEWS = {"breast": 2, "exam": 4}
"""The views a unit usually has (CC and MLO; of both sides): a batch of ``batch_size`` images is
about ``batch_size // TYPICAL_VIEWS[unit]`` units."""


def check_unit(unit: str) -> str:
    if unit not in LEVELS:
        raise ConfigError(f"model.unit={unit!r}: expected one of {', '.join(UNITS)}")
    return unit


def per_image(values: torch.Tensor, assignment: torch.Tensor) -> torch.Tensor:
    """``[B, ...]`` values of units -> ``[N, ...]``, each image its unit's (``assignment`` ``[B, N]``)."""
    return values[assignment.argmax(dim=0).to(values.device)]


def key_values(frame: pd.DataFrame, unit: str) -> pd.DataFrame:
    """The unit's key columns of ``frame`` as stripped text ('' where a value is missing)."""
    return pd.DataFrame(
        {
            key: (frame[key] if key in frame else pd.Series("", index=frame.index))
            .fillna("")
            .astype(str)
            .str.strip()
            for key in LEVELS[check_unit(unit)]
        },
        index=frame.index,
    )


def check_unit_keys(table: pd.DataFrame, unit: str, where: str) -> None:
    """Every image of a labelled table names its unit, or one line says which one does not."""
    keys = key_values(table, unit)
    for key in keys.columns:
        empty = keys[key].eq("")
        if empty.any():
            first = table.loc[empty].iloc[0]
            name = first.get("relpath", first.get("image_id", ""))
            raise DataError(
                f"model.unit={unit}: {int(empty.sum())} image(s) of {where} have no {key} (first: {name}); "
                f"a {unit} needs {', '.join(LEVELS[unit])} on every image"
                + (
                    " (data.laterality_column, or ImageLaterality in the header)"
                    if key == "laterality"
                    else ""
                )
            )


def unit_codes(frame: pd.DataFrame, unit: str) -> np.ndarray:
    """Each row's unit number (0, 1, ... in order of first appearance); a row with a missing key
    value is a unit of its own."""
    keys = key_values(frame, unit)
    codes = keys.groupby(list(keys.columns), sort=False).ngroup().to_numpy()
    alone = keys.eq("").any(axis=1).to_numpy()
    codes = np.where(alone, codes.max(initial=-1) + 1 + np.cumsum(alone), codes)
    return pd.factorize(codes)[0]


def unit_labels(labels: np.ndarray, codes: np.ndarray, sides: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each unit's label (the maximum of its breasts') and whether every breast's images agree."""
    frame = pd.DataFrame({"unit": codes, "side": sides, "label": labels})
    per_breast = frame.groupby(["unit", "side"], sort=False)["label"].agg(["nunique", "max"])
    per_unit = per_breast.groupby(level="unit").agg({"nunique": "max", "max": "max"}).sort_index()
    return per_unit["max"].to_numpy(), per_unit["nunique"].to_numpy() == 1


def assignment_matrix(codes: np.ndarray) -> torch.Tensor:
    """``[B, N]`` (float32): 1 where image ``n`` belongs to the ``b``-th unit of ``codes`` (in order
    of first appearance)."""
    order = pd.factorize(np.asarray(codes))[0]
    out = torch.zeros(int(order.max(initial=-1)) + 1, len(order))
    out[torch.from_numpy(order), torch.arange(len(order))] = 1.0
    return out


def whole_unit_batches(codes: np.ndarray, batch_size: int) -> list[list[int]]:
    """Row positions in batches of ``batch_size`` whole units (units in order of first appearance)."""
    members = pd.Series(np.arange(len(codes))).groupby(np.asarray(codes), sort=False).apply(list).tolist()
    return [sum(members[i : i + batch_size], []) for i in range(0, len(members), batch_size)]


class UnitDataset(Dataset):
    """Items are units; a batch of them is ``(images [N, 1, H, W], image labels [N], rows [N],
    assignment [B, N])``.

    Args:
        table: the images (``label``, the unit's keys; index = the sample table's rows).
        source: their :class:`~mammo.data.cache.ImageSource` (``source.select`` of the rows).
        unit: ``breast`` or ``exam``.
        agreeing_only: leave out the units whose images disagree on the label (for training).
        buffers: the batches' memory (a datamodule's, shared; else one of its own).
    """

    def __init__(
        self,
        table: pd.DataFrame,
        source,
        unit: str,
        agreeing_only: bool = False,
        buffers: BatchBuffers | None = None,
    ) -> None:
        codes = unit_codes(table, unit)
        sides = key_values(table, "breast")["laterality"].to_numpy()
        labels, agree = unit_labels(table["label"].to_numpy(), codes, sides)
        members = pd.Series(np.arange(len(table))).groupby(codes, sort=True).apply(np.asarray).tolist()
        kept = np.flatnonzero(agree) if agreeing_only else np.arange(len(members))
        self.unit, self.source, self.buffers = unit, source, buffers or BatchBuffers()
        self.members = [members[u] for u in kept]
        self.labels = labels[kept]  # each unit's label (0-based)
        self.disagreeing = int((~agree).sum())
        self.image_labels = table["label"].to_numpy()
        self.rows = table.index.to_numpy()  # the images' rows, as DicomDataset's

    def __len__(self) -> int:
        return len(self.members)

    def __getitems__(self, indices: list[int]):
        positions = np.concatenate([self.members[i] for i in indices])
        images = self.buffers.get((len(positions), 1, *self.source.preprocessing.shape), np.float16)
        after = [int(p) for i in getattr(indices, "after", ()) for p in self.members[i]]  # the next batch's
        self.source.read_batch(positions.tolist(), images[:, 0], after)
        codes = np.repeat(np.arange(len(indices)), [len(self.members[i]) for i in indices])
        return _Batch(
            (
                torch.from_numpy(images),
                torch.from_numpy(self.image_labels[positions]),
                torch.from_numpy(self.rows[positions]),
                assignment_matrix(codes),
            )
        )

    def __getitem__(self, i: int):
        return self.__getitems__([i])
