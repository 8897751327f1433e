"""Patient-grouped, class-stratified train/val split (scikit-learn's StratifiedGroupKFold)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
from sklearn.model_selection import StratifiedGroupKFold

from mammo.artifacts.io import atomic_open
from mammo.core.errors import DataError, OutputError

log = logging.getLogger("mammo.data")


def grouped_val_mask(
    labels: np.ndarray,
    groups: np.ndarray,
    val_fraction: float,
    seed: int,
    memo_dir: str | Path | None = None,
    setting: str = "data.val_fraction",
) -> np.ndarray:
    """Boolean mask of validation rows: about ``val_fraction`` of the data, whole patients only:
    the first of ``round(1 / val_fraction)`` folds (:func:`fold_numbers`, remembered in
    ``memo_dir``). ``setting`` names the fraction in errors (``data.test_fraction`` for the test
    split, which is drawn the same way).

    >>> y = np.array([0, 0, 1, 1, 0, 1, 0, 1, 0, 1]); g = np.repeat(np.arange(5), 2)
    >>> m = grouped_val_mask(y, g, 0.2, seed=0); int(m.sum()), len(set(g[m]) & set(g[~m]))
    (2, 0)
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"{setting}={val_fraction}: expected a fraction in (0, 1)")
    n_splits = max(2, round(1.0 / val_fraction))
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise DataError(
            f"data: {n_groups} patients cannot make a patient-grouped split with "
            f"{setting.removeprefix('data.')}={val_fraction} (needs at least {n_splits})"
        )
    mask = fold_numbers(labels, groups, n_splits, seed, f"{setting}={val_fraction}", memo_dir) == 1
    check_no_leakage(groups, mask)
    return mask


def fold_numbers(
    labels: np.ndarray, groups: np.ndarray, n_splits: int, seed: int, setting: str, memo_dir=None
) -> np.ndarray:
    """The validation fold (1..``n_splits``) of every row, from :func:`grouped_folds`.

    scikit-learn's greedy assignment is most of a repeated run's start-up at cohort scale (~40 ms
    per 1,000 images), and it depends only on its inputs: with ``memo_dir`` the result is kept in
    ``<memo_dir>/splits/<hash of labels, patients, folds, seed, scikit-learn version>.npy`` and
    read back by the next run over the same rows.
    """
    memo = _memo_path(memo_dir, labels, groups, n_splits, seed)
    if memo is not None and memo.is_file():
        try:
            numbers = np.load(memo, allow_pickle=False)
            if (
                numbers.shape == (len(labels),)
                and numbers.size
                and 1 <= numbers.min() <= numbers.max() <= n_splits
            ):
                return numbers
        except (OSError, ValueError):
            pass  # a damaged memo only costs recomputing it
    numbers = np.zeros(len(labels), dtype=np.int32)
    for k, (_, val_idx) in enumerate(grouped_folds(labels, groups, n_splits, seed, setting), start=1):
        numbers[val_idx] = k
    if memo is not None:
        try:
            with atomic_open(memo, "wb") as f:
                np.save(f, numbers)
        except OutputError as exc:  # a read-only cache folder: the next run recomputes it
            log.warning("The split is not remembered: %s", exc)
    return numbers


