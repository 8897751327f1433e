"""The docs site (docs/, mkdocs.yml): it builds with --strict, every config key is explained, the
commands its pages mark runnable run as a user types them (made tiny), and the built site works
in a real browser with nothing fetched from outside. The three marked ``docs`` run under
``make test-docs`` (a minute or two); the rest in ``make test``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mammo.core.config_keys import config_keys
from tests.conftest import REPO, missing_component
from tests.docs_commands import RENAMED

BLOCK = re.compile(r"<!-- (runnable|not run: [^>]+) -->\s*```bash\n(.*?)```", flags=re.S)
"""A shell block with its mark: ``<!-- runnable -->``, or ``<!-- not run: <why> -->``."""
WALKED = ("get-started.md", "tutorials/", "how-to/", "reference/outputs.md")
"""The pages whose every shell block is marked: run by the suite, or saying why not."""


def shell_blocks(page: Path) -> list[tuple[str, str]]:
    """Each marked shell block of ``page``: its mark and its text."""
    return BLOCK.findall(page.read_text())


def walked_pages() -> list[str]:
    pages = sorted(p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs").rglob("*.md"))
    return [p for p in pages if p.startswith(WALKED)]


def runnable_pages() -> list[str]:
    return [p for p in walked_pages() if any(m == "runnable" for m, _ in shell_blocks(REPO / "docs" / p))]


def run_blocks(page: str, folder: Path) -> None:
    """Run ``page``'s runnable blocks in ``folder``, in order, with bash, as the docs print them
    (folders renamed: :data:`tests.docs_commands.RENAMED`) and ``python`` made tiny
    (:func:`tests.docs_commands.made_tiny`)."""
    bin_dir = folder.parent / f"{folder.name}-bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{REPO}/tests/docs_commands.py" "$@"\n')
    wrapper.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",  # the venv's tools
        "MPLBACKEND": "Agg",
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
    }
    for mark, block in shell_blocks(REPO / "docs" / page):
        if mark != "runnable":
            continue
        for old, new in RENAMED.items():
            block = block.replace(old, new)
        if re.search(r"\bjq\b", block) and not shutil.which("jq"):
            missing_component("jq", "apt-get install jq (the page queries JSON files with it)")
        done = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", block], cwd=folder, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"{page}:\n{block}\n{done.stdout[-2500:]}\n{done.stderr[-2500:]}"


def test_every_shell_block_of_the_walked_pages_is_run_or_says_why_not():
    for page in walked_pages():
        text = (REPO / "docs" / page).read_text()
        assert len(shell_blocks(REPO / "docs" / page)) == text.count("```bash"), page
    tutorials = {p for p in walked_pages() if p.startswith("tutorials/")}
    assert tutorials - set(runnable_pages()) == {"tutorials/gpu.md"}  # needs a GPU


@pytest.fixture(scope="session")
def started(tmp_path_factory) -> Path:
    """A folder after Get started's runnable blocks: the demo run, its review and evaluation, a
    run on a folder of DICOMs (the demo's, as your own)."""
    folder = tmp_path_factory.mktemp("docs") / "started"
    folder.mkdir()
    run_blocks("get-started.md", folder)
    return folder


@pytest.fixture(scope="session")
def given(started, tmp_path_factory) -> Path:
    """What every other page assumes, beside Get started's folder: a user's own label CSV and
    DICOM folder (``labels.csv`` and ``classificacao.csv``, ``archive/``: 20 patients, accession
    folders), a few exams to predict (``new_exams/``), and each public dataset as downloaded under
    ``data/`` (``data/rsna``, ``data/vindr-mammo``, ``data/cbis-ddsm``, ``data/embed``,
    ``data/INbreast``; the pages say ``/data/...``)."""
    from tests.data.conftest import make_dataset
    from tests.data.datasets.fakes import make_inbreast, make_rsna, make_vindr
    from tests.data.datasets.fakes_cbis_embed import make_cbis, make_embed

    folder = tmp_path_factory.mktemp("given") / "given"
    shutil.copytree(started, folder)
    labels, archive = make_dataset(folder)
    shutil.copy(labels, folder / "classificacao.csv")
    for exam in ("ACC000", "ACC001"):
        shutil.copytree(archive / exam, folder / "new_exams" / exam)
    makers = {"rsna": make_rsna, "vindr-mammo": make_vindr, "cbis-ddsm": make_cbis, "embed": make_embed}
    for name, make in {**makers, "INbreast": make_inbreast}.items():
        make(folder / "data" / name)
    return folder


@pytest.mark.docs
def test_get_started_runs_as_written(started):
    outputs = started / "outputs"
    assert (outputs / "mammo_tiny_density/results_1/review/index.html").is_file()
    assert (outputs / "evaluations/results_1/metrics/eval_metrics.json").is_file()
    assert list(outputs.glob("*/data_reviews/results_1/review/index.html"))


PAGE_LEAVES = {
    "tutorials/own-data.md": ["mammo_tiny_density/results_4/summary.json"],
    "tutorials/seeds-and-cv.md": ["density_experiments/results_k3_seed42/cv_summary.json"],
    "tutorials/after-training.md": ["predictions/results_1/predictions_exam.csv"],
    "tutorials/hpo.md": ["mammo_tiny_density/hpo_runs/best_params.json"],
}
"""A file each page's blocks leave in ``outputs/`` (beside their exit status, what shows that
they did what the page says)."""


@pytest.mark.docs
@pytest.mark.parametrize("page", [p for p in runnable_pages() if p != "get-started.md"])
def test_every_runnable_block_of_the_docs_runs_as_written(page, given, tmp_path):
    """A page's runnable blocks in order, in a copy of the :func:`given` folder."""
    folder = tmp_path / "page"
    shutil.copytree(given, folder)
    run_blocks(page, folder)
    for leaf in PAGE_LEAVES.get(page, []):
        assert (folder / "outputs" / leaf).is_file(), leaf


@pytest.mark.docs
def test_the_site_builds_with_no_broken_link_or_anchor(tmp_path):
    mkdocs = Path(sys.executable).parent / "mkdocs"
    if not mkdocs.exists():
        pytest.skip("needs mkdocs-material: pip install -e '.[docs]' (the lock has it)")
    done = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", tmp_path / "site"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reference = (tmp_path / "site/reference/config.html").read_text()
    assert "readings_rule" in reference and "max_upload_mb" in reference  # generated from conf/


PLUMBING = ("_target_", "_partial_")
"""Hydra's own keys (which class a node builds): their value says it."""


def test_no_config_key_goes_without_a_comment_for_the_reference():
    """Every setting a user gives has a comment the reference shows: each leaf key of conf/ but
    Hydra's plumbing and the logging config (hydra/job_logging: Python's dictConfig)."""
    keys = [
        k
        for k in config_keys(REPO / "conf")
        if k.key.rsplit(".", 1)[-1] not in PLUMBING and not k.file.startswith("hydra/job_logging/")
    ]
    blocks = {f"{k.file}:{k.key.rsplit('.', 1)[0]}" for k in keys if "." in k.key}
    leaves = [k for k in keys if f"{k.file}:{k.key}" not in blocks]
    missing = sorted(f"conf/{k.file}: {k.key}" for k in leaves if not k.comment)
    assert len(leaves) > 300 and not missing, f"keys without a comment (the reference shows it): {missing}"


@pytest.mark.docs
def test_the_built_site_works_in_a_browser_with_nothing_from_outside(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    mkdocs = Path(sys.executable).parent / "mkdocs"
    if not mkdocs.exists():
        pytest.skip("needs mkdocs-material: pip install -e '.[docs]' (the lock has it)")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    subprocess.run([mkdocs, "build", "--site-dir", site], cwd=REPO, check=True, capture_output=True, env=env)
    browser.set_window_size(1300, 1100)  # wide: the search box sits in the header
    pages = sorted(p for p in site.rglob("*.html") if p.name != "404.html" and "assets" not in p.parts)
    assert len(pages) >= 20
    for page in pages:  # from the folder, as `make docs` leaves it
        browser.get(page.as_uri())
        WebDriverWait(browser, 30).until(
            lambda d: d.execute_script("return document.readyState") == "complete"
        )
        assert browser.find_element(By.CSS_SELECTOR, "h1").text, page
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, (page, errors)
    browser.get((site / "index.html").as_uri())
    browser.find_element(By.CSS_SELECTOR, ".md-search__form").click()
    browser.switch_to.active_element.send_keys("readings_rule")
    hits = WebDriverWait(browser, 30).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, ".md-search-result__item")
    )
    assert "Configuration" in hits[0].text
    requests = [json.loads(e["message"])["message"] for e in browser.get_log("performance")]
    urls = {m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"}
    assert not [u for u in urls if not u.startswith(("file://", "data:", "blob:"))]


def test_the_citation_file_is_valid_cff_of_this_version():
    import tomllib
    import yaml

    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0"
    assert {"message", "title", "authors", "version"} <= set(citation)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert str(citation["version"]) == project["version"]


def test_the_readme_is_a_front_page_whose_links_lead_into_the_docs():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    links = re.findall(r"\]\(([^)#]+)\)", readme)
    local = [link for link in links if not link.startswith("http")]
    missing = [link for link in local if not (REPO / link).exists()]
    assert local and not missing, missing


def test_the_config_reference_says_what_the_settings_check_requires():
    from mammo.core.config_keys import reference_markdown
    from mammo.core.train_settings import TRAIN_RULES

    reference = reference_markdown(REPO / "conf", {rule.key: rule.expected for rule in TRAIN_RULES})
    train = reference.split("### `train.yaml` (an entry's config)")[1].split("### ")[0]
    assert (
        "| `epochs` | `20` | the most training epochs (early stopping may end it sooner) | an integer >= 1 |"
        in train
    )
    data = reference.split("### `data=dicom_csv`")[1].split("### ")[0]
    assert "| a fraction in (0, 1) |" in next(
        line for line in data.splitlines() if line.startswith("| `val_fraction`")
    )
    evaluate = reference.split("### `evaluate.yaml` (an entry's config)")[1].split("### ")[0]
    assert all(
        line.endswith("|  |") for line in evaluate.splitlines() if line.startswith("| `")
    )  # not train's


def documented(page: str) -> re.Pattern:
    """What ``page`` names: each code span, a ``<placeholder>`` in it standing for any name and
    ``{a,b}`` for either (``prob_class<k>``, ``val_{breast,exam}_metrics.json``)."""
    spans = set(re.findall(r"`([^`\n]+)`", page))
    names = {w for s in spans for w in re.split(r"[\s=:()\[\]]+|,(?![^{]*\})", s) if w}
    patterns = []
    for name in (n for n in names if re.search(r"\w", re.sub(r"<[^>]+>", "", n))):  # not a bare <x>
        pattern = re.sub(r"<[^>]+>", r"[^/]+", re.escape(name))
        pattern = re.sub(r"\\\{([^}]+)\\\}", lambda m: "(" + "|".join(m.group(1).split(",")) + ")", pattern)
        patterns.append(pattern)
    return re.compile("|".join(sorted(patterns, key=len, reverse=True)))


def written_names(folder: Path) -> set[str]:
    """Each file a run folder holds (its path there), each column of its CSV files and each top-level
    key of its JSON files (``.hydra/``, review cards and Lightning's checkpoints aside)."""
    import csv

    names = set()
    for file in folder.rglob("*"):
        inside = file.relative_to(folder).parts
        if not file.is_file() or {".hydra", "cards", "checkpoints"} & set(inside):
            continue
        names.add("/".join(inside))
        if file.suffix == ".csv":
            names |= {f"{file.name}: {c}" for c in next(csv.reader(file.open()), [])}
        elif file.suffix == ".json" and isinstance(data := json.loads(file.read_text()), dict):
            names |= {f"{file.name}: {k}" for k in data}
    return names


@pytest.mark.docs
def test_the_artifacts_page_names_every_file_column_and_key_a_run_writes(started):
    """docs/reference/outputs.md against what Get started's commands wrote: the demo run (with
    its review), the run on a folder, the evaluation and the data review."""
    names = documented((REPO / "docs/reference/outputs.md").read_text())
    outputs = started / "outputs"
    folders = [*outputs.glob("mammo_tiny_density/results_*"), outputs / "evaluations/results_1"]
    folders += [*outputs.glob("*/data_reviews/results_*")]
    written = set().union(*(written_names(f) for f in folders))
    missing = sorted(n for n in written if not names.fullmatch(n.rsplit(": ", 1)[-1]))
    assert len(folders) == 4 and not missing, missing


def test_every_line_on_the_error_page_is_one_the_code_writes():
    """docs/reference/errors.md's table quotes each line with ``…`` for what varies: every piece
    of more than one word between them is in mammo's source or its Hydra plugins' (adjacent string
    literals joined)."""
    files = [*(REPO / "mammo").rglob("*.py"), *(REPO / "hydra_plugins").rglob("*.py")]
    source = "\n".join(p.read_text() for p in files)
    source = re.sub(r"\"\s*\n\s*f?\"", "", source)
    table = (REPO / "docs/reference/errors.md").read_text().split("## The lines, and what to do")[1]
    lines = re.findall(r"^\| `([^`]+)` \|", table.split("\n## ")[0], flags=re.M)
    pieces = [p.strip(" ;.") for line in lines for p in line.split("…")]
    missing = [p for p in pieces if " " in p and p not in source]
    assert len(lines) >= 20 and not missing, missing
