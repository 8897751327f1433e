"""``resume=`` continues the same run or does nothing: changed data or settings, a lost best model
and a completed run are refused, and the run directory is left as it was."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import TINY, run_cli
from tests.workflows.test_data_in_runs import demo_copy

STOP_AT_EPOCH_2 = ["+callbacks.stop._target_=tests.callbacks.InterruptOnce", "+callbacks.stop.epoch=2"]


def interrupted_run(tmp_path, demo_root, *extra: str) -> tuple[Path, Path]:
    """A 3-epoch run on a private copy of the demo data, stopped as epoch 2 starts; returns
    (data copy, run dir)."""
    from mammo.train import main

    copy = demo_copy(tmp_path, demo_root)
    args = [
        *TINY,
        "epochs=3",
        "data=dicom_csv",
        f"data.csv={copy / 'classificacao.csv'}",
        f"data.dicom_root={copy / 'archive'}",
        f"paths.output_dir={tmp_path / 'outputs'}",
        *STOP_AT_EPOCH_2,
        f"+callbacks.stop.marker={tmp_path / 'stopped'}",
        *extra,
    ]
    assert run_cli(main, args) != 0
    run = tmp_path / "outputs" / "mammo_tiny_density" / "results_1"
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    return copy, run


def snapshot(run: Path) -> dict[str, bytes]:
    """Every file of the run directory, run.log and Hydra's records included."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_resume_refuses_changed_data_and_changing_overrides_and_leaves_the_run_as_it_was(
    tmp_path, demo_root, tests_trusted, capsys
):
    from mammo.train import main

    copy, run = interrupted_run(tmp_path, demo_root)
    before = snapshot(run)
    labels = copy / "classificacao.csv"
    original = labels.read_text()
    table = pd.read_csv(labels)
    table.loc[0, "Classification"] = 1 + table.loc[0, "Classification"] % 4  # one exam relabelled
    table.to_csv(labels, index=False)
    capsys.readouterr()

    assert run_cli(main, [f"resume={run}"]) == 1
    err = capsys.readouterr().err
    assert f"resume={run}: the data changed since the run started" in err
    assert "relabelled (e.g. " in err or "relabelled (" in err
    assert "Traceback" not in err
    assert snapshot(run) == before  # summary.json, data_manifest.json and split.csv untouched

    labels.write_text(original)
    assert run_cli(main, [f"resume={run}", "epochs=4", "learning_rate=0.01"]) == 1
    err = capsys.readouterr().err
    assert f"resume={run}: epochs=4, learning_rate=0.01 would change the run it continues" in err
    assert "data.num_workers" in err and "Traceback" not in err
    assert snapshot(run) == before

    assert run_cli(main, [f"resume={run}", "data.num_workers=0"]) == 0  # cannot change the result
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 3
    first = json.loads(before["summary.json"])["execution"]["duration_seconds"]
    assert summary["execution"]["duration_seconds"] > first  # the time before the stop counts too


def test_resume_of_a_completed_run_says_so_and_changes_nothing(tmp_path, demo_root, capsys):
    from tests.conftest import train_tiny

    run = train_tiny(tmp_path, demo_root, "epochs=1", "logger=csv")
    before = snapshot(run)
    log = (run / "run.log").read_bytes()
    capsys.readouterr()
    from mammo.train import main

    assert run_cli(main, [f"resume={run}"]) == 0
    err = capsys.readouterr().err
    assert f"resume={run}: {run} already completed" in err and "nothing changed" in err
    assert snapshot(run) == before and (run / "logs" / "metrics.csv").is_file()
    assert (run / "run.log").read_bytes() == log and not (run / ".hydra_resume").exists()


def test_resume_without_the_best_model_is_refused(tmp_path, demo_root, tests_trusted, capsys):
    from mammo.train import main

    _, run = interrupted_run(tmp_path, demo_root)
    (run / "best_model.pt").unlink()
    before = snapshot(run)
    capsys.readouterr()
    assert run_cli(main, [f"resume={run}"]) == 1
    err = capsys.readouterr().err
    assert f"resume={run}: best_model.pt is missing" in err and "Traceback" not in err
    assert snapshot(run) == before


