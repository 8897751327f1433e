"""After training: evaluate, predict, export, Grad-CAM, the report pack and the runs table."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch

from tests.conftest import SMALL_DEMO, TINY, console_of, last_line, run_cli

COMMON = ["data.num_workers=0", *SMALL_DEMO]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, demo_root):
    """Three seed runs, a 2-fold CV, an evaluation, a prediction, an export and a report pack, all
    under one outputs/."""
    from mammo.evaluate import main as evaluate
    from mammo.export import main as export
    from mammo.predict import main as predict
    from mammo.report import main as report
    from mammo.train import main as train

    out = tmp_path_factory.mktemp("outputs")
    paths = [f"paths.output_dir={out}", f"paths.demo_dir={demo_root}"]

    def console(name, main, args):
        code, CONSOLES[name] = console_of(main, args)
        return code

    assert console("seeds", train, ["-m", *TINY, *SMALL_DEMO, *paths, "epochs=2", "seed=42,43,44"]) == 0
    assert console("cv", train, [*TINY, *SMALL_DEMO, *paths, "epochs=1", "cv=kfold", "cv.folds=2"]) == 0
    ckpt = out / "mammo_tiny_density/results_1/best_model.pt"
    assert console("evaluate", evaluate, [f"ckpt={ckpt}", "split=val", *COMMON, *paths]) == 0
    folder = out / "to_predict"
    folder.mkdir()
    for i, path in enumerate(sorted((demo_root / "v2-p24-s0-160x128/archive").rglob("*.dcm"))[:6]):
        shutil.copy(path, folder / f"{i}.dcm")
    (folder / "notes.txt").write_text("not a DICOM")
    ct = pydicom.dcmread(folder / "0.dcm")
    ct.Modality = "CT"  # a CT slice in the folder: refused as training refuses it, no density
    ct.save_as(folder / "ct.dcm")
    anonymous = pydicom.dcmread(folder / "1.dcm")
    del anonymous.AccessionNumber, anonymous.StudyInstanceUID  # no exam id: an exam of its own
    anonymous.save_as(folder / "1.dcm")
    assert console("predict", predict, [f"ckpt={ckpt}", f"input={folder}", "num_workers=0", *paths]) == 0
    assert console("export", export, [f"ckpt={ckpt}", "format=torchscript", *paths]) == 0
    runs = f"runs=[{ckpt.parent},{ckpt.parent.parent / 'results_2'}]"
    assert console("report", report, [runs, *paths]) == 0
    return out


CONSOLES: dict[str, str] = {}
"""What each entry of the ``outputs`` fixture printed."""


def test_every_entry_ends_with_where_its_result_is_and_what_to_run_next(outputs):
    runs, cv = outputs / "mammo_tiny_density", outputs / "density_experiments/results_k2_seed42"
    sweep = runs / "sweeps/sweep_1/sweep_summary.json"
    expected = {
        "seeds": f"Sweep summary: {sweep} | next: python -m mammo.report 'runs=[{runs / 'results_1'},"
        f"{runs / 'results_2'},{runs / 'results_3'}]'  (figures and tables)",
        "cv": f"CV summary: {cv / 'cv_summary.json'} | next: python -m mammo.review {cv}"
        "  (the out-of-fold review)",
        "evaluate": f"Results: {outputs / 'evaluations/results_1'} | next: python -m mammo.review "
        f"{outputs / 'evaluations/results_1'}  (where the model fails)",
        "predict": f"Predictions: {outputs / 'predictions/results_1/predictions.csv'} | next: python -m "
        f"mammo.evaluate ckpt={runs / 'results_1/best_model.pt'} data=dicom_csv 'data.csv=<labels.csv>'"
        "  (with labels: metrics and intervals)",
        "report": f"Report pack: {outputs / 'report_pack/results_1'} | next: \\input{{"
        f"{outputs / 'report_pack/results_1/metrics_table.tex'}}} in the paper (booktabs)",
    }
    for entry, line in expected.items():
        assert last_line(CONSOLES[entry]) == line, entry
    export = last_line(CONSOLES["export"])
    assert export.startswith("Exported model: ") and export.endswith("model.torchscript.pt'))\"  (load it)")
    # each run of the seed sweep named its folder and its review as it ended
    assert (
        f"Run: {runs / 'results_2'} | next: python -m mammo.review {runs / 'results_2'}" in CONSOLES["seeds"]
    )


def test_evaluate_reproduces_the_training_val_metrics(outputs):
    run = outputs / "mammo_tiny_density/results_1"
    evaluation = outputs / "evaluations/results_1"
    trained = json.loads((run / "metrics/val_metrics.json").read_text())
    evaluated = json.loads((evaluation / "metrics/eval_metrics.json").read_text())
    for name in ("accuracy", "balanced_accuracy", "kappa_quadratic", "macro_f1", "auc_ovr"):
        assert evaluated[name] == pytest.approx(trained[name], abs=1e-6)
    assert evaluated["confusion_matrix"] == trained["confusion_matrix"]
    a = pd.read_csv(run / "val_predictions.csv").sort_values("image_id").reset_index(drop=True)
    b = pd.read_csv(evaluation / "predictions.csv").sort_values("image_id").reset_index(drop=True)
    np.testing.assert_allclose(
        b.filter(like="prob_").to_numpy(), a.filter(like="prob_").to_numpy(), atol=1e-6
    )
    summary = json.loads((evaluation / "summary.json").read_text())
    assert summary["experiment_type"] == "evaluation" and summary["status"] == "completed"
    assert (
        summary["checkpoint"].endswith("results_1/best_model.pt")
        and summary["training_run"]["run_id"] == "results_1"
    )
    assert (evaluation / "plots/gradcam_samples.png").is_file() and (
        evaluation / "metrics/eval_confusion.png"
    ).is_file()


def test_evaluate_without_data_arguments_uses_the_runs_own_data(outputs, tmp_path):
    """It used to generate the default demo data and then fail on the run's split."""
    from mammo.evaluate import main

    run = outputs / "mammo_tiny_density/results_1"
    args = [
        f"ckpt={run / 'best_model.pt'}",
        "split=val",
        "data.num_workers=0",
        f"paths.output_dir={tmp_path}",
    ]
    assert run_cli(main, args) == 0
    evaluation = next(tmp_path.glob("evaluations/results_*"))
    trained = json.loads((run / "metrics/val_metrics.json").read_text())
    evaluated = json.loads((evaluation / "metrics/eval_metrics.json").read_text())
    assert evaluated["kappa_quadratic"] == pytest.approx(trained["kappa_quadratic"], abs=1e-6)
    log = (evaluation / "run.log").read_text()
    assert (
        "Data: the training run's own (demo data in " in log and "differ from the training run's" not in log
    )
    assert not (tmp_path / "demo").exists()  # no other data generated


