"""The command line as a user meets it: help speed, bad input, parallel launches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, SMALL_DEMO, TINY


def cli(*args: str, cwd=None, env=None, **popen):
    env = env or {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    return subprocess.Popen(
        [sys.executable, "-m", "mammo.train", *args],
        cwd=cwd or REPO,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


def test_help_is_quick_and_lists_groups():
    start = time.perf_counter()
    proc = cli("--help")
    out, _ = proc.communicate(timeout=60)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0
    assert "model: classifier, efficientnetb0, multiview, resnet50, tiny" in out
    assert elapsed < 10  # the 1.5 s bar is measured by scripts/bench_train.py, not here


def test_help_names_the_preset_whose_defaults_it_shows_and_how_to_see_another():
    out, _ = cli("--help").communicate(timeout=60)
    said = "the defaults of data=demo with model=efficientnetb0: epochs=8, img_size=128"
    assert said in out and "Another preset's defaults: python -m mammo.train data=dicom_csv --help" in out
    assert "\nepochs: 8\n" in out  # what it says is what the config shows
    out, _ = cli("data=dicom_csv", "--help").communicate(timeout=60)
    assert "the defaults of data=dicom_csv with model=efficientnetb0: epochs=20, img_size=512" in out
    assert "\nepochs: 20\n" in out and "learning_rate: 0.0001" in out


def test_import_mammo_and_help_leave_the_heavy_libraries_out():
    # what `import mammo` and the entry's --help load, in a fresh interpreter
    heavy = ("mlflow", "optuna", "torch", "lightning")
    code = f"import sys\nimport mammo\nprint(*[m for m in {heavy!r} if m in sys.modules])\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == []
    probe = (
        "import sys, atexit\n"
        f"atexit.register(lambda: print('LOADED', *[m for m in {heavy[:2]!r} if m in sys.modules]))\n"
        "sys.argv = ['mammo.train', '--help']\n"
        "import runpy; runpy.run_module('mammo.train', run_name='__main__')\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.rsplit("LOADED", 1)[1].split() == []  # the sweeper plugin's scan included


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["data=dicom_csv", "data.csv=missing.csv", "data.dicom_root=."], "label CSV not found: missing.csv"),
        (["data=dicom_csv", "data.csv={labels}", "data.dicom_root=nowhere"], "folder not found: nowhere"),
        ([*SMALL_DEMO, "model.backbone=no_such_net"], "model.backbone='no_such_net': unknown timm model"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, demo_root, args, expected):
    labels = tmp_path / "labels.csv"
    labels.write_text("AccessionNumber,Classification\nA1,2\n")
    args = [a.format(labels=labels) for a in args]
    proc = cli(*TINY, f"paths.output_dir={tmp_path}", f"paths.demo_dir={demo_root}", *args)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert expected in err
    assert "Traceback" not in err
    # the run directory records the failure
    summary = json.loads(next(tmp_path.glob("mammo_*_density/results_*/summary.json")).read_text())
    assert summary["status"] == "failed"
    assert expected in summary["error"]["message"]
    log = next(tmp_path.glob("mammo_*_density/results_*/run.log")).read_text()
    assert "Traceback" in log  # the full trace is kept for debugging, in run.log only


def test_unknown_model_group_option_names_it(tmp_path):
    proc = cli("model=nonexistent", f"paths.output_dir={tmp_path}")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "model/nonexistent" in err and "efficientnetb0" in err
    assert not list(tmp_path.glob("*/results_*"))  # nothing allocated for a config error


@pytest.mark.slow
def test_parallel_launches_get_distinct_complete_run_dirs(tmp_path, demo_root):
    # make sure the demo set exists, so both runs only race for the run directory
    from mammo.data.demo import ensure_demo_dataset

    ensure_demo_dataset(demo_root, 24, 0, 160, 128)
    args = [*TINY, *SMALL_DEMO, "epochs=1", f"paths.output_dir={tmp_path}", f"paths.demo_dir={demo_root}"]
    procs = [cli(*args) for _ in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    runs = sorted(p.name for p in (tmp_path / "mammo_tiny_density").glob("results_*"))
    assert sorted(runs) == sorted(f"results_{i}" for i in range(1, 5))
    for run in runs:
        folder = tmp_path / "mammo_tiny_density" / run
        for name in ("summary.json", "train_history.json", "metrics/val_metrics.json"):
            json.loads((folder / name).read_text())  # every JSON complete and parseable
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["run_id"] == run and summary["status"] == "completed"
        log = (folder / "run.log").read_text()
        # nobody else wrote here
        assert log.count("Run directory: ") == 1 and f"Run directory: {folder}" in log


def test_imagenet_weights_that_cannot_be_had_stop_the_run_before_any_data_work(tmp_path):
    """The README's own-data command on a machine without the hub or the weights: one line, in
    seconds, naming the three ways on, before the (here missing) label CSV is even looked at."""
    out = tmp_path / "outputs"
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    proc = cli(
        "data=dicom_csv", "data.csv=missing.csv", "data.dicom_root=.", f"paths.output_dir={out}",
        env={**os.environ, "MPLBACKEND": "Agg", **env},
    )  # fmt: skip
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and time.perf_counter() - start < 30
    line = err.strip().splitlines()[-1]  # the error's one line, last
    for way in (
        "model.weights=<",
        "huggingface-cli download timm/efficientnet_b0.ra_in1k",
        "model.pretrained=false",
    ):
        assert way in line
    assert "label CSV not found" not in err  # the data was not looked at
    (summary,) = out.glob("mammo_efficientnetb0_density/results_*/summary.json")
    assert json.loads(summary.read_text())["status"] == "failed"


def test_make_train_writes_the_demos_review_page():
    """The first thing to look at after the demo: ``make train`` asks for it (the run's last line
    then names the page; tests/review_pages: review=true writes it)."""
    dry = subprocess.run(["make", "-n", "-W", ".venv/.installed", "train", "ARGS=seed=43"], cwd=REPO,
                         capture_output=True, text=True, check=True)  # fmt: skip
    [command] = [line for line in dry.stdout.splitlines() if "-m mammo.train" in line]
    assert command.split()[-3:] == ["mammo.train", "review=true", "seed=43"]