class Payload:
    """Unpickling this runs ``touch <marker>``: what a tampered checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("which", ["last.ckpt", "best_model.pt"])
def test_a_pickle_payload_in_a_checkpoint_never_runs(tmp_path, demo_root, tests_trusted, capsys, which):
    import torch

    from mammo.evaluate import main as evaluate
    from mammo.train import main

    _, run = interrupted_run(tmp_path, demo_root)
    marker = tmp_path / "payload-ran"
    path = run / "checkpoints" / "last.ckpt" if which == "last.ckpt" else run / "best_model.pt"
    state = torch.load(path, weights_only=True)  # what mammo writes loads as weights only
    state["extra"] = Payload(marker)
    torch.save(state, path)
    capsys.readouterr()
    if which == "last.ckpt":
        assert run_cli(main, [f"resume={run}"]) == 1
        message = f"resume={run}: {path} is not loaded"
    else:
        assert run_cli(evaluate, [f"ckpt={path}", f"paths.output_dir={tmp_path / 'eval'}"]) == 1
        message = f"ckpt: cannot read {path} as weights only"
    err = capsys.readouterr().err
    assert message in err and "GLOBAL posix.system" in err and "Traceback" not in err
    assert not marker.exists()


def test_a_resume_keeps_every_epochs_rows_in_metrics_csv_and_records_each_start(
    tmp_path, demo_root, tests_trusted
):
    """Lightning's CSVLogger deleted the rows of the epochs before the stop."""
    from mammo.train import main

    _, run = interrupted_run(tmp_path, demo_root, "logger=csv")
    metrics = run / "logs" / "metrics.csv"
    assert set(pd.read_csv(metrics)["epoch"]) == {0}
    summary = json.loads((run / "summary.json").read_text())
    (first,) = summary["starts"]
    assert first["from_epoch"] == 0 and first["pipeline_version"] == 3 and first["torch_version"]
    first["torch_version"] = "1.0.0"  # the epoch before the stop was trained by other code
    (run / "summary.json").write_text(json.dumps(summary))

    assert run_cli(main, [f"resume={run}"]) == 0
    rows = pd.read_csv(metrics)
    assert sorted(set(rows["epoch"])) == [0, 1, 2]
    assert rows.dropna(subset=["val_kappa"])["epoch"].tolist() == [0, 1, 2]  # one validation row each
    starts = json.loads((run / "summary.json").read_text())["starts"]
    assert [s["from_epoch"] for s in starts] == [0, 1] and starts[1]["torch_version"] != "1.0.0"
    warned = [line for line in (run / "run.log").read_text().splitlines() if "trained by other code" in line]
    assert [line.split("] ", 1)[1] for line in warned] == [
        f"WARNING: resume={run}: epochs 1-1 were trained by other code (torch_version 1.0.0 -> "
        f"{starts[1]['torch_version']}); summary.json's starts record each"
    ]
    assert (run / ".hydra_resume" / "overrides.yaml").read_text().strip() == f"- resume={run}"
    assert "will be deleted" not in (run / "run.log").read_text()  # Lightning's warning: not so here


def test_a_damaged_checkpoint_or_another_pipeline_is_refused_and_the_run_stays_as_it_was(
    tmp_path, demo_root, tests_trusted, capsys
):
    from mammo.train import main

    _, run = interrupted_run(tmp_path, demo_root, "logger=csv")
    summary = json.loads((run / "summary.json").read_text())
    summary["starts"][-1]["pipeline_version"] = 2
    (run / "summary.json").write_text(json.dumps(summary))
    before = snapshot(run)
    capsys.readouterr()
    assert run_cli(main, [f"resume={run}"]) == 1
    err = capsys.readouterr().err
    assert f"resume={run}: the run started under preprocessing pipeline version 2, this mammo has 3" in err
    assert "Traceback" not in err and snapshot(run) == before

    summary["starts"][-1]["pipeline_version"] = 3
    (run / "summary.json").write_text(json.dumps(summary))
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a disk error cut it
    before = snapshot(run)
    assert run_cli(main, [f"resume={run}"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith(f"resume={run}: {last} is damaged (")
    assert "evaluate its best_model.pt" in err and "Traceback" not in err
    assert snapshot(run) == before  # metrics.csv, run.log and summary.json included
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
