"""Predict density for unlabelled images (``python -m mammo.predict``), streamed to CSV."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.progress import Progress
from torch.utils.data import DataLoader, Dataset

from mammo.artifacts.files import read_predictions
from mammo.artifacts.io import write_csv
from mammo.core.errors import DataError
from mammo.data.cache import as_list
from mammo.data.images import Preprocessing, read_header
from mammo.data.labels import read_csv_table
from mammo.data.units import (
    LEVELS,
    TYPICAL_VIEWS,
    assignment_matrix,
    key_values,
    unit_codes,
    whole_unit_batches,
)
from mammo.evaluation.levels import unit_predictions
from mammo.models.device import autocast, to_device

log = logging.getLogger("mammo")
LETTERS = {1: "A", 2: "B", 3: "C", 4: "D", 5: "5"}


def input_files(spec: str, path_column: str) -> list[Path]:
    """The files named by ``input``: a file, a folder's files (sorted), or a CSV's paths."""
    path = Path(spec)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if path.suffix.lower() == ".csv" and path.is_file():
        table = read_csv_table(path, key="input", what="input CSV")
        if path_column not in table.columns:
            raise DataError(f"{path}: no {path_column!r} column; found: {', '.join(table.columns)}")
        return [path.parent / p for p in table[path_column]]
    if path.is_file():
        return [path]
    raise DataError(f"input: {spec} is not a file, folder or CSV")


IDENTITY = ("AccessionNumber", "PatientID", "laterality", "view")


def identity(header) -> dict[str, str]:
    """Which exam, patient, breast and view a file shows, from its header: ``AccessionNumber``
    (the StudyInstanceUID where it is missing), ``PatientID``, ``ImageLaterality`` (else
    ``Laterality``) and ``ViewPosition``; empty where the header has none."""

    def text(*keys: str) -> str:
        return next((str(header.get(k)).strip() for k in keys if str(header.get(k, "") or "").strip()), "")

    return {
        "AccessionNumber": text("AccessionNumber", "StudyInstanceUID"),
        "PatientID": text("PatientID"),
        "laterality": text("ImageLaterality", "Laterality").upper(),
        "view": text("ViewPosition").upper(),
    }


class ImageFiles(Dataset):
    """``(index, preprocessed image or None, identity (:func:`identity`), reason it is
    unreadable)`` per file. ``kept``: a dict that gets each file's
    :class:`~mammo.data.images.Prepared` by index (in-process loading only), for a caller that
    shows the images it predicted without decoding them again."""

    def __init__(self, files: list[Path], preprocessing: Preprocessing, kept: dict | None = None) -> None:
        self.files, self.preprocessing, self.kept = files, preprocessing, kept

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        try:
            header = read_header(self.files[i])
            prepared = self.preprocessing.prepare(self.files[i])
        except DataError as exc:
            return i, None, {}, str(exc)
        if self.kept is not None:
            self.kept[i] = prepared
        return i, prepared.image.astype(np.float16), identity(header), ""


def file_units(files: list[Path], unit: str) -> np.ndarray:
    """Each file's breast or exam (a number), from its header (:func:`identity`); a file whose
    header does not name it (or cannot be read) is a unit of its own."""
    identities = []
    for path in files:
        try:
            identities.append(identity(read_header(path)))
        except DataError:
            identities.append({})
    codes = unit_codes(pd.DataFrame(identities, columns=list(IDENTITY)), unit)
    sizes = np.bincount(codes, minlength=1)
    log.info(
        "Grouped %d file(s) into %d %s(s) from their headers (%d of one image)",
        len(files),
        len(set(codes.tolist())),
        unit,
        int((sizes == 1).sum()),
    )
    return codes


def write_unit_predictions(out: Path, aggregate: str, unit: str | None = None) -> dict[str, int]:
    """``predictions_breast.csv`` and ``predictions_exam.csv`` from ``predictions.csv`` (density is
    reported per exam): each unit's probabilities (:func:`~mammo.evaluation.levels.unit_predictions`),
    predicted density and letter; returns the number of units per level written. A multi-view
    model's (``unit``) images hold its units' probabilities, so its level's file is its own. A
    file whose header does not name its exam (or side) is a unit of its own, counted in the log."""
    images = read_predictions(out / "predictions.csv")
    if images.empty:
        return {}
    written = {}
    for level in ["exam"] if unit == "exam" else ["breast", "exam"]:
        alone = key_values(images, level).eq("").any(axis=1)
        if alone.all():
            log.info("No file names its %s (%s)", level, ", ".join(LEVELS[level]))
            continue
        if alone.any():
            log.info(
                "%d file(s) without %s in the header are %ss of their own (first: %s)",
                int(alone.sum()),
                " or ".join(LEVELS[level]),
                level,
                images.loc[alone, "image"].iloc[0],
            )
        units, _ = unit_predictions(images, level, aggregate)
        units = units.rename(columns={"predicted_label": "predicted_density"})
        letters = units["predicted_density"].map(LETTERS)
        units.insert(units.columns.get_loc("predicted_density") + 1, "predicted_letter", letters)
        write_csv(out / f"predictions_{level}.csv", units, float_format="%.9g")
        log.info("Predicted %d %s(s): %s", len(units), level, out / f"predictions_{level}.csv")
        written[level] = len(units)
    return written


@torch.inference_mode()
def stream_predictions(
    out: Path, loader, files: list[Path], checkpoint, stop_on_bad: bool, units: np.ndarray | None = None
) -> tuple[int, int]:
    """Append each batch's rows to ``predictions.csv`` (flushed per batch); returns the numbers
    of predicted and unreadable files. ``units``: each file's unit (:func:`file_units`) for a
    multi-view model, whose batches hold whole units."""
    classes = checkpoint.class_labels
    header = ["image", "AccessionNumber", "predicted_density", "predicted_letter"]
    header += [f"prob_class{c}" for c in classes] + list(IDENTITY[1:])
    predicted = unreadable = 0
    with (
        open(out / "predictions.csv", "w", newline="") as pred_file,
        open(out / "unreadable.csv", "w", newline="") as bad_file,
        Progress(transient=True) as progress,
    ):
        rows, bad = csv.writer(pred_file), csv.writer(bad_file)
        rows.writerow(header)
        bad.writerow(["image", "reason"])
        task = progress.add_task("Predicting", total=len(files))
        for batch in loader:
            good = [b for b in batch if b[1] is not None]
            for i, _, _, reason in (b for b in batch if b[1] is None):
                if stop_on_bad:
                    raise DataError(reason)
                bad.writerow([str(files[i]), reason])
                unreadable += 1
            if good:
                images = torch.from_numpy(np.stack([b[1] for b in good]))[:, None]
                device = next(checkpoint.model.parameters()).device
                views = [who.get("view") or "" for _, _, who, _ in good]  # a per-view ensemble reads them
                assignment = None if units is None else assignment_matrix(units[[b[0] for b in good]])
                with autocast(device):
                    probs = checkpoint.probabilities(to_device(images, device), views, assignment)
                probs = probs.double().cpu().numpy()
                for (i, _, who, _), p in zip(good, probs):
                    density = classes[int(p.argmax())]
                    probabilities = [f"{v:.9g}" for v in p]
                    ids = [who[k] for k in IDENTITY[1:]]
                    first = [str(files[i]), who["AccessionNumber"], density, LETTERS[density]]
                    rows.writerow([*first, *probabilities, *ids])
                predicted += len(good)
            pred_file.flush()
            progress.advance(task, len(batch))
    return predicted, unreadable


def predict_files(
    checkpoint,
    files: list[Path],
    out: Path,
    batch_size: int,
    workers: int,
    stop_on_bad: bool,
    aggregate: str,
    kept: dict | None = None,
) -> tuple[int, int, dict[str, int]]:
    """``predictions.csv``, ``unreadable.csv`` and the breast and exam files of ``files`` in
    ``out`` (what ``mammo.predict`` writes), with ``checkpoint``'s model where it is; returns the
    numbers of predicted and unreadable files and of units per level. A multi-view model's
    batches hold whole breasts (exams), grouped by header. ``kept``: see :class:`ImageFiles`."""
    dataset = ImageFiles(files, Preprocessing(**checkpoint.preprocessing), kept if workers == 0 else None)
    units = None
    if checkpoint.unit:
        units = file_units(files, checkpoint.unit)
        batches = whole_unit_batches(units, max(1, batch_size // TYPICAL_VIEWS[checkpoint.unit]))
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=as_list)
    else:
        loader = DataLoader(dataset, batch_size, num_workers=workers, collate_fn=as_list)
    predicted, unreadable = stream_predictions(out, loader, files, checkpoint, stop_on_bad, units)
    if unreadable:
        log.warning(
            "%d of %d file(s) unreadable; reasons in %s", unreadable, len(files), out / "unreadable.csv"
        )
    log.info("Predicted %d image(s): %s", predicted, out / "predictions.csv")
    return predicted, unreadable, write_unit_predictions(out, aggregate, checkpoint.unit)
