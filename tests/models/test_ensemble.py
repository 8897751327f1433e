"""Several checkpoints and test-time augmentations as one predictor (ckpt= a list, a CV folder or a
sweep folder; tta=[...]) in mammo.predict, mammo.evaluate and mammo.export."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from mammo.core.errors import ConfigError
from mammo.models.ensemble import AUGMENTATIONS, affine, check_tta, checkpoint_files
from tests.conftest import SMALL_DEMO, TINY, run_cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_root):
    """A two-seed sweep, a CC and an MLO model, a 2-fold CV of the tiny model, and six DICOMs to
    predict."""
    from mammo.train import main as train

    out = tmp_path_factory.mktemp("ensembles")
    paths = [f"paths.output_dir={out}", f"paths.demo_dir={demo_root}"]
    assert run_cli(train, ["-m", *TINY, *SMALL_DEMO, *paths, "epochs=1", "seed=42,43"]) == 0
    views = ["epochs=1", "data.views=[CC],[MLO]"]  # results_3: a CC model, results_4: an MLO model
    assert run_cli(train, ["-m", *TINY, *SMALL_DEMO, *paths, *views]) == 0
    cv = ["epochs=1", "cv=kfold", "cv.folds=2", "data.test_fraction=0.2"]  # the folds share a test split
    assert run_cli(train, [*TINY, *SMALL_DEMO, *paths, *cv]) == 0
    folder = out / "to_predict"
    folder.mkdir()
    for i, path in enumerate(sorted((demo_root / "v2-p24-s0-160x128/archive").rglob("*.dcm"))[:6]):
        shutil.copy(path, folder / f"{i}.dcm")
    return out


def predict(trained, name: str, *args: str) -> tuple[pd.DataFrame, dict]:
    from mammo.predict import main

    out = trained / name
    common = [f"input={trained / 'to_predict'}", "num_workers=0", f"paths.output_dir={out}"]
    assert run_cli(main, [*common, *args]) == 0
    run = next(out.glob("predictions/results_*"))
    return pd.read_csv(run / "predictions.csv"), json.loads((run / "summary.json").read_text())


def probabilities(frame: pd.DataFrame) -> np.ndarray:
    return frame.filter(like="prob_class").to_numpy()


def test_two_checkpoints_predict_the_mean_of_their_separate_predictions(trained):
    a, b = (trained / f"mammo_tiny_density/results_{n}/best_model.pt" for n in (1, 2))
    alone_a, _ = predict(trained, "a", f"ckpt={a}")
    alone_b, _ = predict(trained, "b", f"ckpt={b}")
    both, summary = predict(trained, "both", f"ckpt=[{a},{b}]")
    assert not np.allclose(probabilities(alone_a), probabilities(alone_b))  # two different models
    mean = (probabilities(alone_a) + probabilities(alone_b)) / 2
    np.testing.assert_allclose(probabilities(both), mean, atol=1e-6)
    assert list(both["predicted_density"]) == list(probabilities(both).argmax(axis=1) + 1)
    members = summary["ensemble"]["members"]
    assert [m["checkpoint"] for m in members] == [str(a), str(b)]
    assert summary["ensemble"]["tta"] == ["original"]


def test_a_sweep_folder_and_a_cv_folder_give_their_models(trained):
    sweep = trained / "mammo_tiny_density/sweeps/sweep_1"
    runs = [trained / f"mammo_tiny_density/results_{n}/best_model.pt" for n in (1, 2)]
    assert checkpoint_files(str(sweep)) == runs
    (cv_dir,) = (trained / "density_experiments").glob("results_k2_seed*")
    assert checkpoint_files(cv_dir) == [cv_dir / f"fold_{k}/results/best_model.pt" for k in (1, 2)]
    assert checkpoint_files([str(runs[0]), runs[0].parent]) == [runs[0]]  # named twice, counted once
    with pytest.raises(ConfigError, match="not a best_model.pt, a run directory, a cross-validation folder"):
        checkpoint_files(trained / "to_predict")


def test_a_cv_ensemble_is_evaluated_on_the_test_split_and_refused_on_its_folds_validation(trained, demo_root):
    from mammo.evaluate import main

    (cv_dir,) = (trained / "density_experiments").glob("results_k2_seed*")
    common = [
        f"ckpt={cv_dir}",
        "data.num_workers=0",
        "gradcam_per_class=1",
        *SMALL_DEMO,
        f"paths.demo_dir={demo_root}",
    ]
    refused = trained / "refused"
    assert run_cli(main, [*common, "split=val", f"paths.output_dir={refused}"]) == 1
    summary = json.loads(next(refused.glob("evaluations/results_*/summary.json")).read_text())
    assert "hold different val images (cross-validation folds" in summary["error"]["message"]
    evaluated = trained / "evaluated"
    assert run_cli(main, [*common, "split=test", f"paths.output_dir={evaluated}"]) == 0
    run = next(evaluated.glob("evaluations/results_*"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and len(summary["ensemble"]["members"]) == 2
    assert len(pd.read_csv(run / "predictions.csv")) == summary["data_config"]["num_evaluated"] > 0


def test_an_identity_augmentation_changes_nothing_and_a_flip_is_refused(trained):
    ckpt = trained / "mammo_tiny_density/results_1/best_model.pt"
    plain, _ = predict(trained, "plain", f"ckpt={ckpt}")
    same, summary = predict(trained, "identity", f"ckpt={ckpt}", "tta=[identity]")
    np.testing.assert_allclose(probabilities(same), probabilities(plain), atol=1e-6)
    assert summary["ensemble"]["tta"] == ["original", "identity"]
    rotated, _ = predict(trained, "rotated", f"ckpt={ckpt}", "tta=[rotate-5,zoom1.05]")
    assert not np.allclose(probabilities(rotated), probabilities(plain), atol=1e-6)  # they do something
    with pytest.raises(ConfigError, match="tta=hflip: a horizontal flip moves the chest wall"):
        check_tta(["hflip"])


def test_the_augmentations_keep_the_image_where_it_is():
    image = torch.zeros(1, 1, 64, 64)
    image[..., 16:48, :24] = 1.0  # a breast against the left edge
    for name, augment in AUGMENTATIONS.items():
        out = augment(image)
        assert out.shape == image.shape
        assert out[..., :, :32].sum() > 10 * out[..., :, 32:].sum(), name  # the chest wall stays left
    torch.testing.assert_close(affine(image), image, atol=1e-5, rtol=0)  # no rotation, no zoom


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_an_ensemble_exports_as_one_model(trained, tmp_path, fmt):
    from mammo.models.exporters import export

    members = [str(trained / f"mammo_tiny_density/results_{n}/best_model.pt") for n in (1, 2)]
    report = export(members, fmt, tmp_path, batch_size=3, tta=["zoom0.95"])
    assert report["max_abs_prob_diff"] < 1e-5 and len(report["ensemble"]["members"]) == 2
    assert report["ensemble"]["tta"] == ["original", "zoom0.95"]


def evaluate_all(trained, demo_root, name: str, ckpt: str) -> pd.DataFrame:
    from mammo.evaluate import main

    out = trained / name
    args = [f"ckpt={ckpt}", "data.num_workers=0", "gradcam_per_class=0", *SMALL_DEMO]
    assert run_cli(main, [*args, f"paths.demo_dir={demo_root}", f"paths.output_dir={out}"]) == 0
    run = next(out.glob("evaluations/results_*"))
    return pd.read_csv(run / "predictions.csv").set_index("image_id").sort_index()


def test_a_per_view_ensemble_predicts_each_image_with_the_model_of_its_view(trained, demo_root):
    cc, mlo = (trained / f"mammo_tiny_density/results_{n}/best_model.pt" for n in (3, 4))
    both = evaluate_all(trained, demo_root, "per_view", f"[{cc},{mlo}]")
    for view, alone in (("CC", evaluate_all(trained, demo_root, "cc", str(cc))), ("MLO", None)):
        alone = alone if alone is not None else evaluate_all(trained, demo_root, "mlo", str(mlo))
        rows = both["view"] == view
        assert rows.sum() > 0
        np.testing.assert_allclose(
            probabilities(both[rows]), probabilities(alone.loc[both.index[rows]]), atol=1e-6
        )
    summary = json.loads(next((trained / "per_view").glob("evaluations/results_*/summary.json")).read_text())
    assert [m["views"] for m in summary["ensemble"]["members"]] == [["CC"], ["MLO"]]
    predicted, _ = predict(trained, "per_view_predict", f"ckpt=[{cc},{mlo}]")
    by_cc, _ = predict(trained, "cc_predict", f"ckpt={cc}")
    by_mlo, _ = predict(trained, "mlo_predict", f"ckpt={mlo}")
    expected = np.where(
        (predicted["view"] == "CC").to_numpy()[:, None], probabilities(by_cc), probabilities(by_mlo)
    )
    np.testing.assert_allclose(probabilities(predicted), expected, atol=1e-6)
    with pytest.raises(ConfigError, match="trained on different views"):
        from mammo.models.exporters import export

        export([str(cc), str(mlo)], "torchscript", trained / "refused_export")


def test_members_whose_test_images_differ_are_told_to_share_a_split_seed(tmp_path):
    """A seed sweep with ``data.test_fraction`` and no ``data.split_seed`` draws a test split per
    seed: the line says so, and does not send the user back to split=test."""
    from types import SimpleNamespace

    from mammo.workflows.evaluation_job import check_members_share_the_split

    members = []
    for n, test_image in enumerate(["A1/L_CC", "B2/L_CC"]):
        run = tmp_path / f"results_{n + 1}"
        run.mkdir()
        header = "image_id,AccessionNumber,PatientID,label,split"
        (run / "split.csv").write_text(f"{header}\n{test_image},A,P,1,test\nC3/L_CC,C,Q,2,train\n")
        members.append(SimpleNamespace(run_dir=run))
    with pytest.raises(ConfigError) as refused:
        check_members_share_the_split(SimpleNamespace(members=members), "test")
    assert "data.split_seed" in str(refused.value) and "split=test or" not in str(refused.value)
    check_members_share_the_split(SimpleNamespace(members=members), "train")  # the same train rows


def test_a_per_view_ensemble_on_its_own_validation_split_reads_every_members_views(trained, demo_root):
    """No data arguments: the members' own data, with the views of all of them (not the first
    member's alone), and the val rows of both members' ``split.csv``; each image predicted as
    its view's model predicted it at its best epoch."""
    from mammo.evaluate import main

    runs = [trained / f"mammo_tiny_density/results_{n}" for n in (3, 4)]
    out = trained / "per_view_val"
    args = [f"ckpt=[{runs[0]},{runs[1]}]", "split=val", "data.num_workers=0", "gradcam_per_class=0"]
    assert run_cli(main, [*args, f"paths.demo_dir={demo_root}", f"paths.output_dir={out}"]) == 0
    run = next(out.glob("evaluations/results_*"))
    evaluated = pd.read_csv(run / "predictions.csv").set_index("image_id").sort_index()
    own = pd.concat(pd.read_csv(r / "val_predictions.csv") for r in runs).set_index("image_id").sort_index()
    assert set(evaluated["view"]) == {"CC", "MLO"} and list(evaluated.index) == list(own.index)
    np.testing.assert_allclose(probabilities(evaluated), probabilities(own), atol=1e-5)
    assert (run / "members_split.csv").is_file()


