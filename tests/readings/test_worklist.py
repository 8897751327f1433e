"""The reading queue: confident errors first, controls mixed in, the same for every start."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mammo.readings.worklist import QueueSettings, reading_queue, still_to_read


def predictions(n=40, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(4), size=n)
    return pd.DataFrame(
        {
            "AccessionNumber": [f"ACC{k // 4}" for k in range(n)],
            "image_id": [f"img{k:02d}" for k in range(n)],
            "PatientID": [f"P{k // 8}" for k in range(n)],
            "true_label": rng.integers(1, 5, size=n),
            "predicted_label": probs.argmax(1) + 1,
            **{f"prob_class{c}": probs[:, c - 1] for c in range(1, 5)},
        }
    )


def test_errors_come_by_confidence_and_controls_are_correct_images_mixed_in():
    frame = predictions()
    queue = reading_queue(frame, [1, 2, 3, 4], QueueSettings(errors=10, controls=0.5, seed=3))
    errors, controls = queue[~queue["control"]], queue[queue["control"]]
    wrong = frame[frame["true_label"] != frame["predicted_label"]]
    assert len(errors) == 10 and len(controls) == 5
    assert list(errors["confidence"]) == sorted(errors["confidence"], reverse=True)
    assert errors["confidence"].min() >= wrong[
        ["prob_class1", "prob_class2", "prob_class3", "prob_class4"]
    ].max(axis=1).nlargest(10).min().round(4)
    assert (controls["label"] == controls["predicted_label"]).all()
    assert queue.index[queue["control"]].min() < len(errors)  # among the errors, not after them
    again = reading_queue(frame, [1, 2, 3, 4], QueueSettings(errors=10, controls=0.5, seed=3))
    pd.testing.assert_frame_equal(queue, again)


def test_a_reader_resumes_at_the_first_image_not_read():
    queue = reading_queue(predictions(), [1, 2, 3, 4], QueueSettings(errors=6, controls=0.5))
    rest = still_to_read(queue, set(queue["image_id"][:4]))
    assert list(rest["image_id"]) == list(queue["image_id"][4:])
