"""A tall model input, ``img_size=[H, W]``, from training through evaluate, predict, export and
Grad-CAM."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import SMALL_DEMO, TINY, run_cli

TALL = [o for o in TINY if not o.startswith("img_size=")] + ["img_size=[64,40]"]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, demo_root):
    """One tall run with the disk cache, its evaluation, a prediction and an export."""
    from mammo.evaluate import main as evaluate
    from mammo.export import main as export
    from mammo.predict import main as predict
    from mammo.train import main as train

    out = tmp_path_factory.mktemp("outputs")
    paths = [f"paths.output_dir={out}", f"paths.demo_dir={demo_root}"]
    assert (
        run_cli(
            train, [*TALL, *SMALL_DEMO, *paths, "epochs=1", "data.cache_mode=disk", "gradcam_per_class=1"]
        )
        == 0
    )
    ckpt = out / "mammo_tiny_density/results_1/best_model.pt"
    assert run_cli(evaluate, [f"ckpt={ckpt}", "split=val", "data.num_workers=0", *SMALL_DEMO, *paths]) == 0
    folder = out / "to_predict"
    folder.mkdir()
    for i, path in enumerate(sorted((demo_root / "v2-p24-s0-160x128/archive").rglob("*.dcm"))[:3]):
        shutil.copy(path, folder / f"{i}.dcm")
    assert run_cli(predict, [f"ckpt={ckpt}", f"input={folder}", "num_workers=0", *paths]) == 0
    assert run_cli(export, [f"ckpt={ckpt}", "format=torchscript", *paths]) == 0
    return out


def test_training_records_and_caches_the_tall_shape(outputs):
    from mammo.data.cache import HEADER
    from mammo.models.checkpoint import load_checkpoint

    run = outputs / "mammo_tiny_density/results_1"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["hyperparameters"]["img_size"] == [64, 40]
    shards = sorted((outputs / "mammo_tiny_density/cache/preprocessed_64x40").glob("*/*.pack"))
    assert shards, "no disk cache shards under preprocessed_64x40"
    _, height, width, *_ = HEADER.unpack(shards[0].read_bytes()[: HEADER.size])  # its first entry
    assert (height, width) == (64, 40)
    checkpoint = load_checkpoint(run / "best_model.pt")
    assert checkpoint.preprocessing["img_size"] == [64, 40]
    assert (run / "plots/gradcam_samples.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_reproduces_the_tall_runs_val_metrics(outputs):
    run, evaluation = outputs / "mammo_tiny_density/results_1", outputs / "evaluations/results_1"
    trained = json.loads((run / "metrics/val_metrics.json").read_text())
    evaluated = json.loads((evaluation / "metrics/eval_metrics.json").read_text())
    assert evaluated["confusion_matrix"] == trained["confusion_matrix"]
    a = pd.read_csv(run / "val_predictions.csv").sort_values("image_id")
    b = pd.read_csv(evaluation / "predictions.csv").sort_values("image_id")
    np.testing.assert_allclose(
        b.filter(like="prob_").to_numpy(), a.filter(like="prob_").to_numpy(), atol=1e-6
    )
    assert (evaluation / "plots/gradcam_samples.png").is_file()


@pytest.mark.parametrize(("override", "code"), [("img_size=64", 1), ("img_size=[64,40]", 0)])
def test_evaluate_checks_img_size_against_the_checkpoint(outputs, demo_root, tmp_path, override, code):
    from mammo.evaluate import main

    ckpt = outputs / "mammo_tiny_density/results_1/best_model.pt"
    paths = [f"paths.output_dir={tmp_path}", f"paths.demo_dir={demo_root}"]
    assert run_cli(main, [f"ckpt={ckpt}", "data.num_workers=0", *SMALL_DEMO, override, *paths]) == code
    summary = json.loads(next(tmp_path.glob("evaluations/results_*/summary.json")).read_text())
    if code:
        assert "img_size=64 contradicts the checkpoint ([64, 40])" in summary["error"]["message"]


def test_predict_and_export_take_the_shape_from_the_checkpoint(outputs):
    from mammo.models.checkpoint import load_checkpoint

    preds = pd.read_csv(outputs / "predictions/results_1/predictions.csv")
    assert len(preds) == 3
    np.testing.assert_allclose(preds.filter(like="prob_class").to_numpy().sum(1), 1.0, atol=1e-6)
    export = next((outputs / "exports").glob("results_*"))
    report = json.loads((export / "export.json").read_text())
    assert report["inputs"] == {"image": [1, 64, 40]} and report["max_abs_prob_diff"] < 1e-5
    x = torch.rand(2, 1, 64, 40)
    expected = load_checkpoint(outputs / "mammo_tiny_density/results_1/best_model.pt").model(x).softmax(1)
    got = torch.jit.load(str(export / report["file"]))(x).softmax(1)
    torch.testing.assert_close(got, expected.detach(), atol=1e-5, rtol=0)


def test_gradcam_of_a_tall_batch_has_its_shape():
    from mammo.evaluation.gradcam import gradcam
    from mammo.models.classifier import DensityClassifier

    torch.manual_seed(0)
    model = DensityClassifier("tiny", "test_efficientnet")
    maps = gradcam(model, torch.rand(2, 1, 96, 48), torch.tensor([0, 3]))
    assert maps.shape == (2, 96, 48) and all(float(m.max() - m.min()) > 0.1 for m in maps)
