"""The review of a tiny run, shared by the review's tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mammo.review_pages.build import build_review
from mammo.review_pages.cards import ranked_cells
from tests.conftest import train_tiny

PER_CELL = 3


@pytest.fixture(scope="package")
def reviewed(tmp_path_factory, demo_root):
    """A tiny run and its review; one validation image's DICOM moved away first (its card says so)."""
    out = tmp_path_factory.mktemp("review")
    run = train_tiny(out, demo_root, "epochs=2", "data.cache_mode=memory")
    data = out / "data"
    root = Path(json.loads((run / "summary.json").read_text())["data_config"]["dicom_root"])
    shutil.copytree(root, data)  # a private copy: this test removes a file from it
    summary = json.loads((run / "summary.json").read_text())
    summary["data_config"]["dicom_root"] = str(data)
    (run / "summary.json").write_text(json.dumps(summary))
    gone = next(iter(ranked_cells(pd.read_csv(run / "val_predictions.csv")).values()))["image_id"].iloc[0]
    (data / f"{gone}.dcm").unlink()  # an image the review shows first in its cell
    return run, build_review(run, per_cell=PER_CELL), gone
