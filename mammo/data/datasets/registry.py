"""The public datasets by name: ``data.dataset=<name>`` selects the reader registered here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mammo.core.errors import DataError
from mammo.data.datasets.common import LabelTable

READERS: dict[str, Callable[..., LabelTable]] = {}
"""``name -> reader(files, dicom_root, bad, **options)``; filled as the dataset modules import."""


def register(name: str):
    """Decorator: register ``reader`` as dataset ``name``."""

    def add(reader: Callable[..., LabelTable]) -> Callable[..., LabelTable]:
        READERS[name] = reader
        return reader

    return add


def read_public(name: str, files, dicom_root: Path, bad, **options) -> LabelTable:
    """Read dataset ``name``'s label files (one path or a list)."""
    if name not in READERS:
        raise DataError(f"data.dataset={name!r}: expected one of {', '.join(sorted(READERS))}")
    files = [Path(f) for f in ([files] if isinstance(files, str | Path) else files)]
    return READERS[name](files, Path(dicom_root), bad, **options)
