"""Which images are test, validation and training: the locked test split comes first.

The test split is held out of training **and** of model selection: its images are in neither the
training nor the validation rows (nor any CV fold), so they never choose the best epoch, stop a
run early, prune a trial or score an HPO objective. It comes from, in this order:

1. a preset split CSV's ``test`` rows (``data.split_csv``);
2. the dataset's official test split (VinDr-Mammo's ``test``; ``data.official_split=true``);
3. ``data.test_fraction`` of the patients, grouped and class-stratified like the validation split
   and seeded by ``data.split_seed``.

Without any of them there is no test split. Validation is then drawn from the remaining rows: the
preset CSV's ``val`` rows, else ``data.val_fraction`` of the remaining patients.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from mammo.core.errors import DataError
from mammo.data.settings import SplitSettings
from mammo.data.splits import check_no_leakage, grouped_val_mask
from mammo.data.tables import read_csv_table

log = logging.getLogger("mammo.data")

SPLIT_KEYS = ("image_id", "relpath", "AccessionNumber", "PatientID")
SIDES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}


def split_masks(
    table: pd.DataFrame, settings: SplitSettings, memo_dir: str | Path | None = None, with_val: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """The rows of the locked test split (all ``False`` when none is configured) and, with
    ``with_val``, the validation rows among the others: the preset CSV's ``val`` rows (the CSV is
    read once for both), else a patient-grouped, class-stratified ``data.val_fraction`` of the
    remaining patients."""
    sides = preset_sides(table, settings.split_csv) if settings.split_csv else None
    test = sides == "test" if sides is not None else test_rows(table, settings, memo_dir)
    if not with_val:
        return test, None
    if sides is not None:
        return test, sides == "val"
    rest = table[~test]
    labels, patients = rest["label"].to_numpy(), rest["PatientID"].to_numpy()
    val = np.zeros(len(table), dtype=bool)
    val[~test] = grouped_val_mask(labels, patients, settings.val_fraction, settings.split_seed, memo_dir)
    return test, val


def test_rows(table: pd.DataFrame, settings: SplitSettings, memo_dir: str | Path | None) -> np.ndarray:
    """The test split without a preset CSV: the dataset's official one, or ``data.test_fraction``."""
    if uses_official_test(table, settings):
        mask = (table["split"] == "test").to_numpy()
        log.info("Using the dataset's official test split (%d test images held out)", int(mask.sum()))
        return mask
    if settings.test_fraction is None:
        return np.zeros(len(table), dtype=bool)
    labels, patients = table["label"].to_numpy(), table["PatientID"].to_numpy()
    mask = grouped_val_mask(
        labels, patients, settings.test_fraction, settings.split_seed, memo_dir, "data.test_fraction"
    )
    log.info(
        "data.test_fraction=%s: %d images of %d patients held out as the test split",
        settings.test_fraction,
        int(mask.sum()),
        len(set(patients[mask])),
    )
    return mask


def uses_official_test(table: pd.DataFrame, settings: SplitSettings) -> bool:
    """Whether the dataset comes with its own test split (VinDr-Mammo) and it is used:
    ``data.official_split=true`` and no split CSV."""
    return bool(
        settings.official_split
        and not settings.split_csv
        and "split" in table
        and table["split"].isin(["train", "test"]).all()
        and (table["split"] == "test").any()
    )


def preset_sides(table: pd.DataFrame, split_csv: str | Path) -> np.ndarray:
    """Each row's side (``train``/``val``/``test``) from a split CSV: a ``split`` column
    (``validation`` and ``training`` are accepted too) and one key column, the first of
    ``image_id``, ``relpath``, ``AccessionNumber``, ``PatientID`` present. A run's own
    ``split.csv`` works as is.

    Every image must be covered; a key listed on two sides, or a patient whose images land on
    two sides, is an error.
    """
    split_csv = Path(split_csv)
    preset = read_csv_table(split_csv, key="data.split_csv", what="split CSV")
    key = next((c for c in SPLIT_KEYS if c in preset.columns), None)
    if key is None or "split" not in preset.columns:
        raise DataError(
            f"{split_csv}: needs a 'split' column and one of {', '.join(SPLIT_KEYS)}; "
            f"found: {', '.join(preset.columns)}"
        )
    sides = preset["split"].str.strip().str.lower().map(SIDES)
    unknown = preset.loc[sides.isna(), "split"]
    if len(unknown):
        row = int(unknown.index[0]) + 2
        raise DataError(
            f"{split_csv}: row {row}: unknown split {unknown.iloc[0]!r} (expected train, val or test)"
        )
    keys = preset[key].str.strip()
    per_key = pd.Series(sides.to_numpy(), index=keys).groupby(level=0).nunique()
    both = sorted(per_key.index[per_key > 1])
    if both:
        raise DataError(f"{split_csv}: {key} on two sides of the split: {both[:5]}")
    side_of = dict(zip(keys, sides))
    mapped = table[key].astype(str).map(side_of)
    if mapped.isna().any():
        missing = table.loc[mapped.isna(), key].astype(str).unique()
        raise DataError(
            f"{split_csv}: {len(missing)} {key} value(s) of the data not in the split: {list(missing[:5])}"
        )
    result = mapped.to_numpy().astype(str)
    patients = table["PatientID"].to_numpy()
    for side in ("val", "test"):
        check_no_leakage(patients, result == side)
    return result
