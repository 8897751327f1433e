"""Build ``review/index.html`` (and its card images) for a run, an evaluation or a CV job."""

from __future__ import annotations

import html
import json
import logging
import shutil
import time
from html import escape
from pathlib import Path

import pandas as pd

from mammo.artifacts.io import atomic_write_text
from mammo.core.errors import ConfigError
from mammo.evaluation.levels import unit_predictions
from mammo.evaluation.subgroups import write_subgroups
from mammo.review_pages import render
from mammo.review_pages.cards import ranked_cells, write_cards
from mammo.review_pages.data_checks import data_checks, preprocessing_outliers
from mammo.review_pages.privacy import deidentified
from mammo.review_pages.sources import SPLIT_TITLES, ReviewSource, coverage, expected_images, read_source

log = logging.getLogger("mammo")
DEIDENTIFIED = (
    "De-identified: patient (P-), exam (E-) and image (I-) ids are pseudonyms that only this "
    "machine's key (or MAMMO_PSEUDONYM_KEY) relates to the data; no file path is shown."
)


def build_review(
    folder: Path,
    split: str = "auto",
    per_cell: int = 24,
    resamples: int = 1000,
    seed: int = 42,
    deidentify: bool = False,
) -> Path:
    """Write ``<folder>/review/index.html``; returns its path. Reads the folder's own files and the
    DICOMs of the images shown; never trains. ``deidentify``: a page that can be shared
    (:mod:`mammo.review_pages.privacy`)."""
    start = time.perf_counter()
    source = read_source(Path(folder), split)
    if deidentify:
        source = deidentified(source)
    out = source.folder / "review"
    shutil.rmtree(out / "cards", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    cells = ranked_cells(source.predictions)
    shown = {cell: per_cell if cell[0] != cell[1] else max(1, per_cell // 4) for cell in cells}
    exams = wrong_exams(source.predictions, per_cell)
    exam_images = source.predictions.merge(
        exams[["PatientID", "AccessionNumber"]], on=["PatientID", "AccessionNumber"]
    )
    outliers = preprocessing_outliers(source, per_cell)
    rows = pd.concat(
        [*(frame.head(shown[cell]) for cell, frame in cells.items()), exam_images, outliers.shown]
    )
    cards = write_cards(source, rows.drop_duplicates("image_id"), out)
    classes = source.class_labels
    errors = [c for c in sorted(cells, key=lambda c: -len(cells[c])) if c[0] != c[1]]
    correct = [c for c in sorted(cells) if c[0] == c[1]]
    sections = [
        ("results", "Results", results(source, cells, classes)),
        ("errors", "Errors, most confident first", galleries(errors, cells, shown, cards, classes)),
        ("exams", "Exams, most confident errors first", render.exams(exams, exam_images, cards, classes)),
        ("correct", "Correct, a sample per class", galleries(correct, cells, shown, cards, classes)),
        ("subgroups", "Subgroups", subgroups(source, resamples, seed)),
        ("data", "Data checks", data_checks(source, outliers, cards, classes)),
        ("training", "Training", training(source, out)),
    ]
    title = f"Review of {source.folder.name}: {source.kind}, {SPLIT_TITLES.get(source.split, source.split)}"
    path = atomic_write_text(out / "index.html", render.page(title, sections))
    log.info("Review: %s (%d cards, %.1f s)", path, len(cards), time.perf_counter() - start)
    return Path(path)


def wrong_exams(images: pd.DataFrame, limit: int) -> pd.DataFrame:
    """The exams whose prediction (the mean of their images', as the exam level has it; an exam's
    label is its denser breast's) is wrong, the most confident first, at most ``limit``."""
    exams, _ = unit_predictions(images, "exam", "mean")
    wrong = exams[exams["true_label"] != exams["predicted_label"]]
    score = wrong.apply(lambda row: row[f"prob_class{int(row['predicted_label'])}"], axis=1)
    return (
        wrong.loc[score.sort_values(ascending=False, kind="stable").index].head(limit)
        if len(wrong)
        else wrong
    )


REVIEW_SETTINGS = (False, True, "deidentified")
"""``review=``: no page, the page, or a de-identified page (ids as pseudonyms, no paths)."""


def check_review_setting(value) -> None:
    if value not in REVIEW_SETTINGS and value is not None:
        raise ConfigError(f"review={value!r}: expected false, true or deidentified")


def write_review(folder: Path, resamples: int, seed: int, setting=True) -> None:
    """``review=true`` (or ``deidentified``) at the end of a run or evaluation: its review page; a
    failure is a warning, the run stands."""
    try:
        build_review(folder, resamples=resamples, seed=seed, deidentify=setting == "deidentified")
    except Exception as exc:  # e.g. the DICOM folder gone: the run's own files are complete
        log.warning("Review not written: %s", exc)


def galleries(order, cells, shown, cards, classes) -> str:
    if not order:
        return '<p class="muted">none</p>'
    return render.LEGEND + "".join(render.gallery(c, cells[c], shown[c], cards, classes) for c in order)


def results(source: ReviewSource, cells: dict, classes: list[int]) -> str:
    """The split's metrics with their intervals at each level, and the confusion matrix."""
    levels = {}
    if source.kind == "cross-validation":
        oof = json.loads((source.folder / "cv_summary.json").read_text()).get("oof_metrics") or {}
        levels["image"] = {k: v for k, v in oof.items() if isinstance(v, int | float)}
    for level, suffix in (("image", ""), ("breast", "_breast"), ("exam", "_exam")):
        path = source.folder / "metrics" / f"{source.split}{suffix}_metrics.json"
        if path.is_file():
            levels[level] = json.loads(path.read_text())
    images, patients = len(source.predictions), source.predictions["PatientID"].nunique()
    intro = f"<p>{images} images of {patients} patients. Each count links to its images.</p>"
    if source.deidentified:
        intro += f"<p class='muted'>{DEIDENTIFIED}</p>"
    missing = coverage(images, expected_images(source.summary, source.split), source.split)
    intro += f"<p class='note'>{html.escape(missing, quote=False)}</p>" if missing else ""
    return intro + render.confusion(cells, classes) + render.metrics_tables(levels)


def subgroups(source: ReviewSource, resamples: int, seed: int) -> str:
    """The split's ``metrics/<split>_subgroups.json`` (computed from the predictions if the run
    predates it)."""
    path = source.folder / "metrics" / f"{source.split}_subgroups.json"
    if path.is_file():
        entries = json.loads(path.read_text())["subgroups"]
    else:
        entries = write_subgroups(source.folder, source.split, source.predictions, resamples, seed)
    name = escape(path.name)
    link = f'<p><a href="../metrics/{name}">{name}</a>: every metric of each subgroup</p>'
    return render.subgroups_table(entries) + (link if path.is_file() else "")


def training(source: ReviewSource, out: Path) -> str:
    """The training curves (copied in: the review folder stands alone), the key settings and links."""
    run = source.folder if source.kind != "cross-validation" else source.folder / "fold_1" / "results"
    parts = []
    curves = run / "plots" / "train_curves.png"
    if curves.is_file():
        shutil.copy(curves, out / "train_curves.png")
        parts.append('<img src="train_curves.png" alt="training curves" style="max-width:900px">')
    settings = source.summary.get("hyperparameters") or source.summary.get("model_config") or {}
    rows = [[escape(str(k)), escape(v if isinstance(v, str) else json.dumps(v))] for k, v in settings.items()]
    parts.append(render.table(["setting", "value"], rows))
    files = [
        f for f in ("summary.json", "run.log") if (source.folder / f).is_file() and not source.deidentified
    ]
    parts.append("<p>" + " · ".join(f'<a href="../{f}">{f}</a>' for f in files) + "</p>")
    return "".join(parts)
