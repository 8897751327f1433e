"""Atomic file writes: a crash never leaves a half-written JSON or CSV behind."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success rename it into place, on error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return Path(path)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON (NaN/inf become null, as JSON has none)."""
    return atomic_write_text(path, json.dumps(_finite(data), indent=2, allow_nan=False) + "\n")


def write_csv(path: str | os.PathLike, frame, float_format: str | None = None) -> Path:
    """Atomically write a pandas DataFrame as CSV without its index."""
    return atomic_write_text(path, frame.to_csv(index=False, float_format=float_format))


def write_npy(path: str | os.PathLike, array) -> Path:
    """Atomically write a NumPy array as ``.npy``."""
    import numpy as np

    with atomic_open(path, "wb") as f:
        np.save(f, array)
    return Path(path)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
