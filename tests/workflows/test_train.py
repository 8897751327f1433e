"""End-to-end: one tiny training run through the real Hydra entry, and every artifact it writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import REPO, sklearn_density_metrics, train_tiny

EPOCHS = 6


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, demo_root):
    return train_tiny(
        tmp_path_factory.mktemp("train"),
        demo_root,
        f"epochs={EPOCHS}",
        "warmup_epochs=2",
        "eval.bootstrap=200",
    )


@pytest.fixture(scope="module")
def summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def test_every_artifact_exists(run_dir):
    expected = [
        "best_model.pt",
        "summary.json",
        "run.log",
        "train_history.json",
        "train_history.csv",
        "val_predictions.csv",
        "split.csv",
        "metrics/val_metrics.csv",
        "metrics/val_metrics.json",
        "metrics/val_metrics.png",
        "plots/train_curves.png",
        "plots/confusion_matrix.png",
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
    ]
    missing = [name for name in expected if not (run_dir / name).is_file()]
    assert not missing
    for png in ("metrics/val_metrics.png", "plots/train_curves.png", "plots/confusion_matrix.png"):
        assert (run_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert re.fullmatch(r"results_\d+", run_dir.name)
    assert run_dir.parent.name == "mammo_tiny_density"


def test_summary_validates_against_spec_schema(summary, run_dir):
    schema = json.loads((REPO / "tests" / "summary.schema.json").read_text())
    jsonschema.validate(summary, schema)
    assert summary["status"] == "completed"
    assert summary["run_id"] == run_dir.name
    assert isinstance(summary["git_dirty"], bool) and summary["git_branch"]
    assert summary["hyperparameters"]["epochs"] == EPOCHS
    assert summary["hyperparameters"]["arch"] == "tiny"
    assert summary["execution"]["duration_seconds"] > 0
    assert summary["integration"] == {"optuna_trial_id": None, "ray_trial_name": None, "cv_fold": None}
    model = summary["model_config"]
    assert model["total_params"] >= model["trainable_params"] > 0


def test_predictions_cover_the_val_split(run_dir, summary):
    preds = pd.read_csv(run_dir / "val_predictions.csv")
    split = pd.read_csv(run_dir / "split.csv")
    val = split[split["split"] == "val"]
    assert list(preds.columns[:7]) == [
        "AccessionNumber",
        "true_label",
        "predicted_label",
        "prob_class1",
        "prob_class2",
        "prob_class3",
        "prob_class4",
    ]
    assert "image_id" in preds.columns
    assert len(preds) == len(val) == summary["data_config"]["num_val"]
    assert set(preds["image_id"]) == set(val["image_id"])
    merged = preds.merge(val, on="image_id")
    assert (merged["true_label"] == merged["label"]).all()
    probs = preds.filter(like="prob_class").to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (preds["predicted_label"] == probs.argmax(axis=1) + 1).all()
    # no patient on both sides of the split
    assert not set(split.loc[split.split == "val", "PatientID"]) & set(
        split.loc[split.split == "train", "PatientID"]
    )


def test_metrics_recomputed_from_predictions_match(run_dir):
    preds = pd.read_csv(run_dir / "val_predictions.csv")
    stored = json.loads((run_dir / "metrics" / "val_metrics.json").read_text())
    y, p = preds["true_label"].to_numpy(), preds["predicted_label"].to_numpy()
    probs = preds.filter(like="prob_class").to_numpy()
    recomputed = sklearn_density_metrics(y, p, probs)
    for name, value in recomputed.items():
        assert stored[name] == pytest.approx(value, abs=1e-6), name
    table = pd.read_csv(run_dir / "metrics" / "val_metrics.csv")
    assert list(table.columns) == ["metric", "value", "ci_low", "ci_high"]
    assert list(table["metric"]) == list(recomputed)
    np.testing.assert_allclose(table["value"], [recomputed[m] for m in table["metric"]], atol=1e-6)


def test_best_epoch_metrics_have_patient_bootstrap_intervals(run_dir, summary):
    stored = json.loads((run_dir / "metrics" / "val_metrics.json").read_text())
    assert stored["bootstrap"]["unit"] == "patient" and stored["bootstrap"]["resamples"] == 200
    table = pd.read_csv(run_dir / "metrics" / "val_metrics.csv").set_index("metric")
    for name, (low, high) in stored["confidence_intervals"].items():
        assert low <= stored[name] + 1e-9 and stored[name] <= high + 1e-9, name
        assert table.loc[name, "ci_low"] == pytest.approx(low, abs=1e-6)
    intervals = stored["confidence_intervals"]
    assert summary["confidence_intervals"]["best_val_kappa"] == intervals["kappa_quadratic"]
    line = r"95% confidence intervals: 200 patient-bootstrap resamples of \d+ images \(\d+ patients\) in"
    assert re.search(line, (run_dir / "run.log").read_text())


def test_best_metrics_come_from_the_best_epoch(run_dir, summary):
    history = json.loads((run_dir / "train_history.json").read_text())
    assert history["epoch"] == list(range(1, EPOCHS + 1))
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "val_kappa"):
        assert len(history[key]) == EPOCHS
    kappas = history["val_kappa"]
    best = int(np.argmax(kappas))  # first maximum, as the checkpoint keeps the first best
    assert summary["best_epoch"] == best + 1
    assert summary["best_val_kappa"] == pytest.approx(kappas[best])
    assert summary["best_val_acc"] == pytest.approx(history["val_acc"][best])
    stored = json.loads((run_dir / "metrics" / "val_metrics.json").read_text())
    assert stored["epoch"] == best + 1
    assert stored["kappa_quadratic"] == pytest.approx(kappas[best], abs=1e-6)
    csv_history = pd.read_csv(run_dir / "train_history.csv")
    assert len(csv_history) == EPOCHS


def test_the_history_holds_the_learning_rate_each_epoch_trained_at(run_dir, summary):
    """warmup_cosine's doctest (2 warm-up epochs of 6): the factors each epoch trains at; the row of
    an epoch is written after the scheduler stepped, and must not show the next epoch's rate."""
    factors = [0.333, 0.667, 1.0, 0.854, 0.5, 0.146]
    hp = summary["hyperparameters"]
    assert (hp["epochs"], hp["warmup_epochs"], hp["scheduler"]) == (EPOCHS, 2, "cosine")
    history = pd.read_csv(run_dir / "train_history.csv")
    expected = [hp["learning_rate"] * f for f in factors]
    assert history["lr"].tolist() == pytest.approx(expected, abs=hp["learning_rate"] * 1e-3)
    assert json.loads((run_dir / "train_history.json").read_text())["lr"][-1] > 0


