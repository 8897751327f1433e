"""The app's Browse part: a run's (or evaluation's) images as one filterable table (density,
split, view, laterality, scanner, the label file's subgroup columns, prediction and confidence),
its class and patient counts per split, and a whole exam's pictures."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from mammo.core.errors import DataError, MammoError
from mammo.data.images import Preprocessing, read_header
from mammo.evaluation.prediction import LETTERS, identity
from mammo.review_pages.cards import card_image, prepare
from mammo.review_pages.sources import read_source

SHOWN = ["image_id", "AccessionNumber", "PatientID", "split", "density", "laterality", "view", "scanner"]


class Catalogue:
    """Images to browse: a manifest's files (``data_manifest.json``'s ``files``), where each file
    is, each image's split (``None``: not split) and the model's predictions (``None``: none).
    :meth:`of_folder` reads a run's, evaluation's or CV folder's; :meth:`of_data` a data config's.
    """

    def __init__(
        self, files: list[dict], paths: dict, preprocessing: Preprocessing, split, predictions, where
    ):
        if not files:
            raise DataError(f"{where}: lists no images")
        self.files, self.paths, self.preprocessing = files, paths, preprocessing
        self.split, self.predictions, self.where = split, predictions, where

    @classmethod
    def of_folder(cls, folder: Path, preprocessing: Preprocessing) -> Catalogue:
        """A run's (its ``split.csv``), evaluation's or CV folder's images, with its predictions."""
        source = read_source(Path(folder))
        split_file = source.folder / "split.csv"
        split = (
            pd.read_csv(split_file, dtype=str).set_index("image_id")["split"]
            if split_file.is_file()
            else source.split
        )
        files = source.manifest.get("files", [])
        return cls(files, source.image_paths(), preprocessing, split, source.predictions, str(source.folder))

    @classmethod
    def of_data(cls, datamodule, preprocessing: Preprocessing) -> Catalogue:
        """A data config's images (``python -m mammo.app ... data=...``): read and checked as a run
        reads them, not split, no predictions."""
        datamodule.prepare_samples()
        table = datamodule.samples.table
        paths = {str(i): Path(p) for i, p in zip(table["image_id"], table["path"])}
        where = datamodule.samples.source.get("csv") or "the data"
        return cls(datamodule.manifest["files"], paths, preprocessing, None, None, f"data {where}")

    @cached_property
    def frame(self) -> pd.DataFrame:
        """Every image with its split, header facts and prediction (read once)."""
        files = pd.DataFrame(self.files)
        files["image_id"] = files["image_id"].astype(str)
        if isinstance(self.split, pd.Series):
            files["split"] = files["image_id"].map(self.split).fillna("")
        else:
            files["split"] = self.split or "not split"
        files["density"] = files["label"].map(lambda v: LETTERS.get(int(v), str(v)))
        scanner = files.get("manufacturer", pd.Series("", index=files.index)).fillna("")
        files["scanner"] = (scanner + " " + files.get("model_name", "").fillna("")).str.strip()
        files = files.join(self.header_facts(files["image_id"]))
        files = files.join(self.predicted(), on="image_id")
        extra = [
            c for c in files.columns if c not in {*SHOWN, "path", "size", "sha256", "label", "manufacturer"}
        ]
        extra = [c for c in extra if c not in ("model_name", "predicted", "confidence")]
        return files[[*SHOWN, *extra, "predicted", "confidence"]].fillna({"predicted": ""})

    def predicted(self) -> pd.DataFrame:
        """The model's density and confidence per image_id (empty without predictions)."""
        if self.predictions is None:
            return pd.DataFrame({"predicted": pd.Series(dtype=str), "confidence": pd.Series(dtype=float)})
        probs = self.predictions.filter(like="prob_class").to_numpy(dtype=float)
        return pd.DataFrame(
            {
                "predicted": self.predictions["predicted_label"].map(lambda v: LETTERS[int(v)]).to_numpy(),
                "confidence": probs.max(axis=1).round(3),
            },
            index=self.predictions["image_id"].astype(str),
        )

    def header_facts(self, image_ids: pd.Series) -> pd.DataFrame:
        """Each image's laterality and view from its file's header (read in threads)."""

        def facts(image_id: str) -> dict:
            path = self.paths.get(image_id)
            try:
                who = identity(read_header(path)) if path is not None else {}
            except MammoError:
                who = {}
            return {"laterality": who.get("laterality", ""), "view": who.get("view", "")}

        with ThreadPoolExecutor(8) as pool:
            return pd.DataFrame(list(pool.map(facts, image_ids)), index=image_ids.index)

    def table(self, split: str = "all", density: str = "all", text: str = "") -> pd.DataFrame:
        """The images of ``split`` and ``density`` (``all``: any) whose ids contain ``text``."""
        frame = self.frame
        if split != "all":
            frame = frame[frame["split"] == split]
        if density != "all":
            frame = frame[frame["density"] == density]
        if text:
            hits = frame[["image_id", "AccessionNumber", "PatientID"]].apply(
                lambda column: column.astype(str).str.contains(text, case=False, regex=False)
            )
            frame = frame[hits.any(axis=1)]
        return frame.reset_index(drop=True)

    def counts(self) -> pd.DataFrame:
        """Per split: images, patients and images of each density."""
        frame = self.frame
        per_class = pd.crosstab(frame["split"], frame["density"])
        out = pd.DataFrame(
            {
                "images": frame.groupby("split").size(),
                "patients": frame.groupby("split")["PatientID"].nunique(),
            }
        ).join(per_class)
        return out.reset_index()

    def prepared(self, row):
        """``row``'s image as the model's preprocessing makes it; ``None`` when its file is gone
        or unreadable (the review's rule: :func:`mammo.review_pages.cards.prepare`)."""
        made = prepare({"laterality": row.laterality}, self.paths.get(row.image_id), self.preprocessing)
        return None if isinstance(made, dict) else made

    def thumbnails(self, frame: pd.DataFrame, limit: int = 24) -> list[tuple[np.ndarray, str]]:
        """The first ``limit`` images of ``frame`` (a :meth:`table`) as their files show them
        (windowed and downscaled), captioned with id and density."""
        out = []
        for row in frame.head(limit).itertuples(index=False):
            if (prepared := self.prepared(row)) is None:
                continue
            thumb = (np.clip(prepared.thumb, 0, 1) * 255).astype(np.uint8)
            out.append((thumb, f"{row.image_id} · {row.density}"))
        return out

    def exam(self, accession: str) -> list[tuple[np.ndarray, str]]:
        """The pictures of every image of exam ``accession`` (file with crop box, model input)."""
        rows = self.frame[self.frame["AccessionNumber"] == str(accession)]
        if rows.empty:
            raise DataError(f"exam {accession!r}: not in {self.where}")
        out = []
        for row in rows.itertuples(index=False):
            if (prepared := self.prepared(row)) is None:
                continue
            caption = f"{row.laterality} {row.view} · label {row.density}"
            if row.predicted:
                caption += f" · model {row.predicted} ({row.confidence:.2f})"
            out.append((np.asarray(card_image(prepared, None)), caption))
        return out