def test_evaluate_on_other_data_says_how_they_differ(outputs, demo_root, tmp_path):
    from mammo.evaluate import main

    ckpt = outputs / "mammo_tiny_density/results_1/best_model.pt"
    args = [f"ckpt={ckpt}", *COMMON, "data.demo.n_patients=12", f"paths.demo_dir={demo_root}"]
    assert run_cli(main, [*args, "gradcam_per_class=0", f"paths.output_dir={tmp_path}"]) == 0
    log = next(tmp_path.glob("evaluations/results_*/run.log")).read_text()
    (line,) = [x for x in log.splitlines() if "differ from the training run's" in x]
    assert "WARNING: The evaluated data differ" in line and "removed (e.g. " in line


@pytest.mark.parametrize(
    ("override", "message"),
    [("data.crop=false", "data.crop=False contradicts"), ("img_size=32", "img_size=32 contradicts")],
)
def test_evaluate_rejects_settings_that_contradict_the_checkpoint(
    outputs, demo_root, tmp_path, override, message
):
    from mammo.evaluate import main

    ckpt = outputs / "mammo_tiny_density/results_1/best_model.pt"
    args = [f"ckpt={ckpt}", *COMMON, override, f"paths.output_dir={tmp_path}", f"paths.demo_dir={demo_root}"]
    assert run_cli(main, args) == 1
    summary = json.loads(next(tmp_path.glob("evaluations/results_*/summary.json")).read_text())
    assert message in summary["error"]["message"]


