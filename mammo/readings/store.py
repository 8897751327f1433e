"""``readings/<reader>.csv``: one file per reader, one line per reading, appended and flushed to
disk before the next image shows.

Each reading is one ``write`` to a file opened for appending, under an exclusive lock, followed by
``fsync``: a page reload, a server restart or a kill loses no confirmed reading, and two readers
never write into one file. A line cut short by a kill mid-write (no newline at its end) is not a
reading and is left out when the file is read.
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
import re
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from mammo.core.errors import DataError

COLUMNS = (
    "time",
    "reader",
    "image_id",
    "AccessionNumber",
    "PatientID",
    "reading",
    "note",
    "blind",
    "label",
    "predicted_label",
    "confidence",
)
"""The columns of a readings file. ``reading`` is a density class (1-4) or ``cannot_tell``;
``label``, ``predicted_label`` and ``confidence`` are what the queue held for the image (shown to
the reader unless ``blind``)."""
CANNOT_TELL = "cannot_tell"
READER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def reader_file(folder: Path, reader: str) -> Path:
    """``<folder>/readings/<reader>.csv``; a reader's name is letters, digits, ``_ . -`` (at most
    64), so that it names one file inside ``readings/`` and nothing else."""
    if not READER_NAME.match(reader or ""):
        raise DataError(
            f"reader {reader!r}: a name of letters, digits, '_', '.' or '-' (at most 64, starting "
            "with a letter or digit)"
        )
    return Path(folder) / "readings" / f"{reader}.csv"


def append_reading(folder: Path, reader: str, record: dict) -> dict:
    """Append one reading to ``readings/<reader>.csv`` (header first in a new file) and ``fsync``
    it before returning the record as written (with its ``time`` and ``reader``)."""
    path = reader_file(folder, reader)
    row = {**{c: "" for c in COLUMNS}, **record, "reader": reader}
    row["time"] = row["time"] or datetime.now(timezone.utc).isoformat(timespec="seconds")
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise DataError(f"reading: unknown field(s) {sorted(unknown)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
        if os.fstat(fd).st_size == 0:
            writer.writeheader()
        writer.writerow(row)
        os.write(fd, text.getvalue().encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock
    return row


def read_reader_file(path: Path) -> pd.DataFrame:
    """The readings in one reader's file; a last line without its newline (a write cut short)
    is left out."""
    data = Path(path).read_bytes()
    if not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
    if not data:
        return pd.DataFrame(columns=list(COLUMNS))
    frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    missing = [c for c in ("reader", "image_id", "reading") if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: not a readings file (no column {missing[0]!r})")
    bad = ~frame["reading"].isin([*map(str, range(1, 6)), CANNOT_TELL])
    if bad.any():
        row = int(bad.to_numpy().argmax()) + 2
        raise DataError(
            f"{path}: row {row}: reading {frame['reading'][bad].iloc[0]!r} is not 1-4 or {CANNOT_TELL}"
        )
    return frame


def readings_files(sources) -> list[Path]:
    """The readings files ``sources`` name: folders holding ``readings/*.csv``, ``readings``
    folders, or single CSV files; one line for a source that is none of these."""
    files: list[Path] = []
    for source in [sources] if isinstance(sources, (str, Path)) else sources:
        source = Path(source)
        if source.is_file():
            files.append(source)
        elif (source / "readings").is_dir():
            files.extend(sorted((source / "readings").glob("*.csv")))
        elif (source / "summary.json").is_file():
            raise DataError(
                f"data.readings: {source} has no readings/ folder: nobody has read its images yet"
            )
        elif source.is_dir():
            files.extend(sorted(source.glob("*.csv")))
        else:
            raise DataError(f"data.readings: {source} is neither a readings file nor a folder of them")
    return files


def read_readings(sources) -> pd.DataFrame:
    """Every reading in the files ``sources`` name (:func:`readings_files`), each reader's latest
    reading of an image only."""
    frames = [frame for frame in map(read_reader_file, readings_files(sources)) if len(frame)]
    if not frames:
        return pd.DataFrame(columns=list(COLUMNS))
    readings = pd.concat(frames, ignore_index=True)
    return readings.drop_duplicates(["reader", "image_id"], keep="last").reset_index(drop=True)
