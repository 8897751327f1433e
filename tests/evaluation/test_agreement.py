"""Agreement: quadratic kappa of reader vs label, vs model and vs reader, with intervals."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from mammo.evaluation.agreement import agreement_table, readers_against_label


def queue_and_readings():
    labels = [1, 2, 3, 4, 2, 3, 1, 4, 3, 2, 1, 4]
    model = [1, 2, 4, 4, 2, 2, 1, 3, 3, 2, 2, 4]
    queue = pd.DataFrame(
        {
            "image_id": [f"i{k}" for k in range(12)],
            "PatientID": [f"P{k // 2}" for k in range(12)],
            "label": labels,
            "predicted_label": model,
        }
    )
    ann = [1, 2, 4, 4, 2, 3, 1, 4, 3, 3, 1, 4]
    bob = [1, 2, 4, 3, 2, 3, 2, 4, 3, 3, 1, "cannot_tell"]
    rows = [("ann", f"i{k}", str(v)) for k, v in enumerate(ann)] + [
        ("bob", f"i{k}", str(v)) for k, v in enumerate(bob)
    ]
    return queue, pd.DataFrame(rows, columns=["reader", "image_id", "reading"]), labels, model, ann, bob


def test_each_pair_gets_sklearns_quadratic_kappa_and_a_patient_bootstrap_interval():
    queue, readings, labels, model, ann, bob = queue_and_readings()
    table = agreement_table(readings, queue, [1, 2, 3, 4], resamples=200, seed=0).set_index("pair")
    assert list(table.index) == ["ann vs label", "ann vs model", "bob vs label", "bob vs model", "ann vs bob"]
    assert table.loc["ann vs label", "kappa_quadratic"] == pytest.approx(
        cohen_kappa_score(labels, ann, weights="quadratic"), abs=1e-4
    )
    assert table.loc["ann vs model", "kappa_quadratic"] == pytest.approx(
        cohen_kappa_score(model, ann, weights="quadratic"), abs=1e-4
    )
    assert table.loc["ann vs bob", "images"] == 11  # bob could not tell on i11
    assert table.loc["ann vs bob", "kappa_quadratic"] == pytest.approx(
        cohen_kappa_score(ann[:11], [int(b) for b in bob[:11]], weights="quadratic"), abs=1e-4
    )
    for pair, row in table.iterrows():
        assert row["ci_low"] <= row["kappa_quadratic"] <= row["ci_high"], pair


def test_too_few_patients_get_no_interval_and_say_so():
    queue, readings, *_ = queue_and_readings()
    few = readings[readings["image_id"].isin(["i0", "i1", "i2", "i3"])]
    table = agreement_table(few, queue, [1, 2, 3, 4], resamples=200, seed=0)
    assert table["ci_low"].isna().all() and table["note"].str.contains("too few").all()


def test_images_where_the_readers_agree_against_the_label_are_listed():
    queue, readings, *_ = queue_and_readings()
    found = readers_against_label(readings, queue)
    assert list(found["image_id"]) == ["i2", "i9"]
    assert list(found["readers_say"]) == [4, 3] and list(found["label"]) == [3, 2]
