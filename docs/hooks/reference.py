"""mkdocs hook: reference pages generated at build time: the configuration from ``conf/`` where a
page says ``<!-- config-reference -->`` (mammo.core.config_keys), and the entries with their
arguments where it says ``<!-- entries-reference -->``."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MARK = "<!-- config-reference -->"


def on_page_markdown(markdown, page, config, files):
    if ENTRIES_MARK in markdown:
        return markdown.replace(ENTRIES_MARK, entries_markdown())
    if MARK not in markdown:
        return markdown
    sys.path.insert(0, str(REPO))
    from mammo.core.config_keys import reference_markdown
    from mammo.core.train_settings import TRAIN_RULES

    checks = {rule.key: rule.expected for rule in TRAIN_RULES}
    return markdown.replace(MARK, reference_markdown(REPO / "conf", checks))


ENTRIES_MARK = "<!-- entries-reference -->"
HYDRA_ENTRIES = {
    "train": "train.yaml",
    "evaluate": "evaluate.yaml",
    "predict": "predict.yaml",
    "export": "export.yaml",
    "embed": "embed.yaml",
    "baselines": "baselines.yaml",
    "report": "report.yaml",
    "app": "app.yaml",
}
ARGPARSE_ENTRIES = ("review", "compare", "runs", "cv")


def entries_markdown() -> str:
    """Each entry: its module docstring's first paragraph; a Hydra entry's settings are its config
    file's keys (the configuration reference), an argparse entry's ``--help`` as it prints it."""
    import ast
    import os
    import subprocess

    lines = []
    for name in [*HYDRA_ENTRIES, *ARGPARSE_ENTRIES]:
        source = (REPO / "mammo" / f"{name}.py").read_text()
        summary = (ast.get_docstring(ast.parse(source)) or "").split("\n\n")[0].replace("\n", " ")
        lines += [f"## `python -m mammo.{name}`", "", summary, ""]
        if name in HYDRA_ENTRIES:
            config = HYDRA_ENTRIES[name]
            lines += [
                f"Hydra settings: `conf/{config}` and the groups it composes, each key in the "
                f"[configuration reference](config.md) (`key=value` on the command line; `--help` "
                "prints the composed config).",
                "",
            ]
        else:
            env = {**os.environ, "COLUMNS": "100"}
            command = [sys.executable, "-m", f"mammo.{name}", "--help"]
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, check=True)
            shown = done.stdout
            lines += ["```text", shown.rstrip(), "```", ""]
    return "\n".join(lines)
