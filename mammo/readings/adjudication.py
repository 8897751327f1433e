"""``data.readings`` and ``data.readings_rule``: train on the labels the readers adjudicated.

An image's readings decide its label when, under ``majority``, more than half of them (a
``cannot_tell`` counts as a reading) name one density, or, under ``unanimous``, every one of them
names the same density. Where that density differs from the label file's, the label is changed;
``data_manifest.json`` records each change (``relabelled``: image, original label, new label,
readers) and summary.json counts them. Splits and folds are still drawn on the label file's
labels, so that no image changes split: the runs before and after compare on the same images.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter

import pandas as pd

from mammo.core.errors import ConfigError, DataError
from mammo.readings.store import CANNOT_TELL, read_readings, readings_files

log = logging.getLogger("mammo")
RULES = ("majority", "unanimous")
FILED_LABEL = "label_as_filed"
"""The column that keeps the label file's labels of a relabelled table: what splits and folds are
stratified on, so that adjudicated labels never move an image to another split."""


def adjudicated(readings: pd.DataFrame, rule: str) -> dict[str, tuple[int, list[str]]]:
    """``{image_id: (density, readers)}`` for the images whose readings decide a density.

    >>> frame = pd.DataFrame({"image_id": ["a", "a", "a", "b", "b"], "reader": list("xyzxy"),
    ...                       "reading": ["3", "3", "cannot_tell", "2", "4"]})
    >>> adjudicated(frame, "majority"), adjudicated(frame, "unanimous")
    ({'a': (3, ['x', 'y'])}, {})
    """
    check_rule(rule)
    decided = {}
    for image_id, own in readings.groupby("image_id", sort=True):
        counts = Counter(own["reading"])
        reading, votes = counts.most_common(1)[0]
        enough = votes == len(own) if rule == "unanimous" else votes * 2 > len(own)
        if reading != CANNOT_TELL and enough:
            decided[str(image_id)] = (int(reading), sorted(own.loc[own["reading"] == reading, "reader"]))
    return decided


def check_rule(rule: str) -> None:
    """One line for a ``data.readings_rule`` that is not one of :data:`RULES`."""
    if rule not in RULES:
        raise ConfigError(f"data.readings_rule={rule!r}: expected majority or unanimous")


def apply_readings(
    table: pd.DataFrame, class_labels: list[int], sources, rule: str
) -> tuple[pd.DataFrame, dict]:
    """``table`` (0-based ``label``) with the adjudicated labels of the readings in ``sources``,
    and the manifest's record of them: ``rule``, ``files`` (name, SHA-256), ``read_images``,
    ``not_in_data`` and ``relabelled`` (``image_id``, ``original_label``, ``new_label``,
    ``readers``)."""
    check_rule(rule)
    readings = read_readings(sources)
    files = readings_files(sources)
    decided = adjudicated(readings, rule)
    index = {image_id: i for i, image_id in enumerate(table["image_id"].astype(str))}
    relabelled, labels = [], table["label"].to_numpy().copy()
    for image_id, (density, readers) in decided.items():
        if image_id not in index:
            continue
        if density not in class_labels:
            raise DataError(
                f"data.readings: image {image_id}: the readers' density {density} is not a class of "
                f"this run ({class_labels})"
            )
        row, original = index[image_id], class_labels[labels[index[image_id]]]
        if density != original:
            labels[row] = class_labels.index(density)
            relabelled.append(
                {"image_id": image_id, "original_label": original, "new_label": density, "readers": readers}
            )
    missing, read_images = sorted(set(readings["image_id"]) - set(index)), int(readings["image_id"].nunique())
    if missing:
        log.warning(
            "data.readings: %d read image(s) are not in this run's data (e.g. %s)", len(missing), missing[0]
        )
    log.info(
        "data.readings (%s): %d image(s) read, %d decided, %d label(s) changed",
        rule,
        read_images,
        len(decided),
        len(relabelled),
    )
    record = {
        "rule": rule,
        "files": [{"name": str(f), "sha256": hashlib.sha256(f.read_bytes()).hexdigest()} for f in files],
        "read_images": read_images,
        "not_in_data": len(missing),
        "relabelled": relabelled,
    }
    return table.assign(label=labels, **{FILED_LABEL: table["label"]}), record


def readings_summary(record: dict) -> dict:
    """summary.json's ``data_config.readings`` (none without ``data.readings``): the rule, the
    readings files, the images read and the labels changed (the list is in data_manifest.json)."""
    if not record:
        return {}
    counts = {"files": len(record["files"]), "read_images": record["read_images"]}
    return {"readings": {"rule": record["rule"], **counts, "relabelled": len(record["relabelled"])}}
