"""How the docs' runnable blocks are run: as a user types them, made tiny by a fixed substitution.

``tests/test_docs.py`` runs each ``<!-- runnable -->`` block with bash, in a folder holding what
the pages assume (:data:`GIVEN`), with ``python`` on the PATH being this file, which turns the
command into its tiny form (:func:`made_tiny`) and runs it with the suite's Python. The block's
text first has its folders renamed (:data:`RENAMED`). Nothing else of a command changes.
"""

from __future__ import annotations

import os
import sys

TINY_TRAINING = {
    "img_size": "64",
    "epochs": "1",
    "warmup_epochs": "0",
    "batch_size": "16",
    "data.num_workers": "0",
}
"""What makes a documented training command tiny: these settings replace the command's own."""
TINY_MODEL = {"model": "tiny", "pretrained": "false"}
"""Any model becomes timm's test-sized EfficientNet: ``model=tiny``, or for a model the command
names (``model=multiview``) its backbone (:data:`TINY_BACKBONE`)."""
TINY_BACKBONE = {"model.backbone": "test_efficientnet", "pretrained": "false"}
TINY_SEARCH = {"hydra.sweeper.n_trials": "2"}
"""An Optuna search (``hpo=``) runs two trials."""
QUIET = {"logger": "none"}
"""Where a command names no ``logger``, none (the suite tracks nothing)."""
SMALL_DEMO = {"data.demo.n_patients": "40", "data.demo.height": "160", "data.demo.width": "128"}
"""Where a command trains or embeds the demo (no ``data=``), a 40-patient demo set."""
TINY_EMBEDDING = {"img_size": "64", "data.num_workers": "0"}
"""``mammo.embed`` at 64 px."""
RENAMED = {
    "mammo_efficientnetb0_density": "mammo_tiny_density",
    "v2-p60-s0-320x256": "v2-p40-s0-160x128",
    "embed.backbone=efficientnet_b0": "embed.backbone=test_efficientnet",
    "=/data/dicoms": "=archive",
    "=/data/": "=data/",
    "=/fast/": "=fast/",
}
"""The folders those settings name differently, and a user's absolute data folders, which the
suite keeps in its own folder: ``/data/dicoms`` is ``archive/`` (beside ``labels.csv``),
``/data/rsna`` is ``data/rsna``."""


def replaced(words: list[str], settings: dict[str, str]) -> list[str]:
    """``words`` with ``settings`` in place of the command's own values of those keys."""
    kept = [w for w in words if w.split("=")[0] not in settings]
    return kept + [f"{k}={v}" for k, v in settings.items()]


def given_keys(words: list[str]) -> set[str]:
    return {w.split("=")[0] for w in words if "=" in w}


def tiny_image_size(words: list[str]) -> dict[str, str]:
    """64 px, or 64×32 where the command asks for a non-square input (``img_size=[1024,512]``)."""
    tall = any(w.startswith("img_size=[") for w in words)
    return {"img_size": "[64,32]" if tall else "64"}


def made_tiny(words: list[str]) -> list[str]:
    """``python -m <entry> ...`` as the suite runs it (this Python, the substitutions above)."""
    assert words[:1] == ["-m"], f"a runnable block runs python -m <entry>: {words}"
    entry, args = words[1], words[2:]
    given = given_keys(args)
    if entry == "mammo.train" and "--help" not in args:
        model = TINY_BACKBONE if "model" in given and "model=tiny" not in args else TINY_MODEL
        settings = {**TINY_TRAINING, **tiny_image_size(args), **model}
        settings |= TINY_SEARCH if "hpo" in given else {}
        settings |= {} if "logger" in given else QUIET
        settings |= {} if "data" in given else SMALL_DEMO
        args = replaced(args, settings)
    elif entry == "mammo.embed":
        args = replaced(args, {**TINY_EMBEDDING, **({} if "data" in given else SMALL_DEMO)})
    return [sys.executable, "-m", entry, *args]


if __name__ == "__main__":  # the ``python`` of a runnable block
    command = made_tiny(sys.argv[1:])
    os.execv(command[0], command)
