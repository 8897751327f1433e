"""The app's Predict part: an upload's density at image, breast and exam level, as
``mammo.predict`` computes it (the same files, the same functions, the same numbers), with a card
per image: the file with the crop box and the chest-wall edge, the model's input, and the Grad-CAM
of the predicted class."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mammo.core.errors import DataError
from mammo.data.images import Preprocessing
from mammo.evaluation.gradcam import gradcam
from mammo.evaluation.prediction import LETTERS, predict_files
from mammo.review_pages.cards import card_image, card_name
from mammo.webapp.uploads import receive_upload

log = logging.getLogger("mammo")


@dataclass
class ExamView:
    """What the page shows of one upload (its files are under ``folder``)."""

    folder: Path
    summary: str
    """Markdown: each exam's density and probabilities, its breasts', the unreadable files."""
    images: pd.DataFrame
    breasts: pd.DataFrame | None
    exams: pd.DataFrame | None
    unreadable: pd.DataFrame
    cards: list[tuple[Path, str]] = field(default_factory=list)
    """Each image's card and its caption."""

    def shown_images(self) -> pd.DataFrame:
        """The image table as the page shows it: each file by its name in the upload."""
        files = self.folder / "files"
        return self.images.assign(
            image=self.images["image"].map(lambda p: Path(p).relative_to(files).as_posix())
        )

    @property
    def downloads(self) -> list[Path]:
        """The CSV files of the upload: ``mammo.predict``'s own."""
        names = ("predictions.csv", "predictions_breast.csv", "predictions_exam.csv", "unreadable.csv")
        return [self.folder / n for n in names if (self.folder / n).is_file()]


class ExamPredictor:
    """A checkpoint loaded once, predicting each upload into ``uploads/upload_N/`` of ``out``.

    Args:
        checkpoint: a :func:`~mammo.models.ensemble.load_predictor` result, its model on its device.
        out: the app's run folder.
        batch_size: images per forward pass.
        aggregate: how images make a breast's or exam's probabilities (``eval.aggregate``).
        max_bytes: the most an upload may hold (unpacked).
    """

    def __init__(self, checkpoint, out: Path, batch_size: int, aggregate: str, max_bytes: int) -> None:
        self.checkpoint, self.out = checkpoint, Path(out)
        self.batch_size, self.aggregate, self.max_bytes = batch_size, aggregate, max_bytes
        self.preprocessing = Preprocessing(**checkpoint.preprocessing)

    def next_folder(self) -> Path:
        uploads = self.out / "uploads"
        taken = [
            int(p.name.split("_")[-1]) for p in uploads.glob("upload_*") if p.name.split("_")[-1].isdigit()
        ]
        return uploads / f"upload_{max(taken, default=0) + 1}"

    def predict(self, paths: list) -> ExamView:
        """The upload's predictions and cards; one line (:class:`DataError`) when it holds no
        readable mammogram, and then nothing of it is kept."""
        folder, started = self.next_folder(), time.perf_counter()
        try:
            view = self.predict_into(folder, paths)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        log.info(
            "Upload %s: %d image(s) predicted, %d unreadable, in %.3f s",
            folder.name,
            len(view.images),
            len(view.unreadable),
            time.perf_counter() - started,
        )
        return view

    def predict_into(self, folder: Path, paths: list) -> ExamView:
        files, kept = receive_upload(paths, folder / "files", self.max_bytes), {}
        predicted, _, _ = predict_files(
            self.checkpoint, files, folder, self.batch_size, 0, False, self.aggregate, kept
        )
        bad = pd.read_csv(folder / "unreadable.csv", dtype=str)
        if not predicted:
            first = f"{Path(bad['image'].iloc[0]).name}: {bad['reason'].iloc[0]}"
            more = f" (and {len(bad) - 1} more file(s))" if len(bad) > 1 else ""
            raise DataError(f"upload: no readable mammogram: {first}{more}")
        images = pd.read_csv(folder / "predictions.csv", dtype={"AccessionNumber": str, "PatientID": str})
        bad["image"] = bad["image"].map(lambda p: Path(p).name)
        view = ExamView(folder, "", images, level_file(folder, "breast"), level_file(folder, "exam"), bad)
        prepared = {str(files[i]): made for i, made in kept.items()}
        view.cards = self.cards(images, [prepared[str(p)] for p in images["image"]], folder)
        view.summary = summary_text(view, self.checkpoint.class_labels)
        return view

    def cards(self, images: pd.DataFrame, prepared: list, folder: Path) -> list[tuple[Path, str]]:
        """A card per predicted image, from the images as they were predicted (decoded once);
        Grad-CAM where the model explains single images (not a multi-view model's, whose
        prediction belongs to the whole breast or exam)."""
        (folder / "cards").mkdir(parents=True, exist_ok=True)
        cams = self.grad_cams(images, prepared)
        out = []
        for row, made, cam in zip(images.itertuples(index=False), prepared, cams):
            path = folder / "cards" / card_name(Path(row.image).relative_to(folder / "files").as_posix())
            card_image(made, cam).save(path)
            out.append((path, f"{side_view(row)} · {LETTERS[int(row.predicted_density)]}"))
        return out

    def grad_cams(self, images: pd.DataFrame, prepared: list) -> list:
        """The Grad-CAM of each image's predicted class, in batches (``None`` each where the model
        does not explain single images)."""
        model, classes = self.checkpoint.explained, self.checkpoint.class_labels
        if self.checkpoint.unit is not None or model.hparams.get("embeddings_fusion"):
            return [None] * len(prepared)
        device = next(model.parameters()).device
        targets = torch.tensor([classes.index(int(d)) for d in images["predicted_density"]], device=device)
        cams = []
        for start in range(0, len(prepared), self.batch_size):
            part = prepared[start : start + self.batch_size]
            x = torch.from_numpy(np.stack([made.image for made in part]))[:, None].to(device)
            cams += list(gradcam(model, x, targets[start : start + len(part)]).cpu().numpy())
        return cams


def level_file(folder: Path, level: str) -> pd.DataFrame | None:
    path = folder / f"predictions_{level}.csv"
    return pd.read_csv(path, dtype=str) if path.is_file() else None


def side_view(row) -> str:
    """``L CC`` of a prediction row (``?`` for what its header does not say) and its file name."""
    side, view = (str(v) if isinstance(v, str) and v else "?" for v in (row.laterality, row.view))
    return f"{Path(row.image).name} · {side} {view}"


def summary_text(view: ExamView, classes: list[int]) -> str:
    """Markdown: per exam its density and probabilities, then its breasts'."""
    lines = []
    probs = [f"prob_class{c}" for c in classes]

    def shares(row) -> str:
        return " · ".join(f"{LETTERS[c]} {float(row[p]):.2f}" for c, p in zip(classes, probs))

    if view.exams is not None:
        for _, exam in view.exams.iterrows():
            lines.append(
                f"**Exam {exam['AccessionNumber']}: density {exam['predicted_letter']}** ({shares(exam)})"
            )
            if view.breasts is not None:
                for _, breast in view.breasts[
                    view.breasts["AccessionNumber"] == exam["AccessionNumber"]
                ].iterrows():
                    lines.append(
                        f"- breast {breast['laterality']}: {breast['predicted_letter']} ({shares(breast)})"
                    )
    lines.append(f"\n{len(view.images)} image(s) predicted.")
    if len(view.unreadable):
        lines.append(f"{len(view.unreadable)} file(s) not read, and given no density:")
        lines += [f"- {r.image}: {r.reason}" for r in view.unreadable.itertuples()]
    return "\n".join(lines)
