"""The app's Adjudicate part: a reader's queue of a run's (or evaluation's) images, each reading
appended to ``<folder>/readings/<reader>.csv`` before the next image shows, and the agreement
between readers, labels and the model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mammo.core.errors import DataError
from mammo.data.images import Preprocessing
from mammo.evaluation.agreement import agreement_table, readers_against_label
from mammo.evaluation.prediction import LETTERS
from mammo.readings.store import CANNOT_TELL, append_reading, read_readings, reader_file
from mammo.readings.worklist import QueueSettings, reading_queue, still_to_read
from mammo.review_pages.cards import card_image, prepare
from mammo.review_pages.sources import read_source

ANSWERS = {"A": "1", "B": "2", "C": "3", "D": "4", "cannot tell": CANNOT_TELL}
"""The reader's buttons and the reading each records."""


@dataclass
class Shown:
    """One image as a reader sees it: ``done`` of ``total`` read; ``image_id`` ``None`` when the
    queue is finished."""

    image_id: str | None
    picture: np.ndarray | None
    facts: str
    done: int
    total: int


class ReadingRoom:
    """The queue of ``folder``'s images (:func:`~mammo.readings.worklist.reading_queue`), the same
    for every reader and every start, and its readings files.

    Args:
        folder: a training run, evaluation or CV folder with predictions (the review's sources).
        preprocessing: how the model saw the images (the checkpoint's).
        settings: how many errors and controls the queue holds.
    """

    def __init__(self, folder: Path, preprocessing: Preprocessing, settings: QueueSettings) -> None:
        self.source = read_source(Path(folder))
        self.folder, self.preprocessing = self.source.folder, preprocessing
        predictions = self.source.predictions
        self.queue = reading_queue(predictions, self.source.class_labels, settings)
        self.paths = self.source.image_paths()
        self.views = predictions.set_index("image_id")[["laterality", "view"]].fillna("").to_dict("index")

    def read_by(self, reader: str) -> set[str]:
        path = reader_file(self.folder, reader)
        return set(read_readings(path)["image_id"]) if path.is_file() else set()

    def next_for(self, reader: str, blind: bool) -> Shown:
        """The first image of the queue ``reader`` has not read (where they resume)."""
        read = self.read_by(reader)
        rest = still_to_read(self.queue, read)
        done, total = len(self.queue) - len(rest), len(self.queue)
        if rest.empty:
            return Shown(None, None, f"All {total} images read: thank you.", done, total)
        row = rest.iloc[0]
        return Shown(row["image_id"], self.picture(row["image_id"]), self.facts(row, blind), done, total)

    def record(self, reader: str, image_id: str, answer: str, note: str, blind: bool) -> dict:
        """Append ``reader``'s ``answer`` (a key of :data:`ANSWERS`) for ``image_id`` (an image of
        the queue) to their file, flushed to disk; returns the record written."""
        if answer not in ANSWERS:
            raise DataError(f"reading: {answer!r} is not one of {', '.join(ANSWERS)}")
        found = self.queue[self.queue["image_id"] == image_id]
        if found.empty:
            raise DataError(f"reading: {image_id!r} is not in this folder's reading queue")
        row = found.iloc[0]
        record = {
            "image_id": image_id,
            "AccessionNumber": row["AccessionNumber"],
            "PatientID": row["PatientID"],
            "reading": ANSWERS[answer],
            "note": " ".join(str(note or "").split()),
            "blind": str(bool(blind)).lower(),
            "label": int(row["label"]),
            "predicted_label": int(row["predicted_label"]),
            "confidence": float(row["confidence"]),
        }
        return append_reading(self.folder, reader, record)

    def picture(self, image_id: str) -> np.ndarray | None:
        """The file with its crop box and chest wall, and the model's input (no Grad-CAM: a reader
        reads the image, not the model)."""
        prepared = prepare(self.views.get(image_id, {}), self.paths.get(image_id), self.preprocessing)
        if isinstance(prepared, dict):  # the file is gone or unreadable
            return None
        return np.asarray(card_image(prepared, None))

    def facts(self, row, blind: bool) -> str:
        where = self.views.get(row["image_id"], {})
        said = f"{row['image_id']} · {where.get('laterality', '')} {where.get('view', '')}".strip()
        if blind:
            return said
        label, model = LETTERS[int(row["label"])], LETTERS[int(row["predicted_label"])]
        return f"{said} · label {label} · model {model} ({float(row['confidence']):.2f})"

    def agreement(self, resamples: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Quadratic κ per pair with intervals, and the images the readers agree on against the label."""
        readings = read_readings(self.folder) if (self.folder / "readings").is_dir() else pd.DataFrame()
        if readings.empty:
            raise DataError(f"agreement: nobody has read an image of {self.folder} yet")
        classes = self.source.class_labels
        return (
            agreement_table(readings, self.queue, classes, resamples, seed),
            readers_against_label(readings, self.queue),
        )
