"""A run trained with an ordinal loss (loss=corn): recorded, probabilities as every other run's, and
read back the same by mammo.evaluate and the exported model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import SMALL_DEMO, TINY, run_cli, train_tiny


@pytest.fixture(scope="module")
def corn_run(tmp_path_factory, demo_root):
    return train_tiny(tmp_path_factory.mktemp("corn"), demo_root, "epochs=2", "loss=corn", "eval.bootstrap=0")


def test_the_loss_is_recorded_and_the_probabilities_are_four_that_sum_to_one(corn_run):
    summary = json.loads((corn_run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["hyperparameters"]["loss"] == "corn" and summary["hyperparameters"]["label_smoothing"] == 0
    assert summary["model_config"]["loss"] == "corn"
    predictions = pd.read_csv(corn_run / "val_predictions.csv")
    probs = predictions[[f"prob_class{k}" for k in (1, 2, 3, 4)]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert (predictions["predicted_label"] == probs.argmax(axis=1) + 1).all()
    state = torch.load(corn_run / "best_model.pt", weights_only=True)["state_dict"]
    assert state["head.1.weight"].shape[0] == 3  # K - 1 conditional tasks


def test_evaluate_reads_a_corn_model_as_it_was_trained(corn_run, demo_root, tmp_path):
    from mammo.evaluate import main as evaluate

    paths = [f"paths.output_dir={tmp_path}", f"paths.demo_dir={demo_root}"]
    args = [f"ckpt={corn_run / 'best_model.pt'}", "split=val", "data.num_workers=0", *SMALL_DEMO, *paths]
    assert run_cli(evaluate, args) == 0
    trained = pd.read_csv(corn_run / "val_predictions.csv").sort_values("image_id")
    evaluated = pd.read_csv(next(tmp_path.glob("evaluations/results_*/predictions.csv")))
    evaluated = evaluated.sort_values("image_id")
    np.testing.assert_allclose(
        evaluated.filter(like="prob_").to_numpy(), trained.filter(like="prob_").to_numpy(), atol=1e-6
    )


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_an_exported_corn_model_gives_its_probabilities(corn_run, tmp_path, fmt):
    from mammo.models.exporters import export

    report = export(str(corn_run / "best_model.pt"), fmt, tmp_path, batch_size=3)
    assert report["max_abs_prob_diff"] < 1e-5
    # independently of export()'s own check: other images, another batch size, the checkpoint's
    # CORN probabilities as mammo.predict computes them
    from mammo.models.checkpoint import load_checkpoint

    x = torch.rand(5, 1, *report["inputs"]["image"][1:], generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        expected = load_checkpoint(corn_run / "best_model.pt").probabilities(x)
    if fmt == "torchscript":
        logits = torch.jit.load(str(tmp_path / report["file"]))(x)
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(tmp_path / report["file"]))
        logits = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
    assert expected.shape == (5, 4)  # four densities, not the K - 1 conditional tasks
    torch.testing.assert_close(logits.softmax(1).float(), expected.float(), atol=1e-5, rtol=0)


def test_label_smoothing_with_an_ordinal_loss_stops_the_run_before_any_work(tmp_path, demo_root):
    from mammo.train import main

    out = tmp_path / "outputs"
    args = [*TINY, *SMALL_DEMO, "loss=corn", "label_smoothing=0.1", f"paths.output_dir={out}"]
    assert run_cli(main, [*args, f"paths.demo_dir={demo_root}"]) == 1
    summary = json.loads(next(out.glob("mammo_tiny_density/results_*/summary.json")).read_text())
    assert summary["status"] == "failed"
    assert summary["error"]["message"] == "label_smoothing=0.1: it applies to loss=ce only (loss=corn)"
    assert not list(out.glob("mammo_tiny_density/results_*/train_history.json"))
