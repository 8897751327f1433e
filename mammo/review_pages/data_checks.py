"""The review's data checks: classes per split and patient, what was left out, duplicated pixels,
and the crops that kept nearly the whole image."""

from __future__ import annotations

from collections import Counter
from html import escape
from pathlib import Path

import pandas as pd

from mammo.data.breast import NEARLY_WHOLE
from mammo.data.cache import entry_name, stored_crop_share
from mammo.review_pages import render

SMALL_CROP = 0.25
"""A breast crop that keeps less than this share of the file may have found a label or a marker."""


def data_checks(source, outliers: pd.DataFrame, cards: dict, classes: list[int]) -> str:
    files = pd.DataFrame(source.manifest.get("files", []))
    parts = [class_distribution(source, files), left_out(source.manifest), duplicates(files)]
    parts.append(crop_section(source, outliers, cards, classes))
    return "".join(parts)


def cache_folder(source) -> str | None:
    """The run's disk cache folder (``None`` when its images were kept in memory)."""
    return ((source.summary.get("data_config") or {}).get("cache") or {}).get("folder")


def crop_outliers(source, limit: int) -> pd.DataFrame:
    """The predicted images whose breast crop kept a very small (< 25 %) or nearly the whole
    (>= 95 %) share of the file, with ``crop_share``; read from the disk cache entries' headers
    (32 bytes each), so empty for a run without a disk cache. At most ``limit`` of each kind."""
    folder = cache_folder(source)
    if not folder or not Path(folder).is_dir():
        return source.predictions.head(0).assign(crop_share=[])
    sha_of = {f["image_id"]: f.get("sha256", "") for f in source.manifest.get("files", [])}
    frame = source.predictions.copy()
    frame["crop_share"] = [
        stored_crop_share(Path(folder) / entry_name(acc, image_id, sha_of.get(image_id, "")))
        for acc, image_id in zip(frame["AccessionNumber"], frame["image_id"])
    ]
    shares = frame["crop_share"].astype(float)
    small = frame[shares < SMALL_CROP].sort_values("crop_share").head(limit)
    whole = frame[shares >= NEARLY_WHOLE].sort_values("crop_share", ascending=False).head(limit)
    return pd.concat([small, whole])


def crop_section(source, outliers: pd.DataFrame, cards: dict, classes: list[int]) -> str:
    kinds = f"under {SMALL_CROP:.0%} or {NEARLY_WHOLE:.0%} or more of the file"
    title = f"<h3>Crops that kept {kinds}: {len(outliers)}</h3>"
    folder = cache_folder(source)
    if not folder:
        return title + '<p class="muted">read from the disk cache: this run kept its images in memory</p>'
    figures = "".join(
        render.card(
            row,
            {**cards.get(row["image_id"], {}), "note": f"the crop kept {row['crop_share']:.0%} of the file"},
            classes,
        )
        for _, row in outliers.iterrows()
    )
    return title + (f'<div class="cards">{figures}</div>' if figures else "")


def class_distribution(source, files: pd.DataFrame) -> str:
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
        patients = part.drop_duplicates("PatientID")["label"].value_counts()
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


def duplicates(files: pd.DataFrame) -> str:
    """The same file content (SHA-256) under two patients (a leak between splits) or two labels."""
    if files.empty or "sha256" not in files:
        return ""
    rows = []
    for sha, part in files.groupby("sha256"):
        if part["PatientID"].nunique() > 1 or part["label"].nunique() > 1:
            rows.append(
                [
                    escape(", ".join(part["image_id"])),
                    escape(", ".join(map(str, part["PatientID"].unique()))),
                    escape(", ".join(map(str, part["label"].unique()))),
                    sha[:12],
                ]
            )
    title = f"<h3>Same pixels under two patients or two labels: {len(rows)}</h3>"
    return title + (render.table(["images", "patients", "labels", "sha256"], rows) if rows else "")
