"""mammo: Hydra-configured PyTorch Lightning experiments for mammography breast-density classification.

Kept import-light on purpose: ``python -m mammo.train --help`` must not pull in torch or Lightning.
"""

__version__ = "0.1.0"

from pathlib import Path

from mammo.core.targets import trusted_targets

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")
"""Hydra's config directory (absolute, so entries work both as ``python -m`` and when imported)."""

TRUSTED_TARGETS = trusted_targets(CONFIG_DIR)
"""What a config's ``_target_`` (and Hydra's logging config) may name: the exact classes and
functions that ``conf/`` names, plus ``MAMMO_TRUSTED_TARGETS`` (``mammo.core.targets``). Hydra 1.4 asks
each entry for this list (``hydra.main(execution_whitelist=...)``) before it lets a config run code."""
