"""A dropped upload as files in a folder of its own: single files copied, zips unpacked (safely:
no member outside the folder, no more than the upload limit unpacked). A bad upload is one line
(:class:`~mammo.core.errors.DataError`) and leaves nothing behind."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path, PurePosixPath

from mammo.core.errors import DataError


def receive_upload(paths: list, folder: Path, max_bytes: int) -> list[Path]:
    """Copy the uploaded ``paths`` into ``folder`` (created; removed again when the upload is
    refused) and return the files to predict, sorted. Refused in one line: nothing uploaded,
    empty files only, more than ``max_bytes`` in all (unpacked zips counted), a damaged zip or a
    zip member that would land outside ``folder``."""
    files = [Path(p) for p in paths or [] if p]
    if not files:
        raise DataError("upload: no file was dropped")
    total = sum(f.stat().st_size for f in files)
    if total > max_bytes:
        raise DataError(f"upload: {mb(total)} is over the app's limit of {mb(max_bytes)} (app.max_upload_mb)")
    folder.mkdir(parents=True, exist_ok=False)
    try:
        received = []
        for number, path in enumerate(files):
            target = folder / f"{number:03d}"
            target.mkdir()
            if zipfile.is_zipfile(path):
                received += unpack(path, target, max_bytes)
            else:
                received.append(Path(shutil.copy2(path, target / path.name)))
        received = [f for f in received if f.stat().st_size > 0]
        if not received:
            raise DataError(f"upload: {', '.join(f.name for f in files)}: empty (no file with any content)")
        return sorted(received)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def unpack(path: Path, target: Path, max_bytes: int) -> list[Path]:
    """A zip's files under ``target``; refused when a member's name leaves ``target`` or the
    unpacked size passes ``max_bytes``."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            size = sum(m.file_size for m in members)
            if size > max_bytes:
                raise DataError(
                    f"upload: {path.name} unpacks to {mb(size)}, over the limit of {mb(max_bytes)}"
                )
            out = []
            for member in members:
                name = PurePosixPath(member.filename)
                if name.is_absolute() or ".." in name.parts:
                    raise DataError(
                        f"upload: {path.name}: member {member.filename!r} would land outside the upload"
                    )
                if name.name.startswith(".") or "__MACOSX" in name.parts:
                    continue
                destination = target.joinpath(*name.parts)
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, open(destination, "wb") as sink:
                    shutil.copyfileobj(source, sink)
                out.append(destination)
            return out
    except zipfile.BadZipFile as exc:
        raise DataError(f"upload: {path.name}: a damaged zip ({exc})") from exc


def mb(size: int) -> str:
    """A size in MB for a person.

    >>> mb(3 * 1024**2), mb(2 * 1024**3)
    ('3.0 MB', '2048.0 MB')
    """
    return f"{size / 1024**2:.1f} MB"
