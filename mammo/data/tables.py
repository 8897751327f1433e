"""The one reader of the tables users hand in (label CSVs, public datasets' label files, split CSVs).

Cells are read as strings (blank cells stay ``""``) with stripped headers; the separator (comma,
semicolon, tab) is sniffed. Text must be UTF-8, with or without the byte-order mark that Excel's
"CSV UTF-8" writes; any other encoding gets one line naming the file and what to save it as.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "labels.csv"
>>> _ = path.write_bytes("\\ufeffAccessionNumber;Classification\\nA1;B\\n".encode("utf-8"))
>>> read_csv_table(path).columns.tolist()
['AccessionNumber', 'Classification']
"""

from __future__ import annotations

import codecs
import csv as csv_module
import io
from pathlib import Path

import pandas as pd

from mammo.core.errors import DataError

SAVE_AS = "save it from Excel as 'CSV UTF-8 (Comma delimited)'"


def read_csv_table(path: str | Path, key: str = "data.csv", what: str = "label CSV") -> pd.DataFrame:
    """The table in ``path`` as strings.

    Args:
        key: the setting that named the file (for the not-found message).
        what: what the file is (``label CSV``, ``split CSV``, ...).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{key}: {what} not found: {path}")
    text = decode_text(path)
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, sep=None, engine="python")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, csv_module.Error) as exc:
        raise DataError(f"{path}: cannot parse CSV ({exc})") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def decode_text(path: Path) -> str:
    """The file's text: UTF-8 (a leading byte-order mark dropped), or a one-line error."""
    raw = path.read_bytes()
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataError(f"{path}: the file is UTF-16 text (Excel's 'Unicode Text'); {SAVE_AS}")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line}: byte 0x{raw[exc.start]:02x} is not UTF-8 text (an Excel 'CSV' in the "
            f"computer's own encoding?); {SAVE_AS}"
        ) from None


ON_BAD_FILE = ("error", "skip")


class BadInput:
    """Raise a :class:`DataError` for a bad row/file, or record it when skipping."""

    def __init__(self, on_bad_file: str) -> None:
        if on_bad_file not in ON_BAD_FILE:
            raise DataError(f"data.on_bad_file={on_bad_file!r}: expected one of {', '.join(ON_BAD_FILE)}")
        self.skip = on_bad_file == "skip"
        self.records: list[dict] = []

    def __call__(self, message: str, **where) -> None:
        if not self.skip:
            raise DataError(message)
        self.records.append({**where, "reason": message})
