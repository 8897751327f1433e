"""What every public dataset reader shares: the table it returns, label-file reading, densities."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mammo.core.errors import DataError
from mammo.data.labels import DENSITY_CODES, normalize_density, read_csv_table

COLUMNS = ["image_path", "density", "PatientID", "AccessionNumber", "laterality", "view", "split", "csv_row"]


@dataclass
class LabelTable:
    """What a reader gives back (see module docstring)."""

    frame: pd.DataFrame
    excluded: list[dict] = field(default_factory=list)
    label_files: list[Path] = field(default_factory=list)


def read_table(path: Path, required: list[list[str]]) -> pd.DataFrame:
    """A label file as strings (blank cells stay ``""``), headers stripped; each entry of
    ``required`` lists the accepted spellings of one column, the first present is renamed to the
    first spelling."""
    path = Path(path)
    frame = read_csv_table(path, what="label file")
    missing = []
    for spellings in required:
        found = next((s for s in spellings if s in frame.columns), None)
        if found is None:
            missing.append(" / ".join(spellings))
        elif found != spellings[0]:
            frame = frame.rename(columns={found: spellings[0]})
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found: {', '.join(frame.columns)}")
    for column in frame.columns:
        frame[column] = frame[column].str.strip()
    frame["csv_row"] = range(2, len(frame) + 2)
    return frame


class Density:
    """Map one dataset's density vocabulary to 1-4; ``None`` with a reason for rows left out."""

    def __init__(self, path: Path, column: str, bad) -> None:
        self.path, self.column, self.bad = path, column, bad

    def label(self, raw: str, row: int, where: dict, excluded: list[dict], exclude=None) -> int | None:
        """The density of a row, or ``None`` (the row left out: recorded in ``excluded`` with
        ``where`` and the reason, unless it was a bad value, which ``bad`` handles)."""
        value, reason = self(raw, row, exclude)
        if value is None and reason:
            excluded.append({**where, "reason": reason})
        return value

    def __call__(self, raw: str, row: int, exclude: dict[str, str] | None = None) -> tuple[int | None, str]:
        text = normalize_density(raw)
        if text in ("", "NAN"):
            return None, f"no density ({self.column} empty)"
        if exclude and text in exclude:
            return None, exclude[text]
        if text in DENSITY_CODES:
            return DENSITY_CODES[text], ""
        self.bad(f"{self.path}: row {row}: unknown {self.column} {raw!r}", row=row, file=self.path.name)
        return None, ""


def laterality_code(value: str) -> str:
    """``L``/``R`` from L, R, LEFT, RIGHT (any case); anything else unchanged."""
    text = value.strip().upper()
    return {"LEFT": "L", "RIGHT": "R"}.get(text, text)


def finish(rows: list[dict], excluded: list[dict], files: list[Path]) -> LabelTable:
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return LabelTable(frame=frame, excluded=excluded, label_files=files)
