"""The review's data checks: classes per split and patient, what was left out, duplicated pixels,
and the preprocessing outliers (how each image was made, as its disk cache entry records it)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, fields
from html import escape
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from mammo.data.cache import entry_name, stored_facts
from mammo.data.images import NEARLY_WHOLE, Facts
from mammo.data.scan import duplicate_groups
from mammo.review_pages import render

SMALL_CROP = 0.25
"""A breast crop that keeps less than this share of the file may have found a label or a marker."""
SMALL_INPUT = 1 / 3
"""A breast covering less than this share of the model input leaves most of the input black."""


class Outlier(NamedTuple):
    """One kind of preprocessing outlier: which images it takes (from their facts), the most
    extreme first, and what their cards say."""

    title: str
    picks: Callable[[pd.DataFrame], pd.DataFrame]
    """facts frame -> the rows of this kind, ordered for showing."""
    note: Callable[[pd.Series], str]
    """row -> the card's note."""


class Outliers(NamedTuple):
    """The outliers a review shows (capped per kind, with an ``outlier`` column naming the kind),
    and how many of each checked kind there are."""

    shown: pd.DataFrame
    counts: dict[str, int]
    checked: int
    """How many images' facts were read."""


OUTLIERS = {
    "crop": Outlier(
        f"Crops that kept under {SMALL_CROP:.0%} or {NEARLY_WHOLE:.0%} or more of the file",
        lambda f: pd.concat(
            [
                f[f["crop_share"] < SMALL_CROP].sort_values("crop_share"),
                f[f["crop_share"] >= NEARLY_WHOLE].sort_values("crop_share", ascending=False),
            ]
        ),
        lambda row: f"the crop kept {row['crop_share']:.0%} of the file",
    ),
    "input": Outlier(
        f"Breasts that cover under {SMALL_INPUT:.0%} of the model input",
        lambda f: f[f["input_share"] < SMALL_INPUT].sort_values("input_share"),
        lambda row: f"the breast covers {row['input_share']:.0%} of the input",
    ),
    "chest_wall": Outlier(
        "Chest-wall sides guessed from brightness (no Patient Orientation, no laterality)",
        lambda f: f[f["chest_wall_from"] == "brightness"],
        lambda row: "chest wall side guessed from brightness",
    ),
    "window": Outlier(
        "Windows from the percentile fallback (no VOI LUT, no Window Center/Width in the file)",
        lambda f: f[f["window"] == "percentile"],
        lambda row: "window from the percentile fallback",
    ),
}
"""The outlier kinds, in the order the data checks show them."""


def data_checks(source, outliers: Outliers, cards: dict, classes: list[int]) -> str:
    files = pd.DataFrame(source.manifest.get("files", []))
    parts = [class_distribution(source, files), left_out(source.manifest), duplicates(source.manifest, files)]
    parts += [several_patients(source.manifest), outlier_sections(source, outliers, cards, classes)]
    return "".join(parts)


def data_config(source) -> dict:
    return source.summary.get("data_config") or {}


def cache_folder(source) -> str | None:
    """The run's disk cache folder (``None`` when its images were kept in memory)."""
    return (data_config(source).get("cache") or {}).get("folder")


def preprocessing_outliers(source, limit: int) -> Outliers:
    """The predicted images that are preprocessing outliers (:data:`OUTLIERS`), at most ``limit``
    of each kind shown; read from the disk cache entries' headers (32 bytes each), so none for a
    run without a disk cache. The percentile window is an outlier only where the run's
    ``data.window`` is ``auto`` (a fallback, not the choice)."""
    facts = image_facts(source)
    window = (data_config(source).get("preprocessing") or {}).get("window", "auto")
    picked = {
        kind: outlier.picks(facts)
        for kind, outlier in OUTLIERS.items()
        if kind != "window" or window == "auto"
    }
    shown = pd.concat(
        [facts.head(0).assign(outlier=[])]
        + [rows.head(limit).assign(outlier=kind) for kind, rows in picked.items()]
    )
    return Outliers(shown, {kind: len(rows) for kind, rows in picked.items()}, len(facts))


def image_facts(source) -> pd.DataFrame:
    """The predictions with how each image was made (:class:`~mammo.data.images.Facts`
    columns), the images whose cache entry is missing left out."""
    folder = cache_folder(source)
    columns = [field.name for field in fields(Facts)]
    if not folder or not Path(folder).is_dir():
        return source.predictions.head(0).assign(**{c: [] for c in columns})
    sha_of = {f["image_id"]: f.get("sha256", "") for f in source.manifest.get("files", [])}
    keys = [
        entry_name(acc, image_id, sha_of.get(shown, ""))
        for (acc, image_id), shown in zip(source.entry_keys(), source.predictions["image_id"])
    ]
    made = stored_facts(Path(folder), keys)
    known = [f is not None for f in made]
    facts = pd.DataFrame([asdict(f) for f in made if f is not None], columns=columns)
    return pd.concat([source.predictions[known].reset_index(drop=True), facts], axis=1)


