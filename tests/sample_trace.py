"""Which of mammo's files one sample passes through, measured on a real run.

:class:`SampleTrace` watches every Python call of a run (``sys.setprofile``) until the first write
of ``val_predictions.csv`` (an ``open`` audit event). A mammo function is on the sample's path
when it is handed the sample or hands it on, in any of the forms it takes on the way:

- its label-file row or a table holding it (a DataFrame, Series or object array with its
  accession number, image id or file in a cell);
- its image file (a ``str`` or ``Path``, alone or in a list);
- its pixels as the model sees them (an array or tensor with the cached image as one of its
  ``[H, W]`` slices: the preprocessed image, a batch holding it, in any dtype it is cast to);
- what was computed from any of these (the value a call on the path returns, and what any
  function, mammo's or a library's, returns when handed such a value: features, logits, outputs;
  and the arrays a call on the path hands to a mammo function: a thumbnail, a mask);
- ``self`` when the object holds its row or file in one of its attributes (a dataset's table).

Being written into a record (``split.csv``, an id inside summary.json or a manifest entry, a log
line) does not count: those are the run's reports of the sample, not its path.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import mammo

MAMMO = str(Path(mammo.__file__).parent) + "/"
NUMERIC = "biufc"


class SampleTrace:
    """The files (relative to ``mammo/``) and functions that handle one sample.

    Args:
        ids: the sample's accession number and image id (its row's keys).
        file: its DICOM file (absolute).
        pixels: its preprocessed image (the cache entry's ``[H, W]`` array).
        store: the run's cache folder: the files written there (its cache entry, a split memo)
            are the sample's own; any other written while a call on the path runs is a record
            of the sample (``split.csv``), and that call is the record's writer, not a stage.
    """

    def __init__(self, ids: set[str], file: Path, pixels: np.ndarray, store: Path) -> None:
        self.ids, self.file = ids, str(file)
        self.pixels = torch.from_numpy(pixels.astype(np.float32)).flatten()
        self.shape = tuple(pixels.shape)
        self.derived: dict[int, object] = {}  # id -> value (held: ids are never reused)
        self.handing: set = set()  # frames of calls handed the sample, until they return
        self.calls: list[list] = []  # [file, function, wrote a record instead]
        self.live: dict = {}  # frame -> its entry in calls, while the call runs
        self.store = Path(store)
        self.done = False

    # -- what holds the sample ------------------------------------------------------------
    def is_file(self, value) -> bool:
        return isinstance(value, (str, Path)) and str(value) == self.file

    def in_table(self, value) -> bool:
        if isinstance(value, pd.DataFrame):
            text = [c for c in value.columns if value[c].dtype.kind not in NUMERIC]
            return bool(text) and any(self.in_table(value[c]) for c in text)
        if isinstance(value, pd.Series):
            return value.dtype.kind not in NUMERIC and bool(value.map(self.is_key).any())
        if isinstance(value, np.ndarray) and value.dtype == object:
            return any(self.is_key(x) for x in value.ravel())
        return False

    def is_key(self, value) -> bool:
        return value in self.ids or self.is_file(value)

    def has_pixels(self, value) -> bool:
        if not isinstance(value, (np.ndarray, torch.Tensor)) or tuple(value.shape[-2:]) != self.shape:
            return False
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in NUMERIC:
                return False
            value = torch.from_numpy(np.ascontiguousarray(value))
        rows = value.detach().to("cpu", torch.float32).reshape(-1, self.pixels.numel())
        return bool((rows == self.pixels).all(dim=1).any())

    def holds(self, value, depth: int = 0, is_self: bool = False) -> bool:
        if id(value) in self.derived or self.is_file(value) or self.in_table(value):
            return True
        if self.has_pixels(value):
            return True
        if depth >= 2:
            return False
        if isinstance(value, (list, tuple)):
            return any(self.holds(x, depth + 1) for x in value)
        if isinstance(value, dict):
            return any(id(x) in self.derived or self.has_pixels(x) for x in value.values())
        if is_self and type(value).__module__.startswith("mammo.") and hasattr(value, "__dict__"):
            return any(self.is_file(x) or self.in_table(x) for x in vars(value).values())
        return False

    def mark_derived(self, value, depth: int = 0) -> bool:
        """Remember arrays and tensors in ``value`` (and the containers holding them)."""
        if isinstance(value, torch.Tensor) or (isinstance(value, np.ndarray) and value.dtype.kind in NUMERIC):
            self.derived[id(value)] = value
            return True
        if depth >= 2 or not isinstance(value, (list, tuple, dict)):
            return False
        found = [
            self.mark_derived(x, depth + 1) for x in (value.values() if isinstance(value, dict) else value)
        ]
        if any(found):
            self.derived[id(value)] = value
        return any(found)

    # -- the profile hook -----------------------------------------------------------------
    @staticmethod
    def arguments(frame) -> dict:
        code = frame.f_code
        count = code.co_argcount + code.co_kwonlyargcount + bool(code.co_flags & 4) + bool(code.co_flags & 8)
        values = frame.f_locals
        return {name: values[name] for name in code.co_varnames[:count] if name in values}

    def handed(self, frame) -> list[str]:
        return [
            name for name, value in self.arguments(frame).items() if self.holds(value, is_self=name == "self")
        ]

    def handed_computed(self, frame) -> bool:
        """A library call handed something computed from the sample (its tables are left to pandas)."""
        for value in self.arguments(frame).values():
            items = value if isinstance(value, (list, tuple)) else (value,)
            if any(id(x) in self.derived or self.has_pixels(x) for x in items):
                return True
        return False

    def passed_on(self, frame) -> list[str]:
        """The arrays a call on the path hands to a mammo function: made from the sample inside that
        call by library code the trace cannot see into (a thumbnail, a mask)."""
        if frame.f_back not in self.handing:
            return []
        return [
            f"{name}~"
            for name, value in self.arguments(frame).items()
            if isinstance(value, torch.Tensor)
            or (isinstance(value, np.ndarray) and value.dtype.kind in NUMERIC)
        ]

    def record(self, frame, how: str) -> None:
        self.calls.append([frame.f_code.co_filename[len(MAMMO) :], f"{frame.f_code.co_name}{how}", False])
        if how.startswith("("):  # recorded as it starts: a record it writes drops it (audit)
            self.live[frame] = len(self.calls) - 1

    def profile(self, frame, event, value) -> None:
        if self.done or event not in ("call", "return"):
            return
        ours = frame.f_code.co_filename.startswith(MAMMO)
        if event == "call":
            if ours and (names := self.handed(frame) or self.passed_on(frame)):
                self.record(frame, f"({', '.join(names)})")
                self.handing.add(frame)
            elif not ours and self.derived and self.handed_computed(frame):
                self.handing.add(frame)
            return
        self.live.pop(frame, None)
        if frame in self.handing:
            self.handing.discard(frame)
            self.mark_derived(value)
        elif ours and (self.holds(value) or self.handed(frame)):  # what it returns or filled
            self.record(frame, " ->")
            self.mark_derived(value)

    def audit(self, event: str, args) -> None:
        if event != "open" or self.done or isinstance(args[0], int):  # an fd: its file was opened by name
            return
        path = Path(str(args[0]))
        if "val_predictions.csv" in path.name:
            self.done = True  # its line is written: the path ends here
        elif writes(args) and not path.is_relative_to(self.store):
            frame = sys._getframe(1)  # a record of the sample (split.csv, ...): not its path
            while frame is not None and frame not in self.live:
                frame = frame.f_back
            if frame is not None:
                self.calls[self.live[frame]][2] = True

    def run(self, fn):
        """Call ``fn()`` under the trace (audit hooks stay installed; the trace then ignores them)."""
        sys.addaudithook(self.audit)
        sys.setprofile(self.profile)
        try:
            return fn()
        finally:
            sys.setprofile(None)
            self.done = True

    @property
    def functions(self) -> dict[str, set[str]]:
        """File -> the functions in it that handled the sample."""
        out: dict[str, set[str]] = {}
        for file, function, record in self.calls:
            if not record:
                out.setdefault(file, set()).add(function)
        return out

    @property
    def files(self) -> list[str]:
        return sorted(self.functions)


def writes(args) -> bool:
    """Whether an ``open`` audit event's ``(path, mode, flags)`` opens the file for writing."""
    _, mode, flags = args
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    return isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
