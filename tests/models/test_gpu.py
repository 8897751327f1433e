"""The GPU code paths, on a CUDA GPU (marked ``gpu``; skipped without one, saying how to run them:
``scripts/gpu_check.sh`` runs them on a GPU machine). Nothing in CI needs a GPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import SMALL_DEMO, train_tiny

pytestmark = pytest.mark.gpu


def test_training_on_the_gpu_is_bf16_channels_last_and_records_it(tmp_path, demo_root, tests_trusted):
    record = tmp_path / "batch.json"
    run = train_tiny(
        tmp_path,
        demo_root,
        "epochs=2",
        "trainer=gpu",
        "deterministic=false",
        "+callbacks.record._target_=tests.callbacks.RecordBatch",
        f"+callbacks.record.path={record}",
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["environment"]["gpu"]
    assert summary["environment"]["accelerator"] == "CUDAAccelerator"
    batch = json.loads(record.read_text())
    expected = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    assert batch["device"] == "cuda" and batch["channels_last"] and batch["precision"] == expected
    assert batch["pinned"]  # the disk cache (the default) was read straight into pinned memory
    assert summary["environment"]["precision"] == expected


def test_pinned_batches_reach_the_gpu_whole_though_their_memory_is_reused(tmp_path):
    """Each copy to the GPU waits behind a busy stream (``torch.cuda._sleep``) while the next
    batches are read into the recycled pinned memory: each must still arrive as it was read."""
    import lightning as L

    from mammo.data.datamodule import DensityDataModule
    from tests.data.conftest import make_dataset

    csv, root = make_dataset(tmp_path / "data", n_patients=24)
    dm = DensityDataModule.from_config(
        csv=str(csv),
        dicom_root=str(root),
        img_size=256,
        num_workers=2,
        batch_size=4,
        cache_mode="disk",
        cache_dir=str(tmp_path / "cache"),
        train_augment=False,
        seed=42,
    )
    dm.trainer = L.Trainer(accelerator="gpu", devices=1, logger=False)
    dm.setup("fit")
    loader, device = dm.train_dataloader(), torch.device("cuda", 0)
    assert loader.dataset.buffers.pinned and loader.num_workers == 0
    arrived, read = [], []
    for batch in loader:
        torch.cuda._sleep(20_000_000)  # the copy queued behind ~10 ms of GPU work
        arrived.append(dm.transfer_batch_to_device(batch, device, 0)[0])
        read.append(batch[0].clone())
        assert batch[0].is_pinned()
    torch.cuda.synchronize()
    assert len(arrived) >= 6 and all(torch.equal(a.cpu(), r) for a, r in zip(arrived, read))


def test_batch_augmentation_runs_on_the_gpu_batch():
    from mammo.data.cache import BatchAugmentation

    images = torch.rand(4, 1, 64, 48, device="cuda").half().contiguous(memory_format=torch.channels_last)
    out = BatchAugmentation()(images)
    assert out.is_cuda and out.shape == images.shape and 0 <= out.min() and out.max() <= 1


def test_evaluate_on_the_gpu_matches_the_cpu_and_says_where_it_ran(tmp_path, demo_root):
    import pandas as pd

    from mammo.evaluate import main as evaluate
    from tests.conftest import run_cli

    run = train_tiny(tmp_path, demo_root, "epochs=1")
    paths = [f"paths.output_dir={tmp_path}", f"paths.demo_dir={demo_root}", "data.num_workers=0", *SMALL_DEMO]
    for device in ("cpu", "cuda"):
        assert (
            run_cli(evaluate, [f"ckpt={run / 'best_model.pt'}", "split=val", f"device={device}", *paths]) == 0
        )
    cpu, gpu = (tmp_path / "evaluations" / f"results_{i}" for i in (1, 2))
    assert "Inference on cuda" in (gpu / "run.log").read_text()
    a, b = (
        pd.read_csv(f / "predictions.csv").sort_values("image_id").filter(like="prob_") for f in (cpu, gpu)
    )
    assert np.abs(a.to_numpy() - b.to_numpy()).max() < 0.05  # bf16 autocast and channels_last on the GPU


def test_ddp_on_one_gpu_writes_one_run(tmp_path, demo_root):
    run = train_tiny(tmp_path, demo_root, "epochs=1", "trainer=ddp", "trainer.devices=1")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["environment"]["strategy"] == "DDPStrategy"
    assert summary["environment"]["world_size"] == 1
