"""BI-RADS density codes: 1-4 or A-D (and 5, an incomplete exam, where a dataset has it)."""

from __future__ import annotations

DENSITY_CODES = {"1": 1, "2": 2, "3": 3, "4": 4, "A": 1, "B": 2, "C": 3, "D": 4}


def normalize_density(raw) -> str:
    """A label cell as a code: upper case, ``DENSITY`` prefix and a float's ``.0`` dropped.

    >>> normalize_density(" density b"), normalize_density(3.0), normalize_density("")
    ('B', '3', '')
    """
    text = str(raw).strip().upper().removeprefix("DENSITY").strip()
    return text[:-2] if text.endswith(".0") else text


def parse_density(value, include_class_5: bool = False) -> int | None:
    """BI-RADS density code -> 1..4 (or 5); ``None`` for an excluded class 5; ``ValueError`` otherwise.

    >>> parse_density("B"), parse_density(" 3 "), parse_density(4.0), parse_density("5")
    (2, 3, 4, None)
    """
    text = normalize_density(value)
    if text == "5":
        return 5 if include_class_5 else None
    if text not in DENSITY_CODES:
        raise ValueError(text)
    return DENSITY_CODES[text]