def test_tiny_model_learns_demo_data(summary):
    assert summary["best_val_kappa"] >= 0.5


def test_run_log_format_and_markers(run_dir):
    text = (run_dir / "run.log").read_text(encoding="utf-8")
    stamped = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] ")
    lines = [line for line in text.splitlines() if line.strip()]
    assert all(stamped.match(line) for line in lines[:5])
    messages = [stamped.sub("", line) for line in lines if stamped.match(line)]
    assert "Epoch 1/6" in messages and f"Epoch {EPOCHS}/{EPOCHS}" in messages
    assert any(m.startswith("✓ New best model (kappa: ") for m in messages)
    complete = messages.index("Training Complete")
    tail = messages[complete + 1 : complete + 6]
    assert any(m.startswith("Best epoch: ") for m in tail)
    assert any(m.startswith("Best val_kappa: ") for m in tail)
    assert any(m.startswith("Model saved to: ") and m.endswith("best_model.pt") for m in tail)
    assert "━" not in text  # progress-bar redraws stay on the console


def test_best_model_rebuilds_and_reproduces_predictions(run_dir):
    from mammo.data.images import Preprocessing
    from mammo.models.classifier import DensityClassifier

    ckpt = torch.load(run_dir / "best_model.pt", map_location="cpu", weights_only=True)
    meta = ckpt["mammo"]
    assert meta["class_labels"] == [1, 2, 3, 4] and meta["img_size"] == 64
    assert "optimizer_states" not in ckpt  # weights only
    model = DensityClassifier(**{k: v for k, v in ckpt["hyper_parameters"].items()})
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    preds = pd.read_csv(run_dir / "val_predictions.csv").head(8)
    dicom_root = Path(json.loads((run_dir / "summary.json").read_text())["data_config"]["dicom_root"])
    settings = {k: v for k, v in meta["preprocessing"].items() if k != "pipeline_version"}
    preprocess = Preprocessing(**settings)
    assert preprocess.img_size == meta["img_size"]
    x = torch.stack(
        [torch.from_numpy(preprocess(dicom_root / f"{i}.dcm").astype(np.float16)) for i in preds["image_id"]]
    )
    x = x[:, None]  # [B, 1, H, W] in [0, 1]; the model repeats to 3 channels and normalises
    with torch.no_grad():
        probs = model(x).softmax(1).numpy()
    np.testing.assert_allclose(probs, preds.filter(like="prob_class").to_numpy(), atol=1e-5)