def test_what_a_ckpt_names_decides_the_checkpoints_and_the_folder_the_app_reads(trained):
    """One function says what ``ckpt=`` names; the app reads a run's or a CV job's own folder and,
    for a file or a sweep, the first member's run."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from mammo.models.ensemble import named_by
    from mammo.workflows.app_job import reviewed_folder

    run = trained / "mammo_tiny_density/results_1"
    (cv_dir,) = (trained / "density_experiments").glob("results_k2_seed*")
    sweep = trained / "mammo_tiny_density/sweeps/sweep_1"
    named = {p: named_by(p) for p in (run / "best_model.pt", run, cv_dir, sweep)}
    assert list(named.values()) == ["file", "run", "cv", "sweep"]
    first_member = SimpleNamespace(run_dir=trained / "elsewhere")
    for path, kind in named.items():
        cfg = OmegaConf.create({"folder": None, "ckpt": str(path)})
        expected = path if kind in ("run", "cv") else first_member.run_dir
        assert reviewed_folder(cfg, first_member) == expected
    with pytest.raises(ConfigError, match="not a best_model.pt, a run directory"):
        named_by(trained / "to_predict")


def test_per_view_members_must_put_each_shared_patient_on_one_side(tmp_path):
    """A patient with a CC image only is the CC member's alone; a patient both members hold must
    lie on one side in both, or the joined split would put one breast on two sides."""
    from types import SimpleNamespace

    from mammo.workflows.evaluation_job import joined_member_splits

    def member(name: str, rows: list[str]) -> SimpleNamespace:
        run = tmp_path / name
        run.mkdir()
        (run / "split.csv").write_text("image_id,AccessionNumber,PatientID,label,split\n" + "\n".join(rows))
        return SimpleNamespace(run_dir=run)

    cc = member("cc", ["A/L_CC,A,P1,1,val", "B/L_CC,B,P2,2,train", "C/L_CC,C,P3,3,train"])
    mlo = member("mlo", ["A/L_MLO,A,P1,1,val", "B/L_MLO,B,P2,2,train"])
    joined = joined_member_splits(SimpleNamespace(members=[cc, mlo]), "val", tmp_path / "joined.csv")
    assert pd.read_csv(joined)["image_id"].tolist() == ["A/L_CC", "B/L_CC", "C/L_CC", "A/L_MLO", "B/L_MLO"]
    moved = member("moved", ["A/L_MLO,A,P1,1,train", "B/L_MLO,B,P2,2,train"])
    with pytest.raises(ConfigError, match="put different patients on each side"):
        joined_member_splits(SimpleNamespace(members=[cc, moved]), "val", tmp_path / "refused.csv")
