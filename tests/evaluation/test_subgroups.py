"""Metrics per subgroup (scanner, view, laterality): scikit-learn's on the subgroup's rows, with
patient-bootstrap intervals where there are patients enough."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mammo.evaluation.subgroups import MIN_PATIENTS, write_subgroups
from tests.conftest import sklearn_density_metrics


def predictions(n_patients: int = 24, seed: int = 0) -> pd.DataFrame:
    """Four images per patient; patients alternate between two scanners, the last two patients
    on a third one (too few for an interval)."""
    rng = np.random.default_rng(seed)
    n = 4 * n_patients
    labels = rng.integers(1, 5, n)
    probs = rng.dirichlet(np.ones(4), n)
    probs[np.arange(n), labels - 1] += rng.uniform(0, 1.5, n)
    probs /= probs.sum(1, keepdims=True)
    patient = np.arange(n) // 4
    frame = pd.DataFrame(
        {
            "true_label": labels,
            "predicted_label": probs.argmax(1) + 1,
            "image_id": [f"i{i}" for i in range(n)],
        }
    )
    for j in range(4):
        frame[f"prob_class{j + 1}"] = probs[:, j]
    frame["PatientID"] = [f"P{p}" for p in patient]
    frame["manufacturer"] = np.where(
        patient >= n_patients - 2, "Rare", np.where(patient % 2, "GE", "Hologic")
    )
    frame["view"] = ["CC", "MLO"] * (n // 2)
    frame["laterality"] = ["L", "L", "R", "R"] * n_patients
    return frame


def test_subgroup_metrics_are_sklearns_on_its_rows_and_a_small_one_has_no_interval(tmp_path):
    frame = predictions()
    entries = write_subgroups(tmp_path, "val", frame, resamples=200, seed=0)
    stored = json.loads((tmp_path / "metrics" / "val_subgroups.json").read_text())
    assert (
        stored["subgroups"] == json.loads(json.dumps(entries))
        and stored["min_patients_for_interval"] == MIN_PATIENTS
    )
    groups = {(e["subgroup"], e["group"]): e for e in entries}
    assert set(groups) == {
        ("manufacturer", "GE"),
        ("manufacturer", "Hologic"),
        ("manufacturer", "Rare"),
        ("view", "CC"),
        ("view", "MLO"),
        ("laterality", "L"),
        ("laterality", "R"),
    }  # model_name: not in the frame, left out
    for (column, group), entry in groups.items():
        rows = frame[frame[column] == group]
        probs = rows.filter(like="prob_class").to_numpy()
        expected = sklearn_density_metrics(
            rows["true_label"].to_numpy(), rows["predicted_label"].to_numpy(), probs
        )
        for name in ("accuracy", "kappa_quadratic", "macro_f1", "auc_ovr", "kappa_linear", "brier"):
            assert entry["metrics"][name] == pytest.approx(expected[name], abs=1e-9), (column, group, name)
        assert entry["num_images"] == len(rows) and entry["num_patients"] == rows["PatientID"].nunique()
    rare = groups[("manufacturer", "Rare")]
    assert rare["num_patients"] == 2 and rare["confidence_intervals"] is None
    assert rare["note"] == "2 patient(s): too few for an interval (needs 5)"
    ge = groups[("manufacturer", "GE")]
    low, high = ge["confidence_intervals"]["accuracy"]
    assert low <= ge["metrics"]["accuracy"] <= high
    table = pd.read_csv(tmp_path / "metrics" / "val_subgroups.csv", keep_default_na=False)
    assert list(table.columns) == [
        "subgroup",
        "group",
        "num_images",
        "num_patients",
        "metric",
        "value",
        "ci_low",
        "ci_high",
    ]
    rare_rows = table[(table["group"] == "Rare")]
    assert len(rare_rows) == len(rare["metrics"]) and (rare_rows["ci_low"] == "").all()


def test_training_and_evaluate_write_the_subgroups_of_the_demos_scanners(tmp_path, demo_root):
    from tests.conftest import train_tiny

    run = train_tiny(tmp_path, demo_root, "epochs=1")
    stored = json.loads((run / "metrics" / "val_subgroups.json").read_text())
    scanners = {e["group"] for e in stored["subgroups"] if e["subgroup"] == "manufacturer"}
    assert scanners == {"Phantom Imaging", "Demo Medical"}
    assert {e["subgroup"] for e in stored["subgroups"]} == {
        "manufacturer",
        "model_name",
        "view",
        "laterality",
    }
    images = pd.read_csv(run / "val_predictions.csv")
    for subgroup in ("view", "laterality"):
        assert sum(e["num_images"] for e in stored["subgroups"] if e["subgroup"] == subgroup) == len(images)


def test_a_label_file_column_is_a_subgroup_too(tmp_path, demo_root, capsys):
    from tests.workflows.test_data_in_runs import demo_copy, train_on

    copy = demo_copy(tmp_path, demo_root)
    labels = pd.read_csv(copy / "classificacao.csv")
    labels["site"] = np.where(np.arange(len(labels)) % 3 == 0, "north", "south")
    labels.to_csv(copy / "classificacao.csv", index=False)
    code, run = train_on(copy, tmp_path, "data.subgroup_columns=[site]")
    assert code == 0
    stored = json.loads((run / "metrics" / "val_subgroups.json").read_text())["subgroups"]
    sites = {e["group"]: e["num_images"] for e in stored if e["subgroup"] == "site"}
    images = pd.read_csv(run / "val_predictions.csv")
    site_of = dict(zip(labels["AccessionNumber"], labels["site"]))
    assert sites == images["AccessionNumber"].map(site_of).value_counts().to_dict()
    capsys.readouterr()
    code, _ = train_on(copy, tmp_path, "data.subgroup_columns=[scanner_room]")
    assert code == 1 and "missing column(s) scanner_room" in capsys.readouterr().err
