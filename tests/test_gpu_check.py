"""``scripts/gpu_check.sh`` on a machine without a GPU: one line saying so, the ``gpu`` tests
skipped, exit 0, and the report file written (its GPU steps run on a GPU machine; their command
lines are checked on the CPU with ``GPU_CHECK_REHEARSE=1``, docs/design/benchmarks.md)."""

from __future__ import annotations

import os
import subprocess

import pytest
import torch

from tests.conftest import REPO


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the script runs its GPU steps")
def test_without_a_gpu_the_check_says_so_and_passes(tmp_path):
    done = subprocess.run(
        ["bash", "scripts/gpu_check.sh"],
        cwd=REPO,
        env={**os.environ, "OUT": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = (tmp_path / "gpu_check.txt").read_text()
    assert "no CUDA GPU visible (torch.cuda.is_available() is False): the GPU steps are skipped" in report
    assert "needs a CUDA GPU: scripts/gpu_check.sh runs these" in report  # the gpu tests, skipped
    assert (
        "== torch ==" in report
        and "torch 2." in report
        and "-- gpu tests (skipped without a GPU): rc=0" in report
    )
