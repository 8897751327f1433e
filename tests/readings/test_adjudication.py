"""data.readings: training on adjudicated labels changes exactly the labels the readings decide."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from mammo.readings.store import append_reading
from tests.conftest import SMALL_DEMO, TINY, console_of, last_line, run_cli


def train(out, demo_root, *extra) -> Path:
    from mammo.train import main

    args = [*TINY, *SMALL_DEMO, "epochs=1", f"paths.output_dir={out}", f"paths.demo_dir={demo_root}", *extra]
    assert run_cli(main, args) == 0
    return sorted((out / "mammo_tiny_density").glob("results_*"))[-1]


@pytest.fixture(scope="module")
def before(tmp_path_factory, demo_root):
    return train(tmp_path_factory.mktemp("before"), demo_root)


def test_training_with_readings_changes_exactly_the_labels_they_decide(before, demo_root, tmp_path):
    val = pd.read_csv(before / "val_predictions.csv", dtype=str)
    train_ids = pd.read_csv(before / "split.csv", dtype=str).query("split == 'train'")["image_id"]
    ids = [*val["image_id"][:3], train_ids.iloc[0]]
    labels = dict(zip(val["image_id"], val["true_label"].astype(int)))
    split = pd.read_csv(before / "split.csv", dtype=str).set_index("image_id")
    other = {i: (labels.get(i) or int(split.loc[i, "label"])) % 4 + 1 for i in ids}
    # ids[0]: two readers agree on another density -> changed
    append_reading(before, "ann", {"image_id": ids[0], "reading": str(other[ids[0]])})
    append_reading(before, "bob", {"image_id": ids[0], "reading": str(other[ids[0]])})
    # ids[1]: the readers disagree -> no majority, kept
    append_reading(before, "ann", {"image_id": ids[1], "reading": str(other[ids[1]])})
    append_reading(before, "bob", {"image_id": ids[1], "reading": "cannot_tell"})
    # ids[2]: one reader gives the label's own density -> decided, unchanged
    append_reading(before, "ann", {"image_id": ids[2], "reading": str(labels[ids[2]])})
    # ids[3]: a training image, one reader -> changed
    append_reading(before, "bob", {"image_id": ids[3], "reading": str(other[ids[3]])})

    after = train(tmp_path, demo_root, f"data.readings=[{before}]")

    manifest = json.loads((after / "data_manifest.json").read_text())["readings"]
    changed = {
        r["image_id"]: (r["original_label"], r["new_label"], r["readers"]) for r in manifest["relabelled"]
    }
    assert changed == {
        ids[0]: (labels[ids[0]], other[ids[0]], ["ann", "bob"]),
        ids[3]: (int(split.loc[ids[3], "label"]), other[ids[3]], ["bob"]),
    }
    assert manifest["rule"] == "majority" and manifest["read_images"] == 4
    assert {f["name"].rsplit("/", 1)[-1] for f in manifest["files"]} == {"ann.csv", "bob.csv"}
    summary = json.loads((after / "summary.json").read_text())
    assert summary["data_config"]["readings"] == {
        "rule": "majority",
        "files": 2,
        "read_images": 4,
        "relabelled": 2,
    }
    new_val = (
        pd.read_csv(after / "val_predictions.csv", dtype=str).set_index("image_id")["true_label"].astype(int)
    )
    old_val = val.set_index("image_id")["true_label"].astype(int)
    assert (new_val != old_val).sum() == 1 and new_val[ids[0]] == other[ids[0]]
    old_split, new_split = (
        pd.read_csv(d / "split.csv", dtype=str).set_index("image_id") for d in (before, after)
    )
    assert old_split["split"].equals(new_split["split"])  # no image changed split

    from mammo.compare import main as compare

    compare([str(before), str(after), "--bootstrap", "50", "--out", str(tmp_path / "compared")])
    compared = json.loads((tmp_path / "compared" / "comparison.json").read_text())
    assert compared["num_images"] == len(val)  # the same images, both judged on the readers' labels
    assert compared["labels"].startswith("the readers' labels (data.readings) for 1 compared image(s)")

    unanimous = train(tmp_path / "u", demo_root, f"data.readings=[{before}]", "data.readings_rule=unanimous")
    changed = json.loads((unanimous / "data_manifest.json").read_text())["readings"]["relabelled"]
    assert {r["image_id"] for r in changed} == {ids[0], ids[3]}  # ids[1]: ann and bob differ


def test_readings_that_name_no_file_or_a_bad_rule_are_one_line(before, demo_root, tmp_path):
    from mammo.train import main

    base = [*TINY, *SMALL_DEMO, "epochs=1", f"paths.output_dir={tmp_path}", f"paths.demo_dir={demo_root}"]
    code, console = console_of(main, [*base, f"data.readings=[{tmp_path / 'nowhere.csv'}]"])
    assert code != 0 and "nowhere.csv is neither a readings file nor a folder of them" in last_line(console)
    code, console = console_of(main, [*base, f"data.readings=[{before}]", "data.readings_rule=most"])
    assert code != 0 and "data.readings_rule='most': expected majority or unanimous" in last_line(console)
