"""Scale-out: DDP on CPU processes, ranks started by a cluster, joblib sweeps, parallel HPO workers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mammo.distributed.claims import CLAIMS_DIR, mark_data_prepared
from mammo.distributed.collectives import gather_unique
from mammo.hpo.storage import open_storage
from tests.conftest import SMALL_DEMO, TINY, sklearn_density_metrics
from tests.distributed import SLURM_JOB
from tests.servers import free_port, postgres_server


# ------------------------------------------------------------------------------ unit level
def test_a_cluster_rank_sets_up_its_data_only_after_rank_zero(tmp_path, monkeypatch, small_demo):
    from hydra import compose, initialize_config_dir

    from mammo import CONFIG_DIR
    from mammo.artifacts.summary import RunSummary
    from mammo.workflows.components import build_datamodule
    from mammo.workflows.run_context import Run

    run_dir = tmp_path / "results_1"
    overrides = [*TINY, *SMALL_DEMO, f"paths.output_dir={tmp_path}", f"paths.run_dir={run_dir}"]
    with initialize_config_dir(config_dir=CONFIG_DIR):
        cfg = compose("train", overrides=[*overrides, f"paths.demo_dir={small_demo}"])
    for name, value in {**SLURM_JOB, "SLURM_PROCID": "1"}.items():
        monkeypatch.setenv(name, value)
    built = {}
    summary = RunSummary(run_dir / "summary.json", "density_classification", "results_1", 42, write=False)
    run = Run(cfg, run_dir, summary, writes=False)  # a rank that does not write
    rank_one = threading.Thread(target=lambda: built.update(dm=build_datamodule(run)))
    rank_one.start()
    time.sleep(1.0)
    assert rank_one.is_alive() and not built  # no setup before rank zero's data is ready
    mark_data_prepared(run_dir, {**SLURM_JOB, "SLURM_PROCID": "0"})
    rank_one.join(120)
    assert len(built["dm"].train_table) > 0


def _gather_worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    # 5 rows over 2 ranks: DistributedSampler(shuffle=False) gives rank 0 rows 0,2,4 and rank 1
    # rows 1,3 plus row 0 again as padding
    rows = torch.tensor([0, 2, 4]) if rank == 0 else torch.tensor([1, 3, 0])
    probs = rows[:, None].float() * torch.tensor([[1.0, -1.0]])
    got_rows, got_probs, nothing = gather_unique(rows, probs, None)
    torch.save({"rows": got_rows, "probs": got_probs, "none": nothing}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def test_gather_unique_drops_sampler_padding_and_agrees_on_every_rank(tmp_path):
    torch.multiprocessing.spawn(_gather_worker, args=(free_port(), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["rows"].tolist() == [0, 1, 2, 3, 4] and got["none"] is None
        assert got["probs"][:, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_gather_unique_is_the_identity_in_one_process():
    rows, probs = torch.tensor([3, 1]), torch.rand(2, 4)
    out = gather_unique(rows, probs)
    assert out[0] is rows and out[1] is probs


def _open_storage_at_once(url: str, barrier) -> str:
    barrier.wait()
    try:
        open_storage(url, heartbeat_interval=30)
        return "ok"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def test_workers_starting_together_all_open_a_new_storage(tmp_path):
    """Optuna's RDBStorage fails when several processes create the same new database at once
    (alembic_version / table races: about half of 6 simultaneous openings here); the sweeper retries."""
    import multiprocessing

    with multiprocessing.Manager() as manager:
        barrier = manager.Barrier(6)
        with multiprocessing.Pool(6) as pool:
            results = pool.starmap(_open_storage_at_once, [(f"sqlite:///{tmp_path}/optuna.db", barrier)] * 6)
    assert results == ["ok"] * 6


def test_slurm_launcher_preset_follows_the_trainer():
    from hydra import compose, initialize_config_dir

    from mammo import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR):
        cfg = compose(
            "train",
            ["launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (4, 4, 2)
    assert cfg.trainer.strategy._target_ == "mammo.distributed.launcher.ddp_strategy"
    with initialize_config_dir(config_dir=CONFIG_DIR):
        cpu = compose("train", ["launcher=slurm", "trainer=ddp_cpu"], return_hydra_config=True)
    assert (cpu.hydra.launcher.tasks_per_node, cpu.hydra.launcher.gpus_per_node) == (2, None)  # no GPU asked


# ------------------------------------------------------------------------------ end to end
def mammo(*args: str, cwd, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mammo.train", *args],
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", **(env or {})},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def finish(*procs: subprocess.Popen) -> str:
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
        outputs.append(out)
    return "\n".join(outputs)


def ddp_args(out, demo_root) -> list[str]:
    return [
        *TINY,
        *SMALL_DEMO,
        "epochs=2",
        "gradcam_per_class=0",
        "trainer=ddp_cpu",
        "trainer.devices=2",
        f"paths.output_dir={out}",
        f"paths.demo_dir={demo_root}",
    ]


def only_run_dir(out) -> object:
    runs = list((out / "mammo_tiny_density").glob("results_*"))
    assert len(runs) == 1, runs
    assert not (out / "mammo_tiny_density" / CLAIMS_DIR).exists()
    return runs[0]


def check_complete_ddp_run(run) -> pd.DataFrame:
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["environment"]["world_size"] == 2
    split = pd.read_csv(run / "split.csv")
    val_ids = sorted(split.loc[split["split"] == "val", "image_id"])
    preds = pd.read_csv(run / "val_predictions.csv")
    assert len(preds) == len(val_ids) and not preds["image_id"].duplicated().any()
    assert sorted(preds["image_id"]) == val_ids  # every val image once, none from train
    probs = preds.filter(like="prob_class").to_numpy()
    expected = sklearn_density_metrics(preds["true_label"], preds["predicted_label"], probs)
    written = json.loads((run / "metrics" / "val_metrics.json").read_text())
    assert written["num_samples"] == len(val_ids)
    assert {k: written[k] for k in expected} == pytest.approx(expected, abs=1e-5)
    log = (run / "run.log").read_text()
    assert log.count("Epoch 1/2") == 1 and log.count("Run directory: ") == 1  # rank zero only
    assert json.loads((run / "train_history.json").read_text())["epoch"] == [1, 2]
    assert (run / "best_model.pt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == [
        "config.yaml",
        "hydra.yaml",
        "overrides.yaml",
    ]
    return preds


@pytest.mark.slow
def test_ddp_cpu_two_processes_write_one_complete_run(tmp_path, small_demo):
    """Lightning starts rank 1; a cluster (SLURM-style srun tasks) starts both ranks: either way
    one run directory, the whole val split once, and the same predictions. The cluster's rank 1
    waits for rank zero to fill the disk cache, then only reuses it."""
    lightning_out, slurm_out = tmp_path / "lightning", tmp_path / "slurm"
    finish(mammo(*ddp_args(lightning_out, small_demo), cwd=tmp_path))
    port = str(free_port())
    tasks = [
        mammo(
            *ddp_args(slurm_out, small_demo),
            "data.cache_mode=disk",
            cwd=tmp_path,
            env={
                **SLURM_JOB,
                "SLURM_NTASKS_PER_NODE": "2",
                "SLURM_PROCID": str(r),
                "SLURM_LOCALID": str(r),
                "SLURM_NODEID": "0",
                "SLURM_NODELIST": "localhost",
                "SLURM_JOB_NAME": "mammo",
                "MASTER_PORT": port,
            },
        )
        for r in (0, 1)
    ]
    console = finish(*tasks)
    built = re.findall(r"Preprocessed images \(cache_mode=disk.*: (\d+) reused, (\d+) built", console)
    assert len(built) == 2 and built[0][0] == "0" and built[1][1] == "0", built  # rank 0 built, rank 1 reused
    by_lightning = check_complete_ddp_run(only_run_dir(lightning_out))
    by_cluster = check_complete_ddp_run(only_run_dir(slurm_out))
    pd.testing.assert_frame_equal(by_lightning, by_cluster)


@pytest.mark.slow
def test_joblib_launcher_runs_a_seed_sweep_in_parallel(tmp_path, small_demo):
    args = [*TINY, *SMALL_DEMO, "epochs=1", "gradcam_per_class=0", f"paths.demo_dir={small_demo}"]
    out = finish(
        mammo("-m", "launcher=joblib", "seed=1,2", f"paths.output_dir={tmp_path}", *args, cwd=tmp_path)
    )
    assert "Joblib.Parallel(n_jobs=2" in out
    exp = tmp_path / "mammo_tiny_density"
    seeds = sorted(json.loads((run / "summary.json").read_text())["seed"] for run in exp.glob("results_*"))
    assert seeds == [1, 2]
    jobs = [json.loads(line) for line in (exp / "sweeps" / "sweep_1" / "jobs.jsonl").read_text().splitlines()]
    assert sorted(j["seed"] for j in jobs) == [1, 2] and all(j["status"] == "completed" for j in jobs)
    summary = json.loads((exp / "sweeps" / "sweep_1" / "sweep_summary.json").read_text())
    assert len(summary["runs"]) == 2 and all(r["status"] == "completed" for r in summary["runs"])


@contextmanager
def study_storage(kind: str, runs: Path):
    """``hydra.sweeper.storage`` for ``kind``: the default SQLite file, a journal file, or a
    throwaway PostgreSQL server (skipped where none is installed)."""
    if kind == "sqlite":
        yield f"sqlite:///{runs}/optuna.db"
    elif kind == "journal":
        yield f"journal:{runs}/optuna.journal"
    else:
        with postgres_server() as url:
            yield url


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgresql"])
def test_two_hpo_workers_share_one_study(tmp_path, small_demo, kind):
    import optuna

    runs = tmp_path / "mammo_tiny_density" / "hpo_runs"
    with study_storage(kind, runs) as storage:
        args = [
            "-m",
            "hpo=density_optuna",
            *TINY,
            *SMALL_DEMO,
            "epochs=1",
            "gradcam_per_class=0",
            "hydra.sweeper.n_trials=4",
            f"hydra.sweeper.storage={storage}",
            f"paths.output_dir={tmp_path}",
            f"paths.demo_dir={small_demo}",
        ]
        finish(mammo(*args, cwd=tmp_path), mammo(*args, cwd=tmp_path))
        study = optuna.load_study(
            study_name="mammo_tiny_density_density_optuna", storage=open_storage(storage)
        )
        trials = study.get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]  # none lost, none twice, n_trials kept
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["mammo:worker"] for t in trials}) == 2  # both workers ran trials
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4  # no proposal twice
    records = [json.loads(p.read_text()) for p in runs.glob("results_*/optuna_trial.json")]
    assert sorted(r["trial_number"] for r in records) == [0, 1, 2, 3]  # 4 directories, one per trial
    assert len({r["run_dir"] for r in records}) == 4
    assert len(pd.read_csv(runs / "trials.csv")) == 4
    assert np.isfinite([t.value for t in trials]).all()
