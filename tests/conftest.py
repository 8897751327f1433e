"""Shared fixtures: a small generated demo dataset and a runner for the real CLI entry."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import execution_whitelist

from mammo import TRUSTED_TARGETS
from mammo.artifacts.rundir import register_resolvers

register_resolvers()  # as every entry does on import: composed configs resolve ${mammo.*} too

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).parent.parent / ".pytest_cache" / "numba"))

REPO = Path(__file__).resolve().parent.parent
SMALL_DEMO = ["data.demo.n_patients=24", "data.demo.height=160", "data.demo.width=128"]
TINY = [
    "model=tiny",
    "img_size=64",
    "batch_size=16",
    "data.num_workers=0",
    "logger=none",
    "callbacks=none",
    "learning_rate=3e-3",
    "warmup_epochs=0",  # below epochs, which tests keep small
]


SLURM_SKIP = (
    "needs a SLURM cluster: `make test-slurm` starts a one-node one here and runs these "
    "(or MAMMO_SLURM=1 with SLURM_CONF set, on a cluster: docs/tutorials/scaling-out.md)"
)


DOCS_SKIP = "the docs site's tests: make test-docs runs these (.ci/run does, after make test)"
GPU_SKIP = "needs a CUDA GPU: scripts/gpu_check.sh runs these on a GPU machine (docs/design/benchmarks.md)"


def under_ci() -> bool:
    """``CI=true``: where ``.ci/run`` installed every component the tests start themselves."""
    return os.environ.get("CI", "").strip().lower() == "true"


def missing_component(component: str, how: str) -> None:
    """A test that needs a real component (a server, a browser, mount rights) that is not here:
    skipped on a laptop, saying how to get it; failed under CI, where a skip would let the suite
    pass without the test (``.ci/run`` installs them and stops when an install fails)."""
    message = f"needs {component}: {how}"
    if under_ci():
        pytest.fail(f"{message} (CI=true: .ci/run should have provided it)", pytrace=False)
    pytest.skip(message)


def pytest_collection_modifyitems(config, items):
    """The ``slurm`` tests run where ``make test-slurm`` (or a user, on a cluster) says a scheduler
    is there to take jobs (``MAMMO_SLURM=1``), the ``docs`` tests under ``make test-docs``
    (``MAMMO_DOCS=1``; ``.ci/run`` calls both), the ``gpu`` tests where a CUDA GPU is visible;
    elsewhere they are skipped, saying how to run them."""
    import torch

    slurm, docs = os.environ.get("MAMMO_SLURM") == "1", os.environ.get("MAMMO_DOCS") == "1"
    gpu = torch.cuda.is_available()
    for item in items:
        if "slurm" in item.keywords and not slurm:
            item.add_marker(pytest.mark.skip(reason=SLURM_SKIP))
        if "docs" in item.keywords and not docs:
            item.add_marker(pytest.mark.skip(reason=DOCS_SKIP))
        if "gpu" in item.keywords and not gpu:
            item.add_marker(pytest.mark.skip(reason=GPU_SKIP))


@pytest.fixture(autouse=True)
def _trusted_targets():
    """The packages a config may instantiate, as every entry names them
    (``hydra.main(execution_whitelist=...)``), for tests that compose a config and instantiate it."""
    with execution_whitelist(TRUSTED_TARGETS):
        yield


@pytest.fixture(autouse=True)
def _run_in_tmp_dir(tmp_path, monkeypatch):
    """Every test runs in its own working directory, so nothing (e.g. a results_N directory that
    composing a config allocates under the default outputs/) lands in the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def tests_trusted():
    """What ``MAMMO_TRUSTED_TARGETS=tests.*`` does at start-up, for an in-process run: a config may
    then instantiate the test-only callbacks."""
    from mammo import TRUSTED_TARGETS

    TRUSTED_TARGETS.append("tests.*")
    try:
        with execution_whitelist(TRUSTED_TARGETS):  # also for configs composed by the test
            yield
    finally:
        TRUSTED_TARGETS.remove("tests.*")


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """Folder holding the small demo set (generated once per session)."""
    return tmp_path_factory.mktemp("demo")


