"""The multi-view model (model=multiview): breasts and exams as samples, from training to evaluate,
predict, export, Grad-CAM, compare and ensembles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mammo.core.errors import ConfigError
from mammo.data.demo import phantom, write_dicom
from mammo.data.order import BatchIndices
from mammo.data.units import UnitDataset, assignment_matrix, unit_codes, unit_labels, whole_unit_batches
from mammo.models.checkpoint import load_checkpoint
from mammo.models.multiview import MultiViewClassifier, ViewFusion
from tests.conftest import SMALL_DEMO, TINY, run_cli

RUN = [
    "data=dicom_csv",
    "img_size=64",
    "data.num_workers=0",
    "data.cache_mode=memory",
    "logger=none",
    "callbacks=none",
    "learning_rate=3e-3",
    "warmup_epochs=0",
    "eval.bootstrap=0",
    "pretrained=false",
]
MULTIVIEW = ["model=multiview", "model.backbone=test_efficientnet"]


def two_view_dataset(root: Path, n_patients: int, seed: int = 0) -> Path:
    """One exam per patient, a CC and an MLO image per breast, each view showing its own amount
    of dense tissue (0-3, drawn as the demo's density classes 1-4, independently, so one view says
    nothing of the other); a breast's density is the mean of its two views' amounts, rounded down:
    ``(cc + mlo) // 2 + 1``. Averaging each view's own prediction cannot find it: the mean of
    exact single-view probabilities (eval.aggregate=mean) scores a quadratic kappa of 0.60 on it.
    Returns the label CSV (image-path layout)."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        patient, accession = f"P{p:04d}", f"A{p:04d}"
        for side in "LR":
            levels = rng.integers(0, 4, size=2)
            label = int(levels.sum()) // 2 + 1
            for view, level in zip(("CC", "MLO"), levels):
                image = phantom(int(level) + 1, side, view, (96, 80), rng, noise=0.01)
                path = f"{accession}/{side}_{view}.dcm"
                write_dicom(
                    root / path,
                    (image * 4000).astype(np.uint16),
                    patient_id=patient,
                    accession=accession,
                    laterality=side,
                    view=view,
                    uid_key=f"{seed}/{path}",
                )
                rows.append({"image_path": path, "Classification": label})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"