def outlier_sections(source, outliers: Outliers, cards: dict, classes: list[int]) -> str:
    if not cache_folder(source):
        mode = escape(str(data_config(source).get("cache_mode") or "memory"))
        return (
            "<h3>Preprocessing outliers</h3>"
            f'<p class="muted">read from the disk cache, whose entries record how each image was made: '
            f"this run used data.cache_mode={mode}; with data.cache_mode=disk its crops, breast shares, "
            "chest-wall and window sources are checked here</p>"
        )
    parts = []
    for kind, count in outliers.counts.items():
        rows = outliers.shown[outliers.shown["outlier"] == kind]
        figures = "".join(
            render.card(row, {**cards.get(row["image_id"], {}), "note": OUTLIERS[kind].note(row)}, classes)
            for _, row in rows.iterrows()
        )
        more = f' <span class="muted">(the first {len(rows)} shown)</span>' if len(rows) < count else ""
        parts.append(
            f"<h3>{escape(OUTLIERS[kind].title)}: {count} of {outliers.checked}{more}</h3>"
            + (f'<div class="cards">{figures}</div>' if figures else "")
        )
    return "".join(parts)


def class_distribution(source, files: pd.DataFrame) -> str:
    """Per split and class: the images, and the patients with at least one image of that class on
    that side (a patient whose images hold two densities counts under both)."""
    split = source.folder / "split.csv"
    table = pd.read_csv(split, dtype=str) if split.is_file() else None
    if table is None or files.empty:
        return ""
    label_of = files.set_index("image_id")["label"]
    table["label"] = table["image_id"].map(label_of)
    classes = sorted(label_of.unique())
    rows = []
    for name, part in table.groupby("split", sort=False):
        counts = part["label"].value_counts()
        patients = part.groupby("label")["PatientID"].nunique()  # those with an image of the class
        rows.append(
            [
                escape(name),
                *(f"{counts.get(c, 0)} <span class=muted>({patients.get(c, 0)} p.)</span>" for c in classes),
            ]
        )
    header = ["split", *(f"density {render.density(c)}" for c in classes)]
    return "<h3>Images (patients) per class and split</h3>" + render.table(header, rows)


def left_out(manifest: dict) -> str:
    parts = []
    for key, title in (("excluded", "Excluded rows"), ("skipped", "Skipped bad files and rows")):
        records = manifest.get(key) or []
        reasons = Counter(r.get("reason", "") for r in records)
        rows = [[escape(reason), n] for reason, n in reasons.most_common()]
        parts.append(
            f"<h3>{title}: {len(records)}</h3>" + (render.table(["reason", "rows"], rows) if rows else "")
        )
    return "".join(parts)


def duplicates(manifest: dict, files: pd.DataFrame) -> str:
    """The same file content (SHA-256) under two patients (a leak between splits) or two labels:
    the manifest's record, made before training (:func:`~mammo.data.scan.duplicate_groups`, which
    also reads a manifest from before the record)."""
    groups = manifest["duplicates"] if "duplicates" in manifest else duplicate_groups(files)
    rows = [
        [
            escape(", ".join(g["images"])),
            escape(", ".join(map(str, g["patients"]))),
            escape(", ".join(map(str, g["labels"]))),
            escape(g.get("kept") or ""),
            g["sha256"][:12],
        ]
        for g in groups
    ]
    title = f"<h3>Same pixels under two patients or two labels: {len(rows)}</h3>"
    header = ["images", "patients", "labels", "kept (data.on_duplicate=drop)", "sha256"]
    return title + (render.table(header, rows) if rows else "")


SHOWN_EXAMS = 20


def several_patients(manifest: dict) -> str:
    """The exams whose images carry several patient ids (per-image header ids), recorded before
    training (:class:`~mammo.data.scan.PatientSource`); nothing for a manifest from before the record."""
    if "patient_ids" not in manifest:
        return ""
    exams = manifest.get("exams_with_several_patients") or []
    rows = [
        [escape(e["AccessionNumber"]), escape(", ".join(e["patients"])), escape(", ".join(e["from"]))]
        for e in exams[:SHOWN_EXAMS]
    ]
    more = f' <span class="muted">(the first {SHOWN_EXAMS} shown)</span>' if len(exams) > SHOWN_EXAMS else ""
    setting = escape(str(manifest["patient_ids"].get("setting", "")))
    title = f"<h3>Exams whose images carry several patient ids (data.patient_id={setting}): {len(exams)}"
    title += f"{more}</h3>"
    return title + (render.table(["exam", "patient ids", "from"], rows) if rows else "")