def sklearn_density_metrics(y, predicted, probs, first_label: int = 1) -> dict[str, float]:
    """The density metrics recomputed independently with scikit-learn, in mammo's order
    (``y``/``predicted`` are labels counted from ``first_label``: 1 = A in the CSVs)."""
    import numpy as np
    from sklearn import metrics as skm

    index = np.asarray(y) - first_label
    dense, dense_predicted = index >= 2, np.asarray(predicted) - first_label >= 2  # BI-RADS C/D
    onehot = np.eye(probs.shape[1])[index]
    confidence, correct = probs.max(axis=1), (probs.argmax(axis=1) == index)
    bins = np.minimum((confidence * 15).astype(int), 14)  # 15 equal-width bins
    ece = sum(abs(correct[bins == b].sum() - confidence[bins == b].sum()) for b in range(15)) / len(y)
    return {
        "accuracy": skm.accuracy_score(y, predicted),
        "balanced_accuracy": skm.balanced_accuracy_score(y, predicted),
        "balanced_accuracy_adjusted": skm.balanced_accuracy_score(y, predicted, adjusted=True),
        "kappa_quadratic": skm.cohen_kappa_score(y, predicted, weights="quadratic"),
        "macro_f1": skm.f1_score(y, predicted, average="macro"),
        "auc_ovr": skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"),
        "kappa_linear": skm.cohen_kappa_score(y, predicted, weights="linear"),
        "dense_accuracy": skm.accuracy_score(dense, dense_predicted),
        "dense_sensitivity": skm.recall_score(dense, dense_predicted),
        "dense_specificity": skm.recall_score(~dense, ~dense_predicted),
        "dense_auc": skm.roc_auc_score(dense, probs[:, 2:4].sum(axis=1)),
        "ece": ece,
        "brier": float(((probs - onehot) ** 2).sum(axis=1).mean()),
    }


def run_cli(main, args: list[str]) -> int:
    """Run a Hydra entry (``mammo.train.main``) in-process as ``python -m`` would; returns the exit code."""
    saved = sys.argv
    sys.argv = ["mammo", *args]
    try:
        main()
        return 0
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        sys.argv = saved


def console_of(main, args: list[str]) -> tuple[int, str]:
    """:func:`run_cli` with what the entry printed (stdout and stderr, logging's console handler
    included: Hydra makes it per job, on the streams of the moment)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    text = io.StringIO()
    with redirect_stdout(text), redirect_stderr(text):
        code = run_cli(main, args)
    return code, text.getvalue()


def last_line(console: str) -> str:
    """The last non-empty line of a console, without its time stamp and colours."""
    import re

    lines = [re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", line).strip() for line in console.splitlines()]
    stamp = r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(,\d+)?\](\[HYDRA\])? "  # mammo's and Hydra's own
    return re.sub(stamp, "", [line for line in lines if line][-1])


def train_tiny(tmp_path: Path, demo_root: Path, *overrides: str) -> Path:
    """Train the tiny model on the small demo set; returns the run directory."""
    from mammo.train import main

    out = tmp_path / "outputs"
    args = [*TINY, *SMALL_DEMO, f"paths.output_dir={out}", f"paths.demo_dir={demo_root}", *overrides]
    code = run_cli(main, args)
    runs = sorted((out / "mammo_tiny_density").glob("results_*"))
    assert code == 0, f"training exited with {code}"
    return runs[-1]


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs of its own (a disk that can be filled), unmounted afterwards."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        missing_component("a tmpfs mount of its own (mount rights: root)", made.stderr.decode().strip())
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder) -> None:
    """Write a file in ``folder`` until its file system has no space left."""
    chunk = b"\0" * (64 * 1024)
    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


BROWSER_HINT = "apt-get install chromium chromium-driver (Debian's, as .ci/run does)"


@pytest.fixture
def browser():
    """Headless Chromium with its console and network logs, driven by Selenium; quit (chromedriver
    stopped) after. Skipped, saying how to install it, where it is missing; failed under CI."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        missing_component("Chromium and its driver", BROWSER_HINT)
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()
