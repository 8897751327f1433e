"""mammo.compare: paired differences, McNemar, and the entry on two prediction folders."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mammo.compare import main
from mammo.core.errors import DataError
from mammo.evaluation.comparison import compare, mcnemar


def predictions(folder, right: np.ndarray, seed: int) -> None:
    """A run folder: ``val_predictions.csv`` of 40 images (4 per patient, 2 per breast) whose
    top class is right where ``right`` says, and the ``data_manifest.json`` naming the patients."""
    rng = np.random.default_rng(seed)
    n = len(right)
    labels = np.arange(n) // 4 % 4 + 1  # one density per patient
    probs = rng.dirichlet(np.ones(4), n) * 0.5
    top = np.where(right, labels - 1, labels % 4)
    probs[np.arange(n), top] += 1.0
    probs /= probs.sum(axis=1, keepdims=True)
    frame = pd.DataFrame({"AccessionNumber": [f"E{i // 4}" for i in range(n)], "true_label": labels})
    frame["predicted_label"] = probs.argmax(axis=1) + 1
    for j in range(4):
        frame[f"prob_class{j + 1}"] = probs[:, j]
    frame["image_id"] = [f"img{i}" for i in range(n)]
    frame["laterality"] = ["L", "L", "R", "R"] * (n // 4)
    frame["view"] = ["CC", "MLO"] * (n // 2)
    folder.mkdir(parents=True)
    frame.to_csv(folder / "val_predictions.csv", index=False)
    files = [{"image_id": f"img{i}", "PatientID": f"P{i // 4}"} for i in range(n)]
    (folder / "data_manifest.json").write_text(json.dumps({"files": files}))


def test_mcnemar_is_the_exact_binomial_test_of_the_discordant_images():
    truth = np.ones(20, dtype=int)
    a = pd.DataFrame({"true_label": truth, "predicted_label": np.r_[np.ones(18), 2, 2].astype(int)})
    b = pd.DataFrame({"true_label": truth, "predicted_label": np.r_[np.full(8, 2), np.ones(12)].astype(int)})
    test = mcnemar(a, b)  # A alone right on 8 images, B alone right on 2 (the last two)
    assert (test["only_a_correct"], test["only_b_correct"], test["both_correct"]) == (8, 2, 10)
    assert test["p_value"] == pytest.approx(2 * (1 + 10 + 45) / 2**10)  # 2 P(X <= 2), X ~ Bin(10, 1/2)


def test_a_model_against_itself_differs_by_nothing_and_a_better_one_shows(tmp_path):
    right = np.random.default_rng(0).random(40) < 0.9
    predictions(tmp_path / "a", right, 0)
    predictions(tmp_path / "worse", right & (np.arange(40) % 3 != 0), 0)
    same = compare(tmp_path / "a", tmp_path / "a", tmp_path / "same", "auto", 200, 0, "mean")
    for level in ("image", "breast", "exam"):
        assert same["levels"][level]["accuracy"]["ci"] == [0.0, 0.0]
    result = compare(tmp_path / "a", tmp_path / "worse", tmp_path / "out", "auto", 200, 0, "mean")
    accuracy = result["levels"]["image"]["accuracy"]
    assert accuracy["difference"] == pytest.approx(accuracy["a"] - accuracy["b"])
    assert accuracy["difference"] > 0
    low, high = accuracy["ci"]
    assert low <= accuracy["difference"] <= high
    assert result["mcnemar"]["only_b_correct"] == 0 and result["mcnemar"]["only_a_correct"] > 0
    table = (tmp_path / "out" / "comparison.md").read_text()
    assert table.count("| image |") == len(result["levels"]["image"])


def test_the_entry_prints_and_writes_the_table_and_refuses_disjoint_predictions(tmp_path, capsys):
    right = np.ones(40, dtype=bool)
    predictions(tmp_path / "a", right, 0)
    predictions(tmp_path / "b", right, 1)
    main([str(tmp_path / "a"), str(tmp_path / "b"), "--bootstrap", "50", "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert "| image | Linear kappa |" in printed and "McNemar (images)" in printed
    assert printed.splitlines()[-1] == (
        f"Comparison: {tmp_path / 'out' / 'comparison.md'} | next: python -m mammo.report "
        f"'runs=[{tmp_path / 'a'},{tmp_path / 'b'}]'  (figures and tables of both)"
    )
    stored = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert stored["num_images"] == 40 and stored["num_patients"] == 10 and stored["bootstrap"]["paired"]
    other = tmp_path / "c"
    predictions(other, right, 2)
    frame = pd.read_csv(other / "val_predictions.csv")
    frame.assign(image_id="x" + frame["image_id"]).to_csv(other / "val_predictions.csv", index=False)
    with pytest.raises(SystemExit):
        main([str(tmp_path / "a"), str(other), "--out", str(tmp_path / "none")])
    assert "share no image_id" in capsys.readouterr().err
    with pytest.raises(DataError, match="no predictions"):
        compare(tmp_path / "a", tmp_path, tmp_path / "none", "auto", 0, 0, "mean")


def with_manifest(folder, change) -> None:
    """Give ``folder``'s manifest real file hashes, then let ``change`` alter its file list."""
    manifest = json.loads((folder / "data_manifest.json").read_text())
    for f in manifest["files"]:
        f.update(sha256=f"sha-{f['image_id']}", label=1)
    change(manifest["files"])
    (folder / "data_manifest.json").write_text(json.dumps(manifest))