def _memo_path(memo_dir, labels: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> Path | None:
    if not memo_dir:
        return None
    digest = hashlib.sha256(f"{sklearn.__version__}|{n_splits}|{seed}|".encode())
    digest.update(np.asarray(labels, dtype=np.int64).tobytes())
    digest.update("\0".join(map(str, groups)).encode())
    return Path(memo_dir) / "splits" / f"{digest.hexdigest()[:24]}.npy"


def grouped_folds(labels: np.ndarray, groups: np.ndarray, n_splits: int, seed: int, setting: str):
    """scikit-learn's ``StratifiedGroupKFold`` (shuffled, seeded) folds as (train, val) indices.

    Where it cannot stratify (fewer images of every class than folds), the error names
    ``setting``, each density's patients and what to change, instead of scikit-learn's message.

    >>> y = np.array([0, 1, 1]); g = np.array([0, 1, 2])
    >>> next(grouped_folds(y, g, 5, 0, "data.val_fraction=0.2"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mammo.core.errors.DataError: data.val_fraction=0.2: ... (patients per density: 1: 1, 2: 2); ...
    """
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    try:
        yield from splitter.split(np.zeros(len(labels)), labels, groups)
    except ValueError as exc:
        if "n_splits" not in str(exc):
            raise
        per_class = pd.Series(groups).groupby(np.asarray(labels) + 1).nunique()
        rarest = int(per_class.idxmin())
        counts = ", ".join(f"{d}: {n}" for d, n in per_class.items())
        raise DataError(
            f"{setting}: a patient-grouped, class-stratified split into {n_splits} folds needs more patients"
            f" per density than the data has (patients per density: {counts}); the rarest, density"
            f" {rarest}, has {per_class[rarest]}. Raise data.val_fraction (fewer folds), add data, or give"
            " a preset split with data.split_csv"
        ) from None


def check_no_leakage(groups: np.ndarray, val_mask: np.ndarray) -> None:
    """Fail if any patient has images on both sides of the split."""
    shared = set(groups[val_mask]) & set(groups[~val_mask])
    if shared:
        raise DataError(f"split leaks {len(shared)} patient(s) across its sides: {sorted(shared)[:5]}")


def split_frame(
    table: pd.DataFrame, val_mask: np.ndarray, class_labels: list, test_mask: np.ndarray | None = None
) -> pd.DataFrame:
    """The split as saved in the run dir (``split.csv``): one row per image with its side,
    ``train``, ``val`` or ``test``."""
    out = table[["image_id", "AccessionNumber", "PatientID"]].copy()
    out["label"] = np.asarray(class_labels)[table["label"].to_numpy()]
    out["split"] = np.where(val_mask, "val", "train")
    if test_mask is not None:
        out.loc[test_mask, "split"] = "test"
    return out


def kfold_assignment(
    labels: np.ndarray, groups: np.ndarray, folds: int, seed: int, memo_dir: str | Path | None = None
) -> np.ndarray:
    """Fold number (1..``folds``) of every row: patient-grouped, class-stratified, every patient in
    exactly one validation fold. Depends only on the rows, ``folds`` and ``seed``.

    >>> y = np.array([0, 1] * 6); g = np.repeat(np.arange(6), 2)
    >>> f = kfold_assignment(y, g, 3, seed=0)
    >>> sorted(set(f.tolist())), all(len(set(f[g == p])) == 1 for p in g)
    ([1, 2, 3], True)
    """
    if folds < 2:
        raise DataError(f"cv.folds={folds}: expected at least 2")
    n_groups = len(np.unique(groups))
    if n_groups < folds:
        raise DataError(f"data: {n_groups} patients cannot make {folds} patient-grouped folds")
    return fold_numbers(labels, groups, folds, seed, f"cv.folds={folds}", memo_dir).astype(int)


def subset_mask(labels: np.ndarray, groups: np.ndarray, subset: float, seed: int) -> np.ndarray:
    """Rows to keep for ``data.subset``: about ``subset`` of them (a fraction in (0, 1], or a number
    of rows when > 1), whole patients only, stratified by class.

    Patients are shuffled (seeded) within their most frequent class and taken until each class
    has its share of images: one pass, so a few hundred images out of 100,000 cost milliseconds.

    >>> y = np.array([0, 1] * 20); g = np.repeat(np.arange(20), 2)
    >>> m = subset_mask(y, g, 0.25, seed=0); int(m.sum()), len(set(g[m]) & set(g[~m]))
    (10, 0)
    >>> y = np.repeat([0, 1, 2, 3], 25); g = np.arange(100)
    >>> np.bincount(y[subset_mask(y, g, 20, seed=1)]).tolist()
    [5, 5, 5, 5]
    """
    n = len(labels)
    fraction = subset / n if subset > 1 else subset
    if not 0.0 < fraction:
        raise DataError(f"data.subset={subset}: expected a fraction in (0, 1] or a number of images")
    if fraction >= 1.0:
        return np.ones(n, dtype=bool)
    frame = pd.DataFrame({"label": labels, "group": groups})
    counts = pd.crosstab(frame["group"], frame["label"])  # images per patient and class
    patients = pd.DataFrame({"size": counts.sum(axis=1), "label": counts.idxmax(axis=1)})
    patients = patients.iloc[np.random.default_rng(seed).permutation(len(patients))]
    quota = (patients.groupby("label")["size"].sum() * fraction).round()  # images per main class
    taken = patients.groupby("label")["size"].cumsum() - patients["size"]  # images before each patient
    chosen = patients.index[(taken < patients["label"].map(quota)).to_numpy()]
    if len(chosen) == 0:
        raise DataError(f"data.subset={subset}: too few patients to subsample")
    return frame["group"].isin(chosen).to_numpy()


def keep_subset(table: pd.DataFrame, val_ids: set, subset, seed: int) -> pd.DataFrame:
    """``data.subset``: the validation rows (``image_id`` in ``val_ids``) and a stratified share
    of the training patients (:func:`subset_mask`); the rest is neither preprocessed nor counted."""
    is_val = table["image_id"].isin(val_ids).to_numpy()
    train = table[~is_val]
    keep = is_val.copy()
    keep[~is_val] = subset_mask(train["label"].to_numpy(), train["PatientID"].to_numpy(), subset, seed)
    log.info(
        "data.subset=%s: training on %d of %d training images (%d patients)",
        subset,
        int(keep[~is_val].sum()),
        len(train),
        train["PatientID"][keep[~is_val]].nunique(),
    )
    return table[keep].reset_index(drop=True)


def train_val_tables(
    table: pd.DataFrame,
    val_mask: np.ndarray,
    class_labels: list,
    subset,
    seed: int,
    where: str = "",
    test_mask: np.ndarray | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training and validation rows of ``table`` (the ``test_mask`` rows in neither): no
    patient on both sides, the training part cut to ``subset`` (whole patients, stratified), and
    every class on both sides."""
    if test_mask is not None:
        table, val_mask = table[~test_mask], val_mask[~test_mask]
    check_no_leakage(table["PatientID"].to_numpy(), val_mask)
    train, val = table[~val_mask], table[val_mask]
    if subset is not None:
        train = train[subset_mask(train["label"].to_numpy(), train["PatientID"].to_numpy(), subset, seed)]
    for name, part in (("train", train), ("val", val)):
        missing = sorted(set(table["label"]) - set(part["label"]))
        if missing:
            patients = table.groupby("label")["PatientID"].nunique()
            counts = ", ".join(f"{class_labels[c]}: {patients[c]}" for c in missing)
            raise DataError(
                f"data: the {name} split{where} has no image of density "
                f"{[class_labels[c] for c in missing]} (patients with that density: {counts}); "
                "add data or change data.val_fraction / data.split_seed / data.split_csv / cv.folds"
            )
    return train, val
