"""Preprocessed-image cache (``data.cache_mode=disk``): one small binary file per image.

Layout: ``<cache_dir>/preprocessed_<H>x<W>/<settings key>/<AccessionNumber>_<name>.<sha>.bin``
with a ``settings.json`` beside the entries. The settings key hashes every preprocessing
setting and the pipeline version; ``<sha>`` is the start of the DICOM file's SHA-256. A change
of either gives a new entry name, so a stale image can never be served.

An entry is a 32-byte header (magic, height, width, CRC-32 of the payload, dtype code, and how the
image was made: :class:`~mammo.data.preprocess.Facts`, the shares of the file the crop kept and of
the input the breast covers, the chest-wall and window sources) and the image as float16.
Writes go to a temporary file in the same folder and are renamed into place, so readers
(DataLoader workers, a second run sharing the cache) see a whole entry or none.
Each run checks every entry's size and header when it prepares the dataset (32 bytes per entry,
not the whole file: a 100,000-image cache is checked in seconds), and each entry's CRC the first
time a process reads it; later reads check size and header only, which keeps them at the speed of
a raw NumPy read (``scripts/bench_data.py``; a ``torch.load`` of a per-image ``.pt`` was several
times slower). An entry found bad either way is rebuilt from its DICOM.
"""

from __future__ import annotations

import json
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np

from mammo.artifacts.io import atomic_open
from mammo.core.errors import DataError
from mammo.data.breast import CHEST_WALL_SOURCES
from mammo.data.preprocess import WINDOW_SOURCES, Facts, Preprocessing

MAGIC = b"MAMMOC02"
# magic, height, width, crc32, dtype code (1 = float16), chest-wall source, window source (codes:
# 1 + the position in CHEST_WALL_SOURCES / WINDOW_SOURCES), a pad byte, crop share, input share
HEADER = struct.Struct("<8sIIIBBBxff")
DTYPE = np.float16
NOWAIT = getattr(os, "RWF_NOWAIT", 0)  # Linux >= 4.14: read only what the page cache holds


class CacheEntryError(Exception):
    """A cache entry is truncated or corrupt."""


def cache_folder(cache_dir: str | Path, preprocessing: Preprocessing) -> Path:
    height, width = preprocessing.shape
    return Path(cache_dir) / f"preprocessed_{height}x{width}" / preprocessing.key()


class DiskCache:
    """The entries for one preprocessing setting.

    Args:
        cache_dir: the experiment's cache folder (``outputs/<experiment>/cache``).
        preprocessing: the settings whose outputs are stored.
    """

    def __init__(self, cache_dir: str | Path, preprocessing: Preprocessing) -> None:
        self.folder = cache_folder(cache_dir, preprocessing)
        self.shape = preprocessing.shape
        self.nbytes = HEADER.size + int(np.prod(self.shape)) * np.dtype(DTYPE).itemsize
        self.folder.mkdir(parents=True, exist_ok=True)
        settings = self.folder / "settings.json"
        if not settings.exists():
            _atomic_write(settings, json.dumps(preprocessing.settings(), indent=2).encode())

    def entry(self, accession: str, image_id: str, sha256: str) -> Path:
        return self.folder / entry_name(accession, image_id, sha256)

    def read(self, path: Path, verify: bool = False) -> np.ndarray:
        """The cached image; raises ``FileNotFoundError`` or :class:`CacheEntryError`."""
        out = np.empty(self.shape, dtype=DTYPE)
        self.read_into(path, out, verify)
        return out

    def open_entries(self, paths: list[Path]) -> list[int | None]:
        """Descriptors for entries, ``None`` where opening fails (then :meth:`read_into` raises
        and the entry is rebuilt). The caller closes them."""
        fds: list[int | None] = []
        for path in paths:
            try:
                fds.append(os.open(path, os.O_RDONLY))
            except OSError:
                fds.append(None)
        return fds

    @staticmethod
    def advise(fds: list[int | None]) -> None:
        """``posix_fadvise(WILLNEED)`` each entry: the kernel reads them all in the background, so
        a batch from a cold cache is read with the disk's queue full rather than one file at a time
        (measured: 1.5x images/s from the disk). It costs ~8 us per file already in the page cache,
        which is why :class:`~mammo.data.dataset.ImageSource` calls it only after a miss."""
        if hasattr(os, "posix_fadvise"):
            for fd in fds:
                if fd is not None:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)

    def read_into(
        self, path: Path, out: np.ndarray, verify: bool = False, fd: int | None = None, nowait: bool = False
    ) -> bool:
        """Read an entry straight into ``out`` (e.g. a slot of a batch tensor): one ``preadv`` into
        the header and the caller's buffer, one copy from the page cache to its final place.

        With ``nowait`` it reads only what is already in the page cache (``RWF_NOWAIT``) and
        returns ``False``, having checked nothing, where the entry is not all there. A byte past
        the expected size is asked for too, so a file of the wrong size shows without an ``fstat``.
        ``fd`` (from :meth:`open_entries`) stays open; without one the path is opened and closed.
        """
        header, extra = bytearray(HEADER.size), bytearray(1)
        own = fd is None
        fd = os.open(path, os.O_RDONLY) if own else fd
        try:
            got = _preadv(fd, [header, memoryview(out).cast("B"), extra], nowait)
        finally:
            if own:
                os.close(fd)
        if nowait and (got is None or got < self.nbytes):
            return False
        if got != self.nbytes:
            size = os.path.getsize(path)
            raise CacheEntryError(f"{path.name}: {size} bytes, expected {self.nbytes} (truncated)")
        magic, height, width, crc, dtype, *_ = HEADER.unpack(header)
        if magic != MAGIC or (height, width) != self.shape or dtype != 1:
            raise CacheEntryError(f"{path.name}: bad header")
        if verify and zlib.crc32(memoryview(out).cast("B")) != crc:
            raise CacheEntryError(f"{path.name}: checksum mismatch (corrupt)")
        return True

    def check(self, path: Path) -> Facts:
        """Size and header of an entry, without reading its image; raises like :meth:`read`.
        Returns how the image was made."""
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            header = f.read(HEADER.size)
        if size != self.nbytes:
            raise CacheEntryError(f"{path.name}: {size} bytes, expected {self.nbytes} (truncated)")
        magic, height, width, _, dtype, *facts = HEADER.unpack(header)
        made = header_facts(*facts)
        if magic != MAGIC or (height, width) != self.shape or dtype != 1 or made is None:
            raise CacheEntryError(f"{path.name}: bad header")
        return made

    def write(self, path: Path, image: np.ndarray, facts: Facts) -> None:
        payload = np.ascontiguousarray(image, dtype=DTYPE)
        if payload.shape != self.shape:
            raise ValueError(f"cache entry shape {payload.shape} != {self.shape}")
        data = payload.tobytes()
        chest_wall = CHEST_WALL_SOURCES.index(facts.chest_wall_from) + 1
        window = WINDOW_SOURCES.index(facts.window) + 1
        header = HEADER.pack(
            MAGIC, *self.shape, zlib.crc32(data), 1, chest_wall, window, facts.crop_share, facts.input_share
        )
        _atomic_write(path, header + data)


