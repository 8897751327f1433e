"""The review's data checks: classes per split and patient, what was left out, duplicated pixels,
and the crops that kept nearly the whole image."""

from __future__ import annotations

from collections import Counter
from html import escape

import pandas as pd

from mammo.review_pages import render


def data_checks(source) -> str:
    files = pd.DataFrame(source.manifest.get("files", []))
    parts = [class_distribution(source, files), left_out(source.manifest), duplicates(files)]
    crops = ((source.summary.get("data_config") or {}).get("cache") or {}).get("nearly_whole_crop_images")
    if crops:
        listed = ", ".join(escape(c) for c in crops)
        parts.append(f"<h3>Crops that kept 95 % or more of the image</h3><p>{len(crops)}: {listed}</p>")
    return "".join(parts)


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