def test_seed_multirun_gives_one_run_dir_per_seed(tmp_path, demo_root, capfd):
    from mammo.train import main
    from tests.conftest import SMALL_DEMO, run_cli

    args = [
        "-m",
        "seed=42,43",
        "model=tiny",
        "img_size=64",
        "epochs=1",
        "warmup_epochs=0",
        "logger=none",
        "data.num_workers=0",
        f"paths.output_dir={tmp_path}",
        f"paths.demo_dir={demo_root}",
        *SMALL_DEMO,
    ]  # default callbacks (early stopping, progress bar) without a logger
    assert run_cli(main, args) == 0
    summaries = [
        json.loads(p.read_text()) for p in sorted(tmp_path.glob("mammo_tiny_density/results_*/summary.json"))
    ]
    assert [(s["run_id"], s["seed"], s["status"]) for s in summaries] == [
        ("results_1", 42, "completed"),
        ("results_2", 43, "completed"),
    ]
    # the sweep's seed aggregate, written by mammo.workflows.sweep.SweepCallback when the multirun ends
    aggregate = json.loads((tmp_path / "mammo_tiny_density/sweeps/sweep_1/sweep_summary.json").read_text())
    assert aggregate["num_runs"] == 2 and aggregate["num_completed"] == 2 and len(aggregate["groups"]) == 1
    assert aggregate["groups"][0]["seeds"] == [42, 43]
    kappa = aggregate["metrics"]["kappa_quadratic"]
    values = [s["best_val_kappa"] for s in summaries]
    assert kappa["values"] == values and kappa["run_ids"] == ["results_1", "results_2"]
    assert kappa["mean"] == float(np.mean(values)) and kappa["std"] == float(np.std(values, ddof=1))
    assert (tmp_path / "mammo_tiny_density/sweeps/sweep_1/multirun.yaml").is_file()
    # the split followed the seed: the summary and the console say what the spread measures
    split = aggregate["groups"][0]["split"]
    assert split["changed_with_seed"] is True and split["split_seeds"] == [42, 43]
    console = capfd.readouterr()
    assert "the validation patients changed with the seed" in console.out + console.err
    assert "add data.split_seed=42 to keep the split" in console.out + console.err
    # data.split_seed fixed: the same validation patients in every run
    assert run_cli(main, [*args, "data.split_seed=42"]) == 0
    kept = json.loads((tmp_path / "mammo_tiny_density/sweeps/sweep_2/sweep_summary.json").read_text())
    assert kept["groups"][0]["split"]["changed_with_seed"] is False
    assert kept["groups"][0]["split"]["split_seeds"] == [42, 42]
    sides = [pd.read_csv(tmp_path / f"mammo_tiny_density/results_{n}/split.csv") for n in (3, 4)]
    val = [set(t.loc[t["split"] == "val", "PatientID"]) for t in sides]
    assert val[0] == val[1]
    console = capfd.readouterr()
    assert "the same validation patients in every run: this spread is the initialisation's" in (
        console.out + console.err
    )
