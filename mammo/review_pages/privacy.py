"""A review page that can leave the hospital: ``mammo.review --deidentify`` (``review=deidentified``).

Patient, exam and image ids become pseudonyms (``P-``, ``E-``, ``I-`` and ten hex digits): an
HMAC-SHA256 of the id under a key that never goes on the page, so the same id gets the same
pseudonym in every page built on this machine, and no page can be turned back into ids (guessing
an id means knowing the key). The key is ``MAMMO_PSEUDONYM_KEY`` when set (a lab that shares pages
from several machines sets the same one), else a random key made once in the user's cache folder
(``~/.cache/mammo/pseudonym.key``, readable by the user only). No file path is shown, and the card
files are named by pseudonym; skipped and excluded rows keep their reason without the file.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import replace
from pathlib import Path

from mammo.data.settings import refusal_kind
from mammo.review_pages.sources import ReviewSource

PREFIXES = {"PatientID": "P", "AccessionNumber": "E", "image_id": "I"}
"""Each id column and its pseudonyms' prefix."""


def pseudonym_key() -> bytes:
    """``MAMMO_PSEUDONYM_KEY``, else this user's key file (made at the first de-identified page)."""
    given = os.environ.get("MAMMO_PSEUDONYM_KEY")
    if given:
        return given.encode()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mammo"
    path = cache / "pseudonym.key"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def pseudonym(column: str, value, key: bytes) -> str:
    """The pseudonym of one id (empty stays empty).

    >>> pseudonym("PatientID", "PAT001", b"k"), pseudonym("PatientID", "", b"k")
    ('P-c9fccd7ff8', '')
    """
    text = "" if value is None else str(value)
    if not text:
        return ""
    digest = hmac.new(key, f"{column}:{text}".encode("utf-8", "surrogateescape"), hashlib.sha256)
    return f"{PREFIXES[column]}-{digest.hexdigest()[:10]}"


def deidentified(source: ReviewSource) -> ReviewSource:
    """``source`` with every id replaced by its pseudonym, in the predictions and the manifest;
    the real keys stay only where the review reads its files (``source.file_keys``)."""
    key = pseudonym_key()
    predictions = source.predictions.copy()
    real = list(zip(predictions["AccessionNumber"], predictions["image_id"]))
    for column in PREFIXES:
        if column in predictions:
            predictions[column] = [pseudonym(column, v, key) for v in predictions[column]]
    paths = source.image_paths()
    files = []
    for entry in source.manifest.get("files", []):
        entry = {**entry, **{c: pseudonym(c, entry[c], key) for c in PREFIXES if c in entry}}
        entry.pop("path", None)
        files.append(entry)
    left = {
        kind: [{"reason": refusal_kind(r.get("reason", ""))} for r in source.manifest.get(kind) or []]
        for kind in ("excluded", "skipped")
    }
    manifest = {**source.manifest, "files": files, **left}
    real_paths = {pseudonym("image_id", i, key): p for i, p in paths.items()}
    return replace(
        source,
        predictions=predictions,
        manifest=manifest,
        deidentified=True,
        file_keys=dict(zip(predictions["image_id"], real)),
        real_paths=real_paths,
    )
