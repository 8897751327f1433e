"""Breast- and exam-level aggregation of image predictions."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from mammo.evaluation.levels import available_levels, unit_predictions


def images() -> pd.DataFrame:
    """Patient P1: one exam, left breast 2 images (density 3), right breast 2 images (density 4).
    Patient P2: one exam, left breast 2 images that disagree (2 and 3), right breast 1 image (2)."""
    rows = [
        ("P1", "E1", "L", 3, [0.1, 0.2, 0.6, 0.1]),
        ("P1", "E1", "L", 3, [0.1, 0.1, 0.4, 0.4]),
        ("P1", "E1", "R", 4, [0.0, 0.1, 0.2, 0.7]),
        ("P1", "E1", "R", 4, [0.0, 0.1, 0.4, 0.5]),
        ("P2", "E2", "L", 2, [0.1, 0.7, 0.1, 0.1]),
        ("P2", "E2", "L", 3, [0.1, 0.3, 0.5, 0.1]),
        ("P2", "E2", "R", 2, [0.2, 0.6, 0.1, 0.1]),
    ]
    frame = pd.DataFrame(
        [{"PatientID": p, "AccessionNumber": e, "laterality": s, "true_label": t} for p, e, s, t, _ in rows]
    )
    probs = np.array([r[4] for r in rows])
    for j in range(4):
        frame[f"prob_class{j + 1}"] = probs[:, j]
    frame["image_id"] = [f"i{k}" for k in range(len(rows))]
    return frame


def test_breasts_average_their_images_and_disagreeing_ones_are_left_out():
    breasts, left_out = unit_predictions(images(), "breast")
    assert left_out == 1  # P2's left breast: densities 2 and 3
    assert list(zip(breasts["PatientID"], breasts["laterality"])) == [("P1", "L"), ("P1", "R"), ("P2", "R")]
    assert breasts["num_images"].tolist() == [2, 2, 1]
    np.testing.assert_allclose(breasts.filter(like="prob_class").iloc[0], [0.1, 0.15, 0.5, 0.25])
    assert breasts["true_label"].tolist() == [3, 4, 2] and breasts["predicted_label"].tolist() == [3, 4, 2]


def test_an_exam_takes_its_denser_breasts_label_and_max_renormalises():
    exams, left_out = unit_predictions(images(), "exam")
    assert left_out == 1 and exams["PatientID"].tolist() == ["P1"]  # P2's left breast disagrees
    assert exams["true_label"].tolist() == [4] and exams["num_images"].tolist() == [4]
    np.testing.assert_allclose(exams.filter(like="prob_class").iloc[0], [0.05, 0.125, 0.4, 0.425])
    maxed, _ = unit_predictions(images(), "exam", "max")
    np.testing.assert_allclose(maxed.filter(like="prob_class").iloc[0], np.array([0.1, 0.2, 0.6, 0.7]) / 1.6)


def test_an_exam_is_the_mean_of_its_images_not_of_its_breasts():
    """Breasts of 1 and 3 images: the documented rule (the mean of the unit's images) and "the
    mean of the breast means" disagree, so this test tells them apart."""
    left, right = [0.1, 0.2, 0.6, 0.1], [0.0, 0.1, 0.1, 0.8]
    rows = [("L", 3, left), ("R", 4, right), ("R", 4, right), ("R", 4, right)]
    frame = pd.DataFrame(
        [{"PatientID": "P1", "AccessionNumber": "E1", "laterality": s, "true_label": t} for s, t, _ in rows]
    )
    for j in range(4):
        frame[f"prob_class{j + 1}"] = [r[2][j] for r in rows]
    exams, _ = unit_predictions(frame, "exam")
    of_images = (np.array(left) + 3 * np.array(right)) / 4
    of_breasts = (np.array(left) + np.array(right)) / 2
    np.testing.assert_allclose(exams.filter(like="prob_class").iloc[0], of_images)
    assert not np.allclose(of_images, of_breasts)
    breasts, _ = unit_predictions(frame, "breast")
    assert breasts["num_images"].tolist() == [1, 3]


def test_levels_need_an_exam_id_and_for_breasts_a_laterality(caplog):
    frame = images()
    assert available_levels(frame, "val") == ["breast", "exam"]
    with caplog.at_level(logging.INFO, logger="mammo"):
        assert available_levels(frame.assign(laterality=""), "val") == ["exam"]
    assert "val: the data has no laterality on every image: no breast-level results" in caplog.text
    assert available_levels(frame.assign(AccessionNumber=["", *frame["AccessionNumber"][1:]]), "val") == []
    with pytest.raises(Exception, match="eval.aggregate='median'"):
        unit_predictions(frame, "breast", "median")
