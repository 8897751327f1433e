"""What a review reads of a folder: its predictions, data manifest, summary and checkpoints."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mammo.artifacts.files import read_predictions
from mammo.core.errors import DataError
from mammo.evaluation.comparison import predictions_of

log = logging.getLogger("mammo")
SPLIT_TITLES = {"val": "validation", "test": "test split", "eval": "evaluation", "oof": "out-of-fold (CV)"}


@dataclass
class ReviewSource:
    """A reviewed folder's parts.

    Attributes:
        folder: the run, evaluation or CV directory.
        kind: ``training run``, ``evaluation`` or ``cross-validation``.
        split: whose predictions: ``val``, ``test``, ``eval`` or ``oof``.
        predictions: the image predictions, with ``PatientID`` (and ``fold`` for CV).
        manifest: ``data_manifest.json``.
        summary: ``summary.json`` (a CV job: its first fold's).
        checkpoints: ``best_model.pt`` per fold (``None``: the one model).
    """

    folder: Path
    kind: str
    split: str
    predictions: pd.DataFrame
    manifest: dict
    summary: dict
    checkpoints: dict = field(default_factory=dict)
    deidentified: bool = False
    """Ids are pseudonyms and no path is shown (``mammo.review_pages.privacy``)."""
    file_keys: dict = field(default_factory=dict)
    """De-identified: each shown image_id's real ``(AccessionNumber, image_id)`` (its cache entry)."""
    real_paths: dict | None = None
    """De-identified: each shown image_id's DICOM file (read for its card, never shown)."""

    @property
    def class_labels(self) -> list[int]:
        return [int(c.removeprefix("prob_class")) for c in self.predictions.filter(like="prob_class").columns]

    @property
    def dicom_root(self) -> Path | None:
        root = (self.summary.get("data_config") or {}).get("dicom_root")
        return Path(root) if root else None

    def image_paths(self) -> dict[str, Path]:
        """Each image's DICOM file, from the manifest's path below the data's root."""
        if self.real_paths is not None:
            return self.real_paths
        root = self.dicom_root or Path(".")
        return {f["image_id"]: root / f["path"] for f in self.manifest.get("files", []) if "path" in f}

    def shown_paths(self) -> dict[str, str]:
        """What a card says of its file: the path below the data's root (none when de-identified)."""
        return {f["image_id"]: f["path"] for f in self.manifest.get("files", []) if "path" in f}

    def entry_keys(self) -> list[tuple[str, str]]:
        """Each prediction row's real ``(AccessionNumber, image_id)``: the keys of its cache entry."""
        shown = zip(self.predictions["AccessionNumber"], self.predictions["image_id"])
        return [self.file_keys.get(image_id, (acc, image_id)) for acc, image_id in shown]

    def checkpoint_of(self, row) -> Path | None:
        return self.checkpoints.get(
            int(row["fold"]) if "fold" in row and self.kind == "cross-validation" else None
        )


def read_source(folder: Path, split: str = "auto") -> ReviewSource:
    """The review's view of ``folder``; one line naming what is missing otherwise."""
    folder = Path(folder)
    if (folder / "cv_summary.json").is_file():
        return _cv_source(folder)
    if not (folder / "summary.json").is_file():
        raise DataError(
            f"{folder}: not a mammo run, evaluation or CV directory (no summary.json or cv_summary.json)"
        )
    summary = json.loads((folder / "summary.json").read_text())
    name, frame, manifest = predictions_of(folder, split)
    say_if_some_are_missing(folder, name, len(frame), summary)
    if summary.get("experiment_type") == "evaluation":
        checkpoint = Path(summary.get("checkpoint") or "")
        return ReviewSource(folder, "evaluation", name, frame, manifest, summary, {None: checkpoint})
    return ReviewSource(
        folder, "training run", name, frame, manifest, summary, {None: folder / "best_model.pt"}
    )


EXPECTED_IMAGES = {"val": "num_val", "test": "num_test", "eval": "num_evaluated"}
"""summary.json's ``data_config`` key that counts the images of a split's predictions file."""


def expected_images(summary: dict, split: str) -> int | None:
    """How many images the split had when its predictions were written (``None``: not recorded)."""
    count = (summary.get("data_config") or {}).get(EXPECTED_IMAGES.get(split, ""))
    return int(count) if isinstance(count, int) else None


def say_if_some_are_missing(folder: Path, split: str, found: int, summary: dict) -> None:
    """A predictions file with fewer images than its split (cut at a line end) is reviewed, and
    the console and the page say "N of M" (:func:`coverage`)."""
    expected = expected_images(summary, split)
    if expected is not None and found < expected:
        log.warning("%s: %s", folder, coverage(found, expected, split))


def coverage(found: int, expected: int | None, split: str) -> str:
    """``""`` when every image of the split has a prediction, else what the review shows of it.

    >>> coverage(17, 20, "val")[:50]
    "the predictions file holds 17 of the val split's 2"
    """
    if expected is None or found >= expected:
        return ""
    return (
        f"the predictions file holds {found} of the {split} split's {expected} images (a cut or edited "
        f"file?): the review shows those {found}"
    )


def _cv_source(folder: Path) -> ReviewSource:
    oof = folder / "oof_predictions.csv"
    if not oof.is_file():
        raise DataError(f"{oof}: not found: the CV job has no out-of-fold predictions to review")
    frame = read_predictions(oof)
    folds = sorted(int(f) for f in frame["fold"].unique())
    runs = {k: folder / f"fold_{k}" / "results" for k in folds}
    first = runs[folds[0]]
    manifest = json.loads((first / "data_manifest.json").read_text())
    patient_of = {f["image_id"]: str(f["PatientID"]) for f in manifest["files"]}
    frame["PatientID"] = frame["image_id"].map(patient_of).fillna(frame["AccessionNumber"])
    summary = json.loads((first / "summary.json").read_text())
    checkpoints = {k: run / "best_model.pt" for k, run in runs.items()}
    return ReviewSource(folder, "cross-validation", "oof", frame, manifest, summary, checkpoints)
