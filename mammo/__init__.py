"""mammo: Hydra-configured PyTorch Lightning experiments for mammography breast-density classification.

Kept import-light on purpose: ``python -m mammo.train --help`` must not pull in torch or Lightning.
"""

__version__ = "0.1.0"

import os
from pathlib import Path

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")
"""Hydra's config directory (absolute, so entries work both as ``python -m`` and when imported)."""

TRUSTED_TARGETS = ["mammo.*", "hydra_plugins.*", "torch.*", "lightning.*", "optuna.*", "logging.*"] + [
    target for target in os.environ.get("MAMMO_TRUSTED_TARGETS", "").split(",") if target.strip()
]
"""The packages a config's ``_target_`` (and Hydra's logging config) may name: Hydra 1.4 asks each
entry for this list (``hydra.main(execution_whitelist=...)``) before it lets a config run code.
A researcher's own classes come in with ``MAMMO_TRUSTED_TARGETS=mylab.*`` (comma-separated)."""
