"""Atomic file writes: a crash never leaves a half-written JSON or CSV behind."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from mammo.core.errors import OutputError


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success rename it into place, on error delete it.

    The file at ``path`` is either the previous one or the new one, never a part: a full disk
    keeps the previous version (an :class:`~mammo.core.errors.OutputError` naming ``path``).
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        error = as_output_error(exc, path, exact=True)  # name the file, not its temporary twin
        if error is exc:
            raise
        raise error from None


DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EFBIG)
"""``OSError`` numbers that mean the output cannot be written where it goes."""


def as_output_error(exc: BaseException, where: str | os.PathLike, exact: bool = False) -> BaseException:
    """``exc`` as an :class:`~mammo.core.errors.OutputError` (one line naming the path) when it is a
    full, read-only or forbidden disk, else ``exc`` itself. The line names ``where`` if ``exact``
    or the error names no file, else the file it names (e.g. a logger's file inside a run dir)."""
    if not (isinstance(exc, OSError) and exc.errno in DISK_ERRORS):
        return exc
    path = where if exact or exc.filename is None else exc.filename
    return OutputError(f"{path}: cannot write: {exc.strerror}")


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