def header_facts(chest_wall: int, window: int, crop_share: float, input_share: float) -> Facts | None:
    """The :class:`Facts` an entry's header holds, ``None`` where a code is out of range."""
    if not (0 < chest_wall <= len(CHEST_WALL_SOURCES) and 0 < window <= len(WINDOW_SOURCES)):
        return None
    return Facts(crop_share, input_share, CHEST_WALL_SOURCES[chest_wall - 1], WINDOW_SOURCES[window - 1])


def entry_name(accession: str, image_id: str, sha256: str) -> str:
    """An entry's file name: readable (accession, image name) and keyed by content."""
    return f"{safe_name(f'{accession}_{Path(image_id).name}')}.{sha256[:16]}.bin"


def stored_facts(path: Path) -> Facts | None:
    """How an entry's image was made, from its header alone; ``None`` for a missing or foreign
    entry."""
    try:
        with open(path, "rb") as f:
            magic, _, _, _, _, *facts = HEADER.unpack(f.read(HEADER.size))
    except (OSError, struct.error):
        return None
    return header_facts(*facts) if magic == MAGIC else None


def available_memory() -> int | None:
    """Bytes of RAM the system can give without swapping (``MemAvailable``), ``None`` if unknown."""
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def check_memory_cache_fits(images: int, shape: tuple[int, int], available: int | None) -> None:
    """``data.cache_mode=memory`` holds every preprocessed image (float16) in RAM: refuse, naming
    the sizes, when that would take more than 80 % of the available memory."""
    height, width = shape
    needed = images * height * width * 2
    if available is not None and needed > 0.8 * available:
        raise DataError(
            f"data.cache_mode=memory: {images} images at {height}x{width} need {needed / 2**30:.1f} GiB "
            f"of RAM, {available / 2**30:.1f} GiB is available; use data.cache_mode=disk"
        )


def _preadv(fd: int, buffers: list, nowait: bool) -> int | None:
    """Bytes read from offset 0; ``None`` when ``nowait`` and the kernel would have to wait for
    the disk (or cannot read without waiting on this file system)."""
    if not nowait:
        return os.preadv(fd, buffers, 0)
    try:
        return os.preadv(fd, buffers, 0, NOWAIT)
    except OSError:  # BlockingIOError (EAGAIN), or EOPNOTSUPP where the file system has no NOWAIT
        return None


def _atomic_write(path: Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def safe_name(name: str) -> str:
    """``name`` as a file name: runs of other characters than letters, digits, ``._-`` become ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "image"
