"""The review of a dataset before any training (``python -m mammo.review data=...``): what the
model will see, per class, and the data checks."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from hydra.utils import execution_whitelist, instantiate

from mammo import CONFIG_DIR, TRUSTED_TARGETS
from mammo.artifacts.io import atomic_write_text, write_csv, write_json
from mammo.artifacts.rundir import allocate_run_dir, register_resolvers
from mammo.artifacts.summary import run_recorded
from mammo.review_pages import render
from mammo.review_pages.cards import input_cards
from mammo.review_pages.data_checks import data_checks, preprocessing_outliers
from mammo.review_pages.sources import ReviewSource

log = logging.getLogger("mammo")


def build_data_review(overrides: list[str], per_class: int = 6) -> Path:
    """Compose ``mammo.train``'s data config from ``overrides``, read and prepare the data as a
    run would (labels, headers, hashes, cache, split), and write a run directory under
    ``<experiment>/data_reviews/`` with ``split.csv``, ``data_manifest.json``, ``summary.json`` and
    ``review/index.html``; returns the page."""
    register_resolvers()
    with initialize_config_dir(config_dir=CONFIG_DIR), execution_whitelist(TRUSTED_TARGETS):
        cfg = compose("train", overrides=overrides)
        out = allocate_run_dir(Path(cfg.paths.experiment_dir) / "data_reviews")
        run_recorded(
            "data_review",
            out,
            int(cfg.seed),
            lambda folder, summary: review_data(cfg, folder, summary, per_class),
        )
    return out / "review" / "index.html"


def review_data(cfg, out: Path, summary, per_class: int) -> dict:
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    data_config = datamodule.describe()
    summary.update(data_config=data_config)
    write_csv(out / "split.csv", datamodule.split)
    write_json(out / "data_manifest.json", datamodule.manifest)
    table = datamodule.samples.table.copy()
    classes = list(datamodule.samples.class_labels)
    table["true_label"] = np.asarray(classes)[table["label"].to_numpy()]
    source = ReviewSource(
        out, "data review", "data", table, datamodule.manifest, {"data_config": data_config}
    )
    outliers = preprocessing_outliers(source, per_class * len(classes))
    sample = table.sort_values("image_id").groupby("true_label", sort=True).head(per_class)
    paths = dict(zip(table["image_id"], table["path"].map(Path)))
    folder = out / "review"
    cards = input_cards(
        pd.concat([sample, outliers.shown]).drop_duplicates("image_id"),
        paths,
        datamodule.preprocessing,
        folder,
        dict(zip(table["image_id"], table["relpath"])),
    )
    inputs = "".join(
        render.gallery_of(
            f"Density {render.density(c)}: {(table['true_label'] == c).sum()} image(s)", rows, cards, classes
        )
        for c, rows in sample.groupby("true_label", sort=True)
    )
    sections = [
        ("inputs", "What the model will see, a sample per class", render.DATA_LEGEND + inputs),
        ("data", "Data checks", data_checks(source, outliers, cards, classes)),
    ]
    patients = table["PatientID"].nunique()
    title = f"Data review: {len(table)} images of {patients} patients ({cfg.paths.experiment})"
    atomic_write_text(folder / "index.html", render.page(title, sections))
    log.info("Data review: %s", folder / "index.html")
    return {"review": "review/index.html"}
