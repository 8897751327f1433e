"""mammo: Hydra-configured PyTorch Lightning experiments for mammography breast-density classification.

Kept import-light on purpose: ``python -m mammo.train --help`` must not pull in torch or Lightning.
"""

__version__ = "0.1.0"

from pathlib import Path

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")
"""Hydra's config directory (absolute, so entries work both as ``python -m`` and when imported)."""