def train(out: Path, csv: Path, *overrides: str) -> Path:
    from mammo.train import main

    args = [*RUN, f"data.csv={csv}", f"data.dicom_root={csv.parent}", f"paths.output_dir={out}", *overrides]
    assert run_cli(main, args) == 0
    return sorted(out.glob("*/results_*"))[-1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An image-level run (the tiny model, averaged per breast) and a multi-view run (the same tiny
    backbone, breasts of 2 views: batches of 8 breasts are the image run's 16 images) on the same
    data and split."""
    base = tmp_path_factory.mktemp("multiview")
    csv = two_view_dataset(base / "data", 100)
    image = train(base / "image", csv, "model=tiny", "batch_size=16", "epochs=20", "gradcam_per_class=0")
    breast = train(base / "breast", csv, *MULTIVIEW, "batch_size=8", "epochs=20", "gradcam_per_class=1")
    return {"csv": csv, "image": image, "breast": breast}


def breast_kappa(run: Path) -> float:
    return json.loads((run / "metrics" / "val_breast_metrics.json").read_text())["kappa_quadratic"]


def test_the_multi_view_model_beats_the_image_level_model_averaged_per_breast(runs):
    """Measured here: breast-level kappa 0.95 (multi-view) against 0.70 (image-level, averaged)."""
    image, breast = breast_kappa(runs["image"]), breast_kappa(runs["breast"])
    assert breast > 0.85 and breast > image + 0.15, (breast, image)
    splits = [pd.read_csv(runs[k] / "split.csv").sort_values("image_id") for k in ("image", "breast")]
    assert splits[0]["split"].tolist() == splits[1]["split"].tolist()  # the same patient-grouped split


def test_every_image_holds_its_breasts_prediction_and_the_breast_file_is_the_models(runs):
    run = runs["breast"]
    images = pd.read_csv(run / "val_predictions.csv")
    probs = [f"prob_class{k}" for k in (1, 2, 3, 4)]
    keys = ["AccessionNumber", "laterality"]
    assert (images.groupby(keys)[probs].nunique() == 1).all().all()  # one prediction per breast
    breasts = pd.read_csv(run / "val_predictions_breast.csv")
    assert len(breasts) == len(images) / 2 and (breasts["num_images"] == 2).all()
    merged = breasts.merge(images.drop_duplicates(keys), on=keys, suffixes=("", "_image"))
    np.testing.assert_allclose(
        merged[probs].to_numpy(), merged[[f"{p}_image" for p in probs]].to_numpy(), atol=1e-6
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["model_config"]["unit"] == "breast" and summary["model_config"]["fusion"] == "attention"
    assert set(summary["val_levels"]) == {"breast", "exam"}
    assert "every image of val_predictions.csv holds its breast's prediction" in (run / "run.log").read_text()
    assert (run / "plots" / "gradcam_samples.png").is_file()  # a breast per class, each view a panel


def evaluate(run: Path, csv: Path, out: Path, *extra: str) -> Path:
    from mammo.evaluate import main

    args = [
        f"ckpt={run / 'best_model.pt'}",
        "data=dicom_csv",
        f"data.csv={csv}",
        f"data.dicom_root={csv.parent}",
    ]
    args += ["data.num_workers=0", f"paths.output_dir={out}", *extra]
    assert run_cli(main, args) == 0
    return next(out.glob("evaluations/results_*"))


def test_evaluate_gives_the_runs_breasts(runs, tmp_path):
    run = runs["breast"]
    got = evaluate(run, runs["csv"], tmp_path, "split=val", "eval.bootstrap=0", "gradcam_per_class=1")
    trained = pd.read_csv(run / "val_predictions_breast.csv").sort_values(["AccessionNumber", "laterality"])
    evaluated = pd.read_csv(got / "predictions_breast.csv").sort_values(["AccessionNumber", "laterality"])
    np.testing.assert_allclose(
        evaluated.filter(like="prob_").to_numpy(), trained.filter(like="prob_").to_numpy(), atol=1e-5
    )
    summary = json.loads((got / "summary.json").read_text())
    assert summary["model_config"]["unit"] == "breast"


def test_predict_groups_a_folder_into_breasts_by_header_and_predicts_a_lone_view(runs, tmp_path):
    from mammo.predict import main

    run, root = runs["breast"], runs["csv"].parent
    val = pd.read_csv(run / "val_predictions_breast.csv")
    folder = tmp_path / "dicoms"
    for accession in val["AccessionNumber"].unique():
        shutil.copytree(root / accession, folder / accession)
    lone = val.iloc[0]
    (folder / lone["AccessionNumber"] / f"{lone['laterality']}_MLO.dcm").unlink()  # a breast with its CC only
    args = [f"ckpt={run / 'best_model.pt'}", f"input={folder}", "num_workers=0", "batch_size=5"]
    assert run_cli(main, [*args, f"paths.output_dir={tmp_path / 'out'}"]) == 0
    out = next((tmp_path / "out").glob("predictions/results_*"))
    keys = ["AccessionNumber", "laterality"]
    predicted = pd.read_csv(out / "predictions_breast.csv").set_index(keys).sort_index()
    trained = val.set_index(keys).sort_index()
    assert predicted.index.equals(trained.index)
    both = predicted["num_images"] == 2
    assert predicted.loc[lone["AccessionNumber"], lone["laterality"]]["num_images"] == 1
    np.testing.assert_allclose(
        predicted.loc[both].filter(like="prob_").to_numpy(),
        trained.loc[both].filter(like="prob_").to_numpy(),
        atol=1e-5,
    )
    images = pd.read_csv(out / "predictions.csv")
    assert (images.groupby(keys)[["prob_class1", "prob_class4"]].nunique() == 1).all().all()


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_an_exported_multi_view_model_takes_the_assignment_of_images_to_breasts(runs, tmp_path, fmt):
    from mammo.models.exporters import export

    report = export(str(runs["breast"] / "best_model.pt"), fmt, tmp_path, batch_size=3)
    assert report["max_abs_prob_diff"] < 1e-5 and report["unit"] == "breast"
    assert list(report["inputs"]) == ["image", "assignment"]
    images = torch.rand(7, 1, 64, 64, generator=torch.Generator().manual_seed(1))  # other units than traced
    assignment = assignment_matrix(np.array([0, 0, 1, 2, 2, 3, 3]))
    checkpoint = load_checkpoint(runs["breast"] / "best_model.pt")
    with torch.inference_mode():
        expected = checkpoint.model(images, assignment).softmax(1)
        if fmt == "torchscript":
            got = torch.jit.load(str(tmp_path / report["file"]))(images, assignment).softmax(1)
        else:
            import onnxruntime

            session = onnxruntime.InferenceSession(str(tmp_path / report["file"]))
            feed = {"image": images.numpy(), "assignment": assignment.numpy()}
            got = torch.from_numpy(session.run(None, feed)[0]).softmax(1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_compare_meets_the_image_level_run_at_the_breast_level(runs, tmp_path):
    from mammo.evaluation.comparison import compare

    result = compare(runs["breast"], runs["image"], tmp_path / "out", "val", 0, 0, "mean")
    breast = result["levels"]["breast"]["kappa_quadratic"]
    assert breast["a"] == pytest.approx(breast_kappa(runs["breast"]))
    assert breast["b"] == pytest.approx(breast_kappa(runs["image"]))


def test_an_ensemble_of_multi_view_models_averages_per_breast_and_refuses_an_image_model(runs):
    from mammo.models.ensemble import load_predictor

    single = load_predictor(runs["breast"] / "best_model.pt")
    ensemble = load_predictor(runs["breast"] / "best_model.pt", ["identity"])
    images = torch.rand(3, 1, 64, 64)
    assignment = assignment_matrix(np.array([0, 0, 1]))
    with torch.inference_mode():
        alone = single.probabilities(images, assignment=assignment)
        torch.testing.assert_close(ensemble.probabilities(images, assignment=assignment), alone)
    assert torch.equal(alone[0], alone[1]) and ensemble.unit == "breast"
    with pytest.raises(ConfigError, match="must predict the same unit"):
        load_predictor([runs["breast"] / "best_model.pt", runs["image"] / "best_model.pt"])


def test_an_exam_model_reports_exams_only_and_trains_per_fold(runs, tmp_path):
    from mammo.train import main

    csv = runs["csv"]
    args = [*RUN, *MULTIVIEW, "model.unit=exam", "model.fusion=mean", "batch_size=4", "epochs=1"]
    args += [
        "cv=kfold",
        "cv.folds=2",
        "gradcam_per_class=1",
        f"data.csv={csv}",
        f"data.dicom_root={csv.parent}",
    ]
    assert run_cli(main, [*args, f"paths.output_dir={tmp_path}"]) == 0
    for fold in (1, 2):
        run = next(tmp_path.glob(f"density_experiments/*/fold_{fold}/results"))
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "completed" and list(summary["val_levels"]) == ["exam"]
        assert (run / "val_predictions_exam.csv").is_file() and not (
            run / "val_predictions_breast.csv"
        ).exists()
        exams = pd.read_csv(run / "val_predictions_exam.csv")
        assert (exams["num_images"] == 4).all()


def test_a_breast_without_laterality_stops_the_run_with_one_line(tmp_path):
    from mammo.train import main

    csv = two_view_dataset(tmp_path / "data", 40)
    table = pd.read_csv(csv)
    write_dicom(
        tmp_path / "data" / table["image_path"][0],
        np.full((96, 80), 1000, np.uint16),
        patient_id="P0000",
        accession="A0000",
        view="CC",
    )
    out = tmp_path / "out"
    args = [*RUN, *MULTIVIEW, "epochs=1", f"data.csv={csv}", f"data.dicom_root={csv.parent}"]
    assert run_cli(main, [*args, f"paths.output_dir={out}"]) == 1
    summary = json.loads(next(out.glob("*/results_*/summary.json")).read_text())
    assert summary["status"] == "failed"
    assert summary["error"]["message"].startswith("model.unit=breast: 1 image(s) of")
    assert "have no laterality (first: A0000/L_CC.dcm)" in summary["error"]["message"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.unit=side", "model.unit='side': expected one of breast, exam"),
        ("model.fusion=concat", "model.fusion='concat': expected one of mean, max, attention"),
    ],
)
def test_a_bad_unit_or_fusion_stops_the_run_before_any_work(tmp_path, demo_root, override, message):
    from mammo.train import main

    out = tmp_path / "out"
    args = [
        *TINY,
        *SMALL_DEMO,
        *MULTIVIEW,
        override,
        f"paths.output_dir={out}",
        f"paths.demo_dir={demo_root}",
    ]
    assert run_cli(main, args) == 1
    run = next(out.glob("mammo_multiview_density/results_*"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"]["message"] == message
    assert not (run / "data_manifest.json").exists()  # stopped before reading the data


# -- the parts --------------------------------------------------------------------------------------
def test_units_are_numbered_by_their_keys_and_an_image_without_them_is_its_own():
    frame = pd.DataFrame(
        {
            "PatientID": ["p", "p", "p", "p", "q", "q"],
            "AccessionNumber": ["a", "a", "a", "a", "b", ""],
            "laterality": ["L", "L", "R", "R", "L", "L"],
        }
    )
    assert unit_codes(frame, "breast").tolist() == [0, 0, 1, 1, 2, 3]
    assert unit_codes(frame, "exam").tolist() == [0, 0, 0, 0, 1, 2]
    assert whole_unit_batches(unit_codes(frame, "breast"), 2) == [[0, 1, 2, 3], [4, 5]]
    with pytest.raises(ConfigError, match="model.unit='side': expected one of breast, exam"):
        unit_codes(frame, "side")


def test_a_units_label_is_its_denser_breasts_and_disagreeing_images_are_flagged():
    codes = np.array([0, 0, 0, 0, 1, 1])
    sides = np.array(["L", "L", "R", "R", "L", "L"])
    labels, agree = unit_labels(np.array([1, 1, 3, 3, 0, 2]), codes, sides)
    assert labels.tolist() == [3, 2] and agree.tolist() == [True, False]


class Images:
    """A stand-in image source: image ``i`` is filled with ``i``."""

    class preprocessing:  # noqa: N801
        shape = (4, 4)

    def __init__(self) -> None:
        self.after = []  # the next batch's images, as each read_batch was told them

    def read_batch(self, indices, out, after=()):
        for k, i in enumerate(indices):
            out[k] = i
        self.after.append(list(after))


def test_a_unit_batch_is_its_images_with_their_assignment_and_disagreeing_units_are_not_trained():
    table = pd.DataFrame(
        {
            "PatientID": ["p"] * 3 + ["q"] * 2,
            "AccessionNumber": ["a"] * 3 + ["b"] * 2,
            "laterality": ["L", "L", "R", "L", "L"],
            "label": [2, 2, 1, 0, 3],
        },
        index=[10, 11, 12, 13, 14],
    )
    units = UnitDataset(table, Images(), "breast")
    images, labels, rows, assignment = units.__getitems__(BatchIndices([1, 0], after=[2]))
    assert rows.tolist() == [12, 10, 11] and labels.tolist() == [1, 2, 2]
    assert images[:, 0, 0, 0].tolist() == [2, 0, 1]
    assert assignment.tolist() == [[1, 0, 0], [0, 1, 1]]
    assert units.source.after == [[3, 4]]  # the next batch's unit, as its images (cold reads start early)
    training = UnitDataset(table, Images(), "breast", agreeing_only=True)
    assert len(units) == 3 and len(training) == 2 and training.disagreeing == 1


@pytest.mark.parametrize("mode", ["mean", "max", "attention"])
def test_a_units_fused_features_come_from_its_own_views_only(mode):
    fusion = ViewFusion(mode, 3)
    features = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    assignment = assignment_matrix(np.array([0, 0, 1, 2, 2]))
    fused = fusion(features, assignment)
    changed = features.clone()
    changed[3:] += 5.0  # another unit's views
    torch.testing.assert_close(fusion(changed, assignment)[:2], fused[:2])
    torch.testing.assert_close(fused[1], features[2])  # a unit of one view is that view
    if mode == "mean":
        torch.testing.assert_close(fused[0], features[:2].mean(dim=0))
    if mode == "max":
        torch.testing.assert_close(fused[0], features[:2].amax(dim=0))


def test_the_multi_view_model_trains_on_each_units_label_and_scores_each_image_with_its_unit():
    model = MultiViewClassifier(arch="mv", backbone="test_efficientnet", fusion="mean").eval()
    assignment = assignment_matrix(np.array([0, 0, 1]))
    assert model.sample_targets(torch.tensor([1, 3, 2]), assignment).tolist() == [3, 2]
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert model.image_scores(scores, assignment).tolist() == [[1, 0], [1, 0], [0, 1]]
    with pytest.raises(ConfigError, match="model.fusion='concat': expected one of mean, max, attention"):
        MultiViewClassifier(arch="mv", backbone="test_efficientnet", fusion="concat")


def test_an_optuna_search_takes_the_fusion_as_a_choice(tmp_path, demo_root):
    import optuna

    from mammo.train import main

    args = ["-m", "hpo=density_optuna", *TINY, *SMALL_DEMO, *MULTIVIEW, "batch_size=8", "epochs=1"]
    args += ["hydra.sweeper.n_trials=2", "model.fusion=choice(mean,max,attention)"]
    assert run_cli(main, [*args, f"paths.output_dir={tmp_path}", f"paths.demo_dir={demo_root}"]) == 0
    runs = tmp_path / "mammo_multiview_density" / "hpo_runs"
    storage = f"sqlite:///{runs / 'optuna.db'}"
    trials = optuna.load_study(
        study_name="mammo_multiview_density_density_optuna", storage=storage
    ).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    for n, trial in enumerate(trials):
        summary = json.loads((runs / f"results_{n + 1}" / "summary.json").read_text())
        assert summary["model_config"]["fusion"] == trial.params["model.fusion"]
        assert summary["model_config"]["unit"] == "breast" and "breast" in summary["val_levels"]