def test_runs_on_different_data_are_said_so_or_refused_and_a_failed_comparison_leaves_no_folder(
    tmp_path, capsys
):
    right = np.ones(40, dtype=bool)
    for name in "abc":
        predictions(tmp_path / name, right, 0)
    with_manifest(tmp_path / "a", lambda files: None)
    # b: the same images, and two that a never saw
    with_manifest(
        tmp_path / "b", lambda files: files.extend({**files[0], "image_id": f"new{i}"} for i in range(2))
    )
    main([str(tmp_path / "a"), str(tmp_path / "b"), "--bootstrap", "20"])
    captured = capsys.readouterr()
    warning = "different data: B has, against A, 2 added (e.g. new0)"
    assert warning in captured.out and "A and B were run on different data" in captured.err
    stored = json.loads(
        next((tmp_path / "outputs" / "comparisons").glob("results_*/comparison.json")).read_text()
    )
    assert stored["data"] == {"same": False, "b_against_a": "2 added (e.g. new0)"}
    # c: img3 is another file under the same image_id (another dataset that reuses the names)
    with_manifest(tmp_path / "c", lambda files: files[3].update(sha256="another file"))
    with pytest.raises(SystemExit):
        main([str(tmp_path / "a"), str(tmp_path / "c")])
    assert "1 image_id(s) are different files in" in capsys.readouterr().err
    assert len(list((tmp_path / "outputs" / "comparisons").iterdir())) == 1  # no empty results_N


def test_the_comparison_is_made_per_subgroup_of_the_manifest_and_the_predictions(tmp_path):
    from sklearn.metrics import accuracy_score

    right = np.ones(40, dtype=bool)
    predictions(tmp_path / "a", right, 0)
    predictions(tmp_path / "b", right & (np.arange(40) < 20), 0)  # B errs on Hologic's images only
    for name in ("a", "b"):
        manifest = json.loads((tmp_path / name / "data_manifest.json").read_text())
        for i, f in enumerate(manifest["files"]):
            f["manufacturer"] = "GE" if i < 20 else "Hologic"
            f["site"] = "north" if i < 36 else "south"  # a label-file subgroup column; 1 patient south
        (tmp_path / name / "data_manifest.json").write_text(json.dumps(manifest))
    result = compare(tmp_path / "a", tmp_path / "b", tmp_path / "out", "auto", 200, 0, "mean")
    entries = {(e["subgroup"], e["group"]): e for e in result["subgroups"]}
    assert list(entries) == [
        ("manufacturer", "GE"),
        ("manufacturer", "Hologic"),
        ("view", "CC"),
        ("view", "MLO"),
        ("laterality", "L"),
        ("laterality", "R"),
        ("site", "north"),
        ("site", "south"),
    ]
    b = pd.read_csv(tmp_path / "b" / "val_predictions.csv")
    for group, rows in (("GE", slice(0, 20)), ("Hologic", slice(20, 40))):
        accuracy = entries[("manufacturer", group)]["metrics"]["accuracy"]
        part = b.iloc[rows]
        assert accuracy["b"] == pytest.approx(accuracy_score(part["true_label"], part["predicted_label"]))
        assert accuracy["a"] == 1.0 and entries[("manufacturer", group)]["num_patients"] == 5
    assert entries[("manufacturer", "GE")]["metrics"]["accuracy"]["ci"] == [0.0, 0.0]
    low, high = entries[("manufacturer", "Hologic")]["metrics"]["accuracy"]["ci"]
    assert 0 < low <= high
    south = entries[("site", "south")]
    assert south["num_patients"] == 1 and south["metrics"]["accuracy"]["ci"] == [None, None]
    assert "too few for an interval" in south["note"]
    table = (tmp_path / "out" / "comparison.md").read_text()
    assert "| manufacturer=Hologic | 20 | 5 | Accuracy | 1.0000 |" in table
    assert "| site=south | 4 | 1 | Accuracy |" in table and "too few for an interval" in table