def test_predict_streams_predictions_and_lists_unreadable_files(outputs):
    out = outputs / "predictions/results_1"
    preds = pd.read_csv(out / "predictions.csv")
    bad = pd.read_csv(out / "unreadable.csv")
    assert len(preds) == 6 and list(bad["image"].str.rsplit("/", n=1).str[1]) == ["ct.dcm", "notes.txt"]
    assert "Modality CT is not a mammogram" in bad["reason"][0] and "not a readable DICOM" in bad["reason"][1]
    assert not preds["image"].str.endswith("ct.dcm").any()
    probs = preds.filter(like="prob_class").to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    assert (preds["predicted_density"] == probs.argmax(1) + 1).all()
    assert list(preds["predicted_letter"]) == [" ABCD"[d] for d in preds["predicted_density"]]
    assert preds["AccessionNumber"].dropna().str.startswith("ACC").all()
    assert list(preds.columns[-3:]) == ["PatientID", "laterality", "view"]
    assert preds["PatientID"].notna().all() and set(preds["laterality"]) <= {"L", "R"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_predicted"] == 6 and summary["num_unreadable"] == 2
    from mammo.evaluation.levels import LEVELS

    alone = preds["AccessionNumber"].isna()  # 1.dcm has no exam id: a breast and an exam of its own
    assert list(preds.loc[alone, "image"].str.rsplit("/", n=1).str[1]) == ["1.dcm"]
    for level, keys in LEVELS.items():
        keys = list(keys)
        units = pd.read_csv(out / f"predictions_{level}.csv")
        assert list(units.columns[: len(keys) + 1]) == [*keys, "num_images"]
        assert units["num_images"].sum() == 6 and summary[f"num_{level}s"] == len(units)
        assert len(units) == preds[~alone].groupby(keys).ngroups + 1
        assert units["AccessionNumber"].isna().sum() == 1
        first = preds.groupby(keys, sort=False).get_group(tuple(units.loc[0, keys]))
        np.testing.assert_allclose(
            units.filter(like="prob_class").iloc[0], first.filter(like="prob_class").mean(), atol=1e-6
        )
        assert list(units["predicted_letter"]) == [" ABCD"[d] for d in units["predicted_density"]]


def test_predict_refuses_a_non_mammogram_with_on_bad_file_error(outputs, tmp_path):
    """The same file rule as training: a CT slice gets no density, and with on_bad_file=error it
    stops the run with one line naming the file."""
    from mammo.predict import main as predict

    ckpt = outputs / "mammo_tiny_density/results_1/best_model.pt"
    ct = outputs / "to_predict/ct.dcm"
    args = [f"ckpt={ckpt}", f"input={ct}", "on_bad_file=error", "num_workers=0"]
    args.append(f"paths.output_dir={tmp_path}")
    assert run_cli(predict, args) == 1
    run = next(tmp_path.glob("predictions/results_*"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"]["message"] == f"{ct}: Modality CT is not a mammogram (accepted: MG, CR, DX, OT)"
    assert len(pd.read_csv(run / "predictions.csv")) == 0


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_round_trip(outputs, tmp_path, fmt):
    from mammo.models.checkpoint import load_checkpoint
    from mammo.models.exporters import export

    ckpt = outputs / "mammo_tiny_density/results_1/best_model.pt"
    report = export(str(ckpt), fmt, tmp_path, batch_size=3)
    assert report["max_abs_prob_diff"] < 1e-5 and report["inputs"] == {"image": [1, 64, 64]}
    x = torch.rand(5, 1, 64, 64)  # another batch size than the export's sample batch
    expected = load_checkpoint(ckpt).model(x).softmax(1).detach()
    if fmt == "torchscript":
        got = torch.jit.load(str(tmp_path / report["file"]))(x).softmax(1)
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(tmp_path / report["file"]))
        got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0]).softmax(1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("fusion", [False, True])
def test_gradcam_maps_are_not_constant(fusion):
    from mammo.evaluation.gradcam import gradcam
    from mammo.models.classifier import DensityClassifier

    torch.manual_seed(0)
    model = DensityClassifier(
        "tiny", "test_efficientnet", embeddings_fusion=fusion, embedding_dim=8 if fusion else 0
    )
    images = torch.rand(3, 1, 64, 64)
    embedding = torch.randn(3, 8) if fusion else None
    maps = gradcam(model, images, torch.tensor([0, 1, 2]), embedding)
    assert maps.shape == (3, 64, 64) and maps.min() >= 0 and maps.max() <= 1
    assert all(float(m.max() - m.min()) > 0.1 for m in maps)


def test_training_writes_gradcam_samples(outputs):
    png = outputs / "mammo_tiny_density/results_1/plots/gradcam_samples.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "Grad-CAM of 8 validation images" in (png.parent.parent / "run.log").read_text()


def test_report_pack_tables_equal_mean_and_std_of_the_summaries(outputs, tmp_path):
    from mammo.evaluation.report_pack import report_pack

    runs = [outputs / f"mammo_tiny_density/results_{i}" for i in (1, 2, 3)]
    report = report_pack(runs, tmp_path)
    summaries = [json.loads((r / "summary.json").read_text()) for r in runs]
    for seed in (42, 43, 44):
        for kind in ("train", "confusion", "gradcam"):
            assert (tmp_path / f"density_{kind}_seed{seed}.png").is_file()
    latex = (tmp_path / "metrics_table.tex").read_text()
    for title, short in [
        ("Accuracy", "acc"),
        ("Quadratic kappa", "kappa"),
        ("Macro-F1", "macro_f1"),
        ("AUC (OvR)", "auc"),
    ]:
        values = [s[f"best_val_{short}"] for s in summaries]
        line = next(x for x in latex.splitlines() if x.startswith(title + " &"))
        mean, std = (float(v) for v in re.findall(r"([0-9.]+) \$\\pm\$ ([0-9.]+)", line)[0])
        assert mean == pytest.approx(np.mean(values), abs=5e-4) and std == pytest.approx(
            np.std(values, ddof=1), abs=5e-4
        )
    assert report["metrics"]["metrics"]["kappa_quadratic"]["mean"] == pytest.approx(
        np.mean([s["best_val_kappa"] for s in summaries])
    )
    markdown = (tmp_path / "metrics_table.md").read_text()
    assert "| Quadratic kappa |" in markdown and "| Linear kappa |" in markdown
    low, high = summaries[0]["confidence_intervals"]["best_val_kappa"]  # value [low, high] per run
    assert f"{summaries[0]['best_val_kappa']:.3f} [{low:.3f}, {high:.3f}]" in markdown


def test_report_pack_tables_each_subgroup_from_the_runs_subgroup_files(outputs, tmp_path):
    from mammo.evaluation.report_pack import report_pack

    runs = [outputs / f"mammo_tiny_density/results_{i}" for i in (1, 2)]
    report = report_pack(runs, tmp_path)
    stored = [
        {
            (e["subgroup"], e["group"]): e
            for e in json.loads((r / "metrics/val_subgroups.json").read_text())["subgroups"]
        }
        for r in runs
    ]
    kappa = report["subgroups"]["kappa_quadratic"]["metrics"]
    keys = list(dict.fromkeys([*stored[0], *stored[1]]))  # a seed's val split may lack a group
    assert list(kappa) == [f"{column}={group}" for column, group in keys]
    for column, group in keys:
        row, entries = kappa[f"{column}={group}"], [s.get((column, group)) for s in stored]
        values = [e and e["metrics"]["kappa_quadratic"] for e in entries]
        assert row["values"] == values
        assert row["mean"] == pytest.approx(np.mean([v for v in values if v is not None]))
        intervals = [e and (e["confidence_intervals"] or {}).get("kappa_quadratic") for e in entries]
        assert row["intervals"] == intervals
        images, patients = ({e[k] for e in entries if e} for k in ("num_images", "num_patients"))
        assert f"({min(images)}{'' if len(images) == 1 else f'-{max(images)}'} images" in row["title"]
        assert f"{min(patients)}{'' if len(patients) == 1 else f'-{max(patients)}'} patients)" in row["title"]
    markdown = (tmp_path / "subgroups_table.md").read_text()
    assert "## Quadratic kappa" in markdown and "| Subgroup | seed42 | seed43 | Mean ± std |" in markdown
    (column, group), entry = next((k, e) for k, e in stored[0].items() if e["confidence_intervals"])
    low, high = entry["confidence_intervals"]["kappa_quadratic"]
    value = entry["metrics"]["kappa_quadratic"]
    assert f"| {kappa[f'{column}={group}']['title']} | {value:.3f} [{low:.3f}, {high:.3f}] |" in markdown
    latex = (tmp_path / "subgroups_table.tex").read_text()
    assert latex.count("\\begin{tabular}") == 5 and "model\\_name=" in latex
    folds = report_pack([outputs / "density_experiments/results_k2_seed42"], tmp_path / "cv")
    sizes = [row["title"] for row in folds["subgroups"]["accuracy"]["metrics"].values()]
    assert sizes and all(re.search(r"\(\d+(-\d+)? images, \d+(-\d+)? patients\)", t) for t in sizes)


def test_report_pack_accepts_a_cv_directory(outputs, tmp_path):
    from mammo.evaluation.report_pack import report_pack

    cv_dir = outputs / "density_experiments/results_k2_seed42"
    report = report_pack([cv_dir], tmp_path)
    assert [r["label"] for r in report["runs"]] == ["seed42_fold1", "seed42_fold2"]
    cv = json.loads((cv_dir / "cv_summary.json").read_text())
    assert report["metrics"]["metrics"]["macro_f1"]["mean"] == pytest.approx(
        cv["metrics"]["macro_f1"]["mean"]
    )
    assert (tmp_path / "density_confusion_seed42_fold2.png").is_file()


def test_report_pack_tables_at_exam_level_come_from_the_runs_exam_metrics(outputs, tmp_path):
    from mammo.core.errors import ConfigError
    from mammo.evaluation.report_pack import report_pack

    runs = [outputs / f"mammo_tiny_density/results_{i}" for i in (1, 2)]
    report = report_pack(runs, tmp_path, "exam")
    stored = [json.loads((r / "metrics" / "val_exam_metrics.json").read_text()) for r in runs]
    kappa = report["metrics"]["metrics"]["kappa_linear"]
    assert kappa["values"] == [m["kappa_linear"] for m in stored] and report["metrics"]["level"] == "exam"
    assert kappa["intervals"] == [m["confidence_intervals"]["kappa_linear"] for m in stored]
    assert "| Linear kappa (exam) |" in (tmp_path / "metrics_table.md").read_text()
    with pytest.raises(ConfigError, match="level='ward'"):
        report_pack(runs, tmp_path, "ward")


def test_runs_table_lists_every_kind_and_compares(outputs, capsys):
    from mammo.artifacts.run_index import find_runs, select
    from mammo.runs import main

    rows = find_runs(outputs)
    kinds = {r["type"] for r in rows}
    assert {"density_classification", "evaluation", "prediction", "model_export", "report"} <= kinds
    assert all(r["status"] == "completed" for r in rows if r["type"] in ("model_export", "report"))
    assert {r["fold"] for r in rows} >= {1, 2} and {r["seed"] for r in rows} >= {42, 43, 44}
    completed = select(rows, ["status=completed", "type=density_classification"], "best", True)
    assert [r["best"] for r in completed] == sorted((r["best"] for r in completed), reverse=True)
    main([str(outputs), "--filter", "type=evaluation"])
    assert "evaluations/results_1" in capsys.readouterr().out
    main(
        [
            "--compare",
            str(outputs / "mammo_tiny_density/results_1"),
            str(outputs / "mammo_tiny_density/results_2"),
        ]
    )
    text = capsys.readouterr().out
    assert "seed" in text and "42" in text and "43" in text
