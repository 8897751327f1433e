"""The docs site (docs/, mkdocs.yml): it builds with --strict, every config key is explained, the
commands its pages mark runnable run as a user types them (made tiny), and the built site works
in a real browser with nothing fetched from outside. The three marked ``docs`` run under
``make test-docs`` (a minute or two); the rest in ``make test``."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mammo.core.config_keys import config_keys
from tests.conftest import REPO

TINY_TRAINING = {
    "model": "tiny",
    "img_size": "64",
    "epochs": "1",
    "warmup_epochs": "0",
    "batch_size": "16",
    "data.num_workers": "0",
    "logger": "none",
}
"""What makes a documented training command tiny: these settings (replacing the command's own)."""
SMALL_DEMO = {"data.demo.n_patients": "24", "data.demo.height": "160", "data.demo.width": "128"}
"""And a 24-patient demo set, where the command trains on the demo."""
RENAMED = {"mammo_efficientnetb0_density": "mammo_tiny_density", "v2-p60-s0-320x256": "v2-p24-s0-160x128"}
"""The folders those settings name differently."""


def runnable_blocks() -> list[tuple[str, list[str]]]:
    """Each ``<!-- runnable -->`` shell block of docs/: its page and its commands (continuation
    lines joined, comments dropped)."""
    found = []
    for page in sorted((REPO / "docs").rglob("*.md")):
        text = page.read_text()
        for block in re.findall(r"<!-- runnable -->\s*```bash\n(.*?)```", text, flags=re.S):
            joined = block.replace("\\\n", " ")
            commands = [line.split(" #")[0].strip() for line in joined.splitlines()]
            found.append((page.relative_to(REPO / "docs").as_posix(), [c for c in commands if c]))
    return found


def made_tiny(command: str) -> list[str]:
    """``command`` as the test runs it: this Python, its training made tiny (:data:`TINY_TRAINING`,
    :data:`SMALL_DEMO` where it trains on the demo), its folders renamed (:data:`RENAMED`)."""
    for old, new in RENAMED.items():
        command = command.replace(old, new)
    words = shlex.split(command)
    assert words[:2] == ["python", "-m"], f"a runnable block runs python -m <entry>: {command}"
    words[0] = sys.executable
    if words[2] == "mammo.train":
        wanted = {**TINY_TRAINING, **({} if any(w.startswith("data=") for w in words) else SMALL_DEMO)}
        words = [w for w in words if w.split("=")[0] not in wanted]
        words += [f"{k}={v}" for k, v in wanted.items()]
    return words


def test_the_pages_mark_commands_runnable_and_the_get_started_page_has_some():
    pages = {page for page, _ in runnable_blocks()}
    assert {"get-started.md", "tutorials/seeds-and-cv.md", "tutorials/after-training.md"} <= pages


@pytest.mark.docs
def test_every_runnable_command_of_the_docs_runs_as_written(tmp_path):
    """The commands in the order the pages give them, in one folder, as a user would type them."""
    env = {**os.environ, "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1"}
    for page, commands in runnable_blocks():
        for command in commands:
            done = subprocess.run(made_tiny(command), cwd=tmp_path, env=env, capture_output=True, text=True)
            assert done.returncode == 0, f"{page}: {command}\n{done.stdout[-1500:]}\n{done.stderr[-1500:]}"
    outputs = tmp_path / "outputs"
    assert (outputs / "mammo_tiny_density/results_1/review/index.html").is_file()  # get-started.md
    assert (outputs / "density_experiments/results_k2_seed42/cv_summary.json").is_file()  # seeds-and-cv.md
    assert (outputs / "predictions/results_1/predictions_exam.csv").is_file()  # after-training.md
    assert list(outputs.glob("mammo_tiny_density/results_*/plots/lr_find.png"))  # hpo.md


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
