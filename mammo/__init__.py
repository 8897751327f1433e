"""mammo: Hydra-configured PyTorch Lightning experiments for mammography breast-density classification.

Kept import-light on purpose: ``python -m mammo.train --help`` must not pull in torch or Lightning.
"""

__version__ = "0.1.0"
