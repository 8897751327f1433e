"""Cache and batch: preprocessed images stored once, then read back a batch at a time.

**The disk cache** (``data.cache_mode=disk``) is packed: the images of one preprocessing setting in
append-only shards, ``<cache_dir>/preprocessed_<H>x<W>/<settings key>/shard-<host>-<pid>-<id>.pack``,
one per writing process (runs and workers sharing a cache never write the same file), each with an
index ``.idx`` of 36-byte records (key digest, offset, sequence number, the record's own CRC). A
key, ``<AccessionNumber>_<name>.<sha>``, carries the DICOM's content hash and the folder hashes
every preprocessing setting, so nothing stale is served. An entry (a 32-byte header: magic, shape,
CRC-32 of the image, dtype and how it was made, :class:`~mammo.data.images.Facts`; then the image
as float16) is written whole before its record, so a reader finds whole entries only: a crash
leaves bytes no record names. A run checks every entry's size and header at start-up (32 bytes
each, from shards opened once) and each entry's CRC at its first read in a process; a bad entry is
rebuilt from its DICOM (appended; the newest record of a key wins). Reads: one ``preadv`` per image
from shards that stay open, a batch's reads shared among ``data.num_workers`` threads (each copies
from the page cache at a core's speed), and from a cold cache the next batch's reads started while
this one is read (:class:`~mammo.data.order.LookaheadBatches`). ``rm -rf outputs/*/cache`` is always
safe (a running process keeps reading the shards it has open). A per-file cache of an older mammo
(``<key>.bin``) is moved into the pack, each entry checked to its CRC first.

**Image sources and batches.** Where each image comes from (memory cache, disk cache or the DICOM
file), the one-pass cache filler, and the batch-reading Dataset the loaders use. Images are
``[1, H, W]`` tensors in [0, 1] (float16 as stored); training batches are augmented in the training
process (:class:`BatchAugmentation`, float32 after it), and the model normalises them. Loader
workers only read and preprocess: they draw no random numbers, so results do not depend on how many
there are.

**Batch memory** is recycled once nobody holds it (:class:`BatchBuffers`). A fresh array per batch
made the kernel find and zero new pages whenever glibc had given the last ones back: 40 % of a
cached epoch's speed at 512 px (``scripts/bench_cache.py``). ``torch.from_numpy`` keeps its array
alive while any tensor or view of it exists, so an array only the pool references is free.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import re
import socket
import struct
import sys
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from mammo.artifacts.io import atomic_open
from mammo.core.errors import DataError
from mammo.data.images import (
    CHEST_WALL_SOURCES,
    WINDOW_SOURCES,
    Facts,
    Preprocessing,
    report_nearly_whole_crops,
)
from mammo.data.settings import available_memory, check_memory_cache_fits

# -- batch memory -------------------------------------------------------------------------------------
_FREE = 2  # the pool's list entry + getrefcount's own argument


class BatchBuffers:
    """Up to ``keep`` arrays per shape, each reused when no one else references it.

    Args:
        keep: how many arrays of one shape to hold on to (a training loop holds one or two
            batches; the rest are allocated as usual and freed when dropped).
        pinned: page-locked memory (on a CUDA machine), which the GPU copies from directly. Its
            copy returns before it is done, so the sender sets :attr:`fence` (a CUDA event after
            it, ``DensityDataModule.transfer_batch_to_device``), which :meth:`get` waits for.
    """

    def __init__(self, keep: int = 4, pinned: bool = False) -> None:
        self.keep, self.pinned = keep, pinned
        self.pool: dict[tuple, list[np.ndarray]] = {}
        self.fence = None  # the last copy out of this memory, where it may not be done yet

    def get(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        """An array of ``shape`` and ``dtype`` that nothing else references (contents undefined)."""
        if self.fence is not None:
            self.fence.synchronize()
            self.fence = None
        key = (tuple(shape), np.dtype(dtype).str)
        arrays = self.pool.setdefault(key, [])
        for k in range(len(arrays)):
            if sys.getrefcount(arrays[k]) <= _FREE:
                return arrays[k]
        array = self._new(shape, np.dtype(dtype))
        if len(arrays) < self.keep:
            arrays.append(array)
        return array

    def _new(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        if not self.pinned:
            return np.empty(shape, dtype)
        size = int(np.prod(shape)) * dtype.itemsize
        return torch.empty(size, dtype=torch.uint8, pin_memory=True).numpy().view(dtype).reshape(shape)

    def __getstate__(self) -> dict:  # a loader worker starts with an empty pool of its own
        return {"keep": self.keep, "pinned": False, "pool": {}, "fence": None}


# -- the disk cache -----------------------------------------------------------------------------------
MAGIC = b"MAMMOC02"
# magic, height, width, crc32, dtype code (1 = float16), chest-wall source, window source (codes:
# 1 + the position in CHEST_WALL_SOURCES / WINDOW_SOURCES), a pad byte, crop share, input share
HEADER = struct.Struct("<8sIIIBBBxff")
HEADER_START = struct.Struct("<8sIIIB")  # what every read checks: magic, shape, CRC, dtype
DTYPE = np.float16
NOWAIT = getattr(os, "RWF_NOWAIT", 0)  # Linux >= 4.14: read only what the page cache holds
COLD_BATCHES = 4  # after a read waited for the disk, the next batch is started early this long
READ_PER_THREAD = 1 << 20  # a reading thread's least share: small images are read by one thread


class CacheEntryError(Exception):
    """A cache entry is truncated or corrupt."""


def cache_folder(cache_dir: str | Path, preprocessing: Preprocessing) -> Path:
    height, width = preprocessing.shape
    return Path(cache_dir) / f"preprocessed_{height}x{width}" / preprocessing.key()


class DiskCache:
    """The packed entries for one preprocessing setting.

    Args:
        cache_dir: the experiment's cache folder (``outputs/<experiment>/cache``).
        preprocessing: the settings whose outputs are stored.

    An entry is known by its key (:func:`entry_name`: readable, and keyed by the DICOM's content);
    where it lies, by the folder's index files, read once and then as they grow.
    """

    def __init__(self, cache_dir: str | Path, preprocessing: Preprocessing, threads: int = 1) -> None:
        self.folder = cache_folder(cache_dir, preprocessing)
        self.threads = max(1, int(threads))  # that read a batch's entries at once (read_entries)
        self.pool: tuple[int, ThreadPoolExecutor] | None = None  # (the pid that started them, threads)
        self.batches, self.last_miss = 0, -COLD_BATCHES - 1  # batches read; the last that missed
        self.shape = preprocessing.shape
        self.nbytes = HEADER.size + int(np.prod(self.shape)) * np.dtype(DTYPE).itemsize
        self.settings = json.dumps(preprocessing.settings(), indent=2).encode()
        self.index = PackIndex(self.folder)
        self.writer: ShardWriter | None = None
        self._publish_settings()
        self.has_old_entries = any(self.folder.glob("*.bin"))  # an older mammo's per-file cache

    def _publish_settings(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        settings = self.folder / "settings.json"
        if not settings.exists():
            _atomic_write(settings, self.settings)

    def __getstate__(self) -> dict:  # a spawned loader worker opens files of its own
        index = PackIndex(self.folder, self.index.entries)
        return {**self.__dict__, "index": index, "writer": None, "pool": None}

    def entry(self, accession: str, image_id: str, sha256: str) -> str:
        return entry_name(accession, image_id, sha256)

    def read(self, key: str, verify: bool = False) -> np.ndarray:
        """The cached image; raises ``FileNotFoundError`` or :class:`CacheEntryError`."""
        out = np.empty(self.shape, dtype=DTYPE)
        self.read_into(key, out, verify)
        return out

    def read_entries(
        self, keys: list[str], out: np.ndarray, verified: set, after: list[str] = ()
    ) -> dict[int, Exception]:
        """Entries ``keys`` into the rows of ``out`` (``[B, H, W]`` float16, C-contiguous: a batch),
        one ``preadv`` each into a header and its row, in shard order, the batch cut into runs that
        :attr:`threads` threads (this one among them) read at once. Reads take what the page cache
        holds without waiting (``RWF_NOWAIT``); at a run's first miss, the rest of its reads are
        started at once (:meth:`advise`), and so are the next batch's (``after``), then and for
        :data:`COLD_BATCHES` batches more, so that the disk works on the next batch meanwhile.

        An entry whose key is not in ``verified`` has its CRC checked and is added to it. Returns
        the rows not filled, with why (``FileNotFoundError``, :class:`CacheEntryError`).
        """
        where = [self.index.locate(key) for key in keys]
        found = [k for k, at in enumerate(where) if at is not None]
        missing = (k for k, at in enumerate(where) if at is None)
        failed: dict[int, Exception] = {k: FileNotFoundError(f"{keys[k]}: not in the cache") for k in missing}
        batch = BatchRead(keys, where, memoryview(out).cast("B"), verified)
        first, *rest = self._parts(sorted(found, key=where.__getitem__))
        self.batches += 1
        reads = [self._reading_threads().submit(self._read_rows, batch, part, ()) for part in rest]
        cold = self.batches - self.last_miss <= COLD_BATCHES  # it missed a moment ago
        self.advise_keys(after if cold else ())
        failed.update(self._read_rows(batch, first, () if cold else after))
        for read in reads:
            failed.update(read.result())
        return failed

    def _parts(self, order: list[int]) -> list[list[int]]:
        """``order`` (a batch's rows, by shard and offset) cut into runs, one per reading thread:
        at most ``threads`` of them, each of at least :data:`READ_PER_THREAD` bytes."""
        count = max(1, min(self.threads, len(order) * self.nbytes // READ_PER_THREAD))
        size = -(-len(order) // count) if order else 1
        return [order[i : i + size] for i in range(0, len(order), size)] or [[]]

    def _reading_threads(self) -> ThreadPoolExecutor:
        """This process's other reading threads (a forked process starts its own)."""
        if self.pool is None or self.pool[0] != os.getpid():
            self.pool = (os.getpid(), ThreadPoolExecutor(self.threads - 1, thread_name_prefix="mammo-cache"))
        return self.pool[1]

    def _read_rows(self, batch: BatchRead, part: list[int], after) -> dict[int, Exception]:
        """Rows ``part`` of ``batch`` (:meth:`read_entries`), in their order; the rows that failed.
        At the first miss, the rest and the next batch's entries ``after`` are advised."""
        size, failed = self.nbytes - HEADER.size, {}
        header, nowait = bytearray(HEADER.size), True
        for n, k in enumerate(part):
            at, row = batch.where[k], batch.rows[k * size : (k + 1) * size]
            got = _preadv(at.fd, [header, row], at.offset, nowait)
            if nowait and (got is None or got < self.nbytes):
                self.last_miss = self.batches
                self.advise([batch.where[j] for j in part[n:]])
                self.advise_keys(after)
                after, nowait = (), False
                got = os.preadv(at.fd, [header, row], at.offset)
            try:
                self._check_read(batch.keys[k], at, header, row, got, batch.keys[k] not in batch.verified)
            except CacheEntryError as exc:
                failed[k] = exc
                continue
            batch.verified.add(batch.keys[k])
        return failed

    def advise_keys(self, keys: list[str]) -> None:
        """:meth:`advise` the entries ``keys`` that are in the cache (nothing without keys)."""
        if keys:
            self.advise([at for at in map(self.index.locate, keys) if at is not None])
        return ()

    def advise(self, locations: list[Location]) -> None:
        """``posix_fadvise(WILLNEED)`` each entry's bytes: the kernel reads them all in the
        background, so a batch from a cold cache is read with the disk's queue full rather than one
        entry at a time. It costs a system call per entry even when its pages are in memory, which
        is why :meth:`read_entries` calls it only after a miss."""
        if hasattr(os, "posix_fadvise"):
            for where in locations:
                os.posix_fadvise(where.fd, where.offset, self.nbytes, os.POSIX_FADV_WILLNEED)

    def read_into(self, key: str, out: np.ndarray, verify: bool = False, where: Location | None = None):
        """One entry into ``out`` (float16 ``[H, W]``, C-contiguous) from ``where`` (looked up
        without it); raises ``FileNotFoundError`` or :class:`CacheEntryError`."""
        where = where or self.index.locate(key)
        if where is None:
            raise FileNotFoundError(f"{key}: not in the disk cache")
        header, row = bytearray(HEADER.size), memoryview(out).cast("B")
        got = os.preadv(where.fd, [header, row], where.offset)
        self._check_read(key, where, header, row, got, verify)

    def _check_read(self, key: str, where: Location, header, row, got: int, verify: bool) -> None:
        """:class:`CacheEntryError` unless ``got`` is the whole entry, its header is this cache's
        and (with ``verify``) the image read matches its CRC."""
        if got != self.nbytes:
            raise CacheEntryError(f"{key}: {got} bytes in {where.shard}, expected {self.nbytes} (truncated)")
        crc = entry_crc(header, self.shape, key)
        if verify and zlib.crc32(row) != crc:
            raise CacheEntryError(f"{key}: checksum mismatch (corrupt)")

    def check(self, key: str) -> Facts:
        """Size and header of an entry, without reading its image; raises like :meth:`read`.
        Returns how the image was made."""
        where = self.index.locate(key)
        if where is None:
            raise FileNotFoundError(f"{key}: not in the disk cache")
        header = os.pread(where.fd, HEADER.size, where.offset)
        end = os.fstat(where.fd).st_size
        if where.offset + self.nbytes > end:
            raise CacheEntryError(
                f"{key}: {max(0, end - where.offset)} bytes in {where.shard}, "
                f"expected {self.nbytes} (truncated)"
            )
        _, made = entry_header(header, self.shape, key)
        if made is None:
            raise CacheEntryError(f"{key}: bad header")
        return made

    def write(self, key: str, image: np.ndarray, facts: Facts) -> None:
        """Append the entry to this process's shard, then its index record: a reader finds an
        entry only once all of it is written (a crash leaves bytes no index names)."""
        payload = np.ascontiguousarray(image, dtype=DTYPE)
        if payload.shape != self.shape:
            raise ValueError(f"cache entry shape {payload.shape} != {self.shape}")
        data = payload.tobytes()
        chest_wall = CHEST_WALL_SOURCES.index(facts.chest_wall_from) + 1
        window = WINDOW_SOURCES.index(facts.window) + 1
        header = HEADER.pack(
            MAGIC, *self.shape, zlib.crc32(data), 1, chest_wall, window, facts.crop_share, facts.input_share
        )
        writer = self.writer
        if writer is None or writer.pid != os.getpid() or not (self.folder / writer.shard).exists():
            self._publish_settings()  # a forked worker writes its own; the folder may be gone (rm -rf)
            self.writer = ShardWriter(self.folder)
        self.index.add(key, self.writer.append(key, header + data))

    def migrate(self, key: str) -> str | None:
        """Move the per-file entry ``key`` of an older mammo's cache, if there is one, into the
        pack: ``"moved"`` when it was whole (its CRC checked), ``"dropped"`` when it was not (it
        is then rebuilt); ``None`` without one."""
        old = self.folder / key
        if not self.has_old_entries or not old.is_file():
            return None
        try:
            image, facts = read_old_entry(old, self.shape)
        except (OSError, CacheEntryError):
            old.unlink(missing_ok=True)
            return "dropped"
        self.write(key, image, facts)
        old.unlink(missing_ok=True)
        return "moved"


class BatchRead(NamedTuple):
    """A batch being read (:meth:`DiskCache.read_entries`): its keys, where each lies, its rows
    (the batch's bytes) and the keys already checked to their CRC."""

    keys: list[str]
    where: list[Location | None]
    rows: memoryview
    verified: set


class Location(NamedTuple):
    """Where an entry lies: its shard (name and an open descriptor) and the offset in it."""

    shard: str
    fd: int
    offset: int


RECORD = struct.Struct("<16sQQI")
"""An index record: the key's digest, the entry's offset in its shard, a sequence number (the
newest record of a key wins: a rebuilt entry replaces a damaged one) and the CRC-32 of the rest,
so a torn record is never read."""


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()[:16]


class PackIndex:
    """The folder's index files (``*.idx``, one per shard), read once and then as they grow;
    shards are opened once, read-only, and stay open."""

    def __init__(self, folder: Path, entries: dict | None = None) -> None:
        self.folder = folder
        self.entries: dict[bytes, tuple[int, str, int]] = dict(entries or {})  # digest: seq, shard, offset
        self.read_up_to: dict[str, int] = {}
        self.fds: dict[str, int] = {}
        self.located: dict[str, Location] = {}  # key: where, as last looked up (a batch's keys recur)
        self.refreshed = -math.inf  # when the index files were last read (time.monotonic)

    def locate(self, key: str) -> Location | None:
        found = self.located.get(key)
        return found if found is not None else self._look_up(key)

    def _look_up(self, key: str) -> Location | None:
        digest = key_digest(key)
        if digest not in self.entries and time.monotonic() - self.refreshed > REFRESH_SECONDS:
            self.refresh()
        found = self.entries.get(digest)
        if found is None:
            return None
        _, shard, offset = found
        fd = self.fds.get(shard)
        if fd is None:
            try:
                fd = self.fds[shard] = os.open(self.folder / shard, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
        self.located[key] = Location(shard, fd, offset)
        return self.located[key]

    def add(self, key: str, record: tuple[int, str, int]) -> None:
        self.entries[key_digest(key)] = record
        self.located.pop(key, None)

    def refresh(self) -> None:
        """Read what the index files gained since the last look (whole, intact records only)."""
        self.refreshed = time.monotonic()
        try:
            names = sorted(p.name for p in self.folder.glob(f"*{INDEX_SUFFIX}"))
        except OSError:
            return
        for name in names:
            try:
                with open(self.folder / name, "rb") as f:
                    f.seek(self.read_up_to.get(name, 0))
                    data = f.read()
            except OSError:
                continue
            whole = len(data) - len(data) % RECORD.size
            self.read_up_to[name] = self.read_up_to.get(name, 0) + whole
            shard = name.removesuffix(INDEX_SUFFIX) + SHARD_SUFFIX
            for digest, offset, seq, crc in RECORD.iter_unpack(data[:whole]):
                if zlib.crc32(RECORD.pack(digest, offset, seq, 0)[:-4]) != crc:
                    continue  # torn or foreign bytes
                if seq > self.entries.get(digest, (-1,))[0]:
                    self.entries[digest] = (seq, shard, offset)
                    self.located.clear()  # a key may lie elsewhere now (rebuilt by another process)

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
        self.located.clear()

    __del__ = close  # a dropped cache (a finished trial or fold) leaves no shard open


SHARD_SUFFIX, INDEX_SUFFIX = ".pack", ".idx"
REFRESH_SECONDS = 1.0
"""A key not found is looked for in the index files again at most this often: a fill of new
images reads them once a second, not once per image, and an entry another run adds meanwhile is at
worst built twice."""


class ShardWriter:
    """This process's own shard and index file, appended to (no other process writes them)."""

    def __init__(self, folder: Path) -> None:
        self.pid = os.getpid()
        stem = f"shard-{socket.gethostname()}-{self.pid}-{uuid.uuid4().hex[:8]}"
        self.shard = stem + SHARD_SUFFIX
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
        self.data = os.open(folder / self.shard, flags, 0o644)
        self.records = os.open(folder / (stem + INDEX_SUFFIX), flags | os.O_APPEND, 0o644)
        self.end = 0

    def __del__(self) -> None:
        for fd in (getattr(self, "data", None), getattr(self, "records", None)):
            if fd is not None:
                os.close(fd)

    def append(self, key: str, entry: bytes) -> tuple[int, str, int]:
        offset, view = self.end, memoryview(entry)
        while view:
            view = view[os.pwrite(self.data, view, offset + len(entry) - len(view)) :]
        self.end += len(entry)
        seq = time.time_ns()
        record = RECORD.pack(key_digest(key), offset, seq, 0)
        os.write(self.records, record[:-4] + struct.pack("<I", zlib.crc32(record[:-4])))
        return seq, self.shard, offset


def read_old_entry(path: Path, shape: tuple[int, int]) -> tuple[np.ndarray, Facts]:
    """An older mammo's per-file entry (same header and payload, one file per image), checked
    whole: size, header and CRC; raises :class:`CacheEntryError` otherwise."""
    data = path.read_bytes()
    expected = HEADER.size + int(np.prod(shape)) * np.dtype(DTYPE).itemsize
    if len(data) != expected:
        raise CacheEntryError(f"{path.name}: {len(data)} bytes, expected {expected} (truncated)")
    crc, made = entry_header(data[: HEADER.size], shape, path.name)
    payload = data[HEADER.size :]
    if made is None or zlib.crc32(payload) != crc:
        raise CacheEntryError(f"{path.name}: bad header or checksum")
    return np.frombuffer(payload, DTYPE).reshape(shape).copy(), made


def entry_crc(header: bytes, shape: tuple[int, int], key: str) -> int:
    """An entry header's CRC of the image; :class:`CacheEntryError` unless the header is a
    float16 image of ``shape``."""
    magic, height, width, crc, dtype = HEADER_START.unpack_from(header)
    if magic != MAGIC or height != shape[0] or width != shape[1] or dtype != 1:
        raise CacheEntryError(f"{key}: bad header")
    return crc


def entry_header(header: bytes, shape: tuple[int, int], key: str) -> tuple[int, Facts | None]:
    """An entry header's CRC of the image (:func:`entry_crc`) and how the image was made
    (``None`` where a code is out of range)."""
    return entry_crc(header, shape, key), header_facts(*HEADER.unpack(header)[5:])


def header_facts(chest_wall: int, window: int, crop_share: float, input_share: float) -> Facts | None:
    """The :class:`Facts` an entry's header holds, ``None`` where a code is out of range."""
    if not (0 < chest_wall <= len(CHEST_WALL_SOURCES) and 0 < window <= len(WINDOW_SOURCES)):
        return None
    return Facts(crop_share, input_share, CHEST_WALL_SOURCES[chest_wall - 1], WINDOW_SOURCES[window - 1])


def entry_name(accession: str, image_id: str, sha256: str) -> str:
    """An entry's file name: readable (accession, image name) and keyed by content."""
    return f"{safe_name(f'{accession}_{Path(image_id).name}')}.{sha256[:16]}.bin"


def stored_facts(folder: Path, keys: list[str]) -> list[Facts | None]:
    """How each entry's image was made, from its header alone (read-only: nothing is created);
    ``None`` for a missing or foreign entry."""
    index, out = PackIndex(Path(folder)), []
    try:
        for key in keys:
            where = index.locate(key)
            try:
                header = os.pread(where.fd, HEADER.size, where.offset) if where else b""
                magic, _, _, _, _, *facts = HEADER.unpack(header)
            except (OSError, struct.error):
                out.append(None)
                continue
            out.append(header_facts(*facts) if magic == MAGIC else None)
    finally:
        index.close()
    return out


def _preadv(fd: int, buffers: list, offset: int, nowait: bool) -> int | None:
    """Bytes read from ``offset``; ``None`` when ``nowait`` and the kernel would have to wait for
    the disk (or cannot read without waiting on this file system)."""
    if not nowait:
        return os.preadv(fd, buffers, offset)
    try:
        return os.preadv(fd, buffers, offset, NOWAIT)
    except OSError:  # BlockingIOError (EAGAIN), or EOPNOTSUPP where the file system has no NOWAIT
        return None


def _atomic_write(path: Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def safe_name(name: str) -> str:
    """``name`` as a file name: runs of other characters than letters, digits, ``._-`` become ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "image"


# -- image sources and batches ------------------------------------------------------------------------
log = logging.getLogger("mammo.data")


def train_augmentation(flip: bool = True):
    """Mild geometric and contrast jitter, applied to the [1, H, W] image in [0, 1]; a horizontal
    flip only with ``flip``: where preprocessing put every chest wall on one side
    (``data.orient=left|right``), a flipped image shows what no input will (the chest wall on the
    other side), so it is left out there, as ``tta=hflip`` is refused."""
    from torchvision.transforms import v2

    return v2.Compose(
        [
            *([v2.RandomHorizontalFlip()] if flip else []),
            v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.9, 1.1)),
            v2.ColorJitter(brightness=0.1, contrast=0.1),
        ]
    )


class BatchAugmentation:
    """:func:`train_augmentation` drawn anew for every image of a ``[B, 1, H, W]`` batch.

    It runs in the training process on the batch as the loader hands it over (the datamodule's
    ``on_after_batch_transfer``), never in loader workers: its draws come from that process's
    torch random state, which the checkpoints save and a resumed run restores, so the result does
    not depend on ``data.num_workers`` and a resumed run augments exactly as an uninterrupted one.
    """

    def __init__(self, flip: bool = True) -> None:
        self.transform = train_augmentation(flip)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.transform(x.float()) for x in images]).clamp_(0, 1)


class ImageSource:
    """Where a dataset's preprocessed images come from: the memory cache, the disk cache, or the
    DICOM files themselves. Items are float16 [H, W] arrays, identical in all three modes."""

    def __init__(self, table: pd.DataFrame, preprocessing: Preprocessing, cache: DiskCache | None = None):
        self.paths = table["path"].tolist()
        self.laterality = table["laterality"].tolist()
        self.entries = (
            [
                cache.entry(a, i, s)
                for a, i, s in zip(table["AccessionNumber"], table["image_id"], table["sha256"])
            ]
            if cache
            else None
        )
        self.preprocessing, self.cache = preprocessing, cache
        self.verified: set = set()  # entries whose CRC this process checked (shared by selections)
        self.memory: np.ndarray | None = None  # [N, H, W] float16, shared by the selections
        self.memory_index = np.arange(len(self.paths))
        self.rebuilt = multiprocessing.Value("i", 0)  # entries rebuilt on read, loader workers too

    def __len__(self) -> int:
        return len(self.paths)

    def compute(self, i: int) -> tuple[np.ndarray, Facts]:
        """Image ``i`` (float16) and how it was made."""
        image, facts = self.preprocessing.preprocess(self.paths[i], self.laterality[i] or None)
        return image.astype(np.float16), facts

    def read_batch(self, indices: list[int], out: np.ndarray, after: list[int] = ()) -> None:
        """Images ``indices`` into ``out`` ([B, H, W], C-contiguous); ``after`` are the next
        batch's. From the disk cache, one positioned read per image, in the order the entries lie
        in the shards, the next batch's reads started early from a cold cache
        (:meth:`DiskCache.read_entries`); an entry missing or damaged is rebuilt."""
        if self.cache is None or self.memory is not None:
            for k, i in enumerate(indices):
                self.read_into(i, out[k])
            return
        keys, upcoming = [self.entries[i] for i in indices], [self.entries[i] for i in after]
        failed = self.cache.read_entries(keys, out, self.verified, upcoming)
        for k, reason in failed.items():
            self.rebuild(indices[k], out[k], reason)

    def read_into(self, i: int, out: np.ndarray) -> None:
        """Put image ``i`` into ``out`` (a float16 [H, W] view, e.g. a slot of a batch)."""
        if self.memory is not None:
            out[...] = self.memory[self.memory_index[i]]
        elif self.cache is None:
            out[...] = self.compute(i)[0]
        else:
            self.read_batch([i], out[None])

    def rebuild(self, i: int, out: np.ndarray, reason: Exception) -> None:
        """Image ``i``, whose disk cache entry could not be read (``reason``), made from its DICOM
        into ``out`` and into the cache, with the spec's WARNING line."""
        log.warning("Disk cache entry unreadable (%s) - regenerating", reason)
        image, facts = self.compute(i)
        out[...] = image
        self.cache.write(self.entries[i], image, facts)
        self.verified.add(self.entries[i])
        with self.rebuilt.get_lock():
            self.rebuilt.value += 1

    def select(self, positions: np.ndarray) -> ImageSource:
        """The source restricted to ``positions`` (shares the memory cache)."""
        out = object.__new__(ImageSource)
        out.paths = [self.paths[p] for p in positions]
        out.laterality = [self.laterality[p] for p in positions]
        out.entries = None if self.entries is None else [self.entries[p] for p in positions]
        out.preprocessing, out.cache, out.verified = self.preprocessing, self.cache, self.verified
        out.memory, out.memory_index = self.memory, self.memory_index[positions]
        out.rebuilt = self.rebuilt
        return out


class CacheFiller(Dataset):
    """One pass over every image: verify or build its cache entry; returns (i, status, detail,
    image, how it was made)."""

    def __init__(self, source: ImageSource, keep: bool, skip: bool) -> None:
        self.source, self.keep, self.skip = source, keep, skip

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int):
        source, status, detail, image, facts = self.source, "built", "", None, None
        if source.cache is not None:
            migrated = source.cache.migrate(source.entries[i])  # an older mammo's per-file entry
            try:  # the memory cache needs the image (and its CRC); the disk cache only its header
                facts = source.cache.check(source.entries[i])
                if self.keep:
                    image = source.cache.read(source.entries[i], verify=True)
                status, detail = "reused", "moved" if migrated == "moved" else ""
            except FileNotFoundError:
                if migrated == "dropped":
                    status, detail = "regenerated", f"{source.entries[i]}: a damaged per-file entry"
            except CacheEntryError as exc:
                status, detail = "regenerated", str(exc)
        if status != "reused":
            try:
                image, facts = source.compute(i)
            except DataError as exc:  # returned, not raised: a worker's traceback would wrap it
                return i, "bad", str(exc), None, None
            if source.cache is not None:
                source.cache.write(source.entries[i], image, facts)
        return i, status, detail, image if self.keep else None, facts


def as_list(batch):
    return batch


class _Batch(tuple):
    """(images, labels, rows) already assembled by ``DicomDataset.__getitems__``."""


def collate(batch):
    return tuple(batch) if isinstance(batch, _Batch) else torch.utils.data.default_collate(batch)


class DicomDataset(Dataset):
    """Items are ``(image [1, H, W], label, row index)``.

    The loaders fetch whole batches (``__getitems__``): each image is read straight into its slot
    of the batch tensor, so a cached epoch copies every byte once.
    """

    def __init__(
        self, table: pd.DataFrame, source: ImageSource, embeddings=None, buffers: BatchBuffers | None = None
    ) -> None:
        self.labels = table["label"].to_numpy()
        self.rows = table.index.to_numpy()
        self.source = source
        self.embeddings = embeddings  # (features [N, D] array, row in it per table row) or None
        self.buffers = buffers or BatchBuffers()  # the batches' memory (a datamodule's, shared)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, indices: list[int]) -> _Batch:
        # recycled batch memory (mammo.data.cache), NumPy's: NumPy asks for transparent huge
        # pages on large arrays, so new memory faults in 2 MiB pages rather than 4 KiB ones
        images = self.buffers.get((len(indices), 1, *self.source.preprocessing.shape), np.float16)
        self.source.read_batch(indices, images[:, 0], getattr(indices, "after", ()))
        images = torch.from_numpy(images)
        batch = (images, torch.from_numpy(self.labels[indices]), torch.from_numpy(self.rows[indices]))
        if self.embeddings is not None:
            features, rows = self.embeddings
            batch += (torch.from_numpy(np.asarray(features[rows[indices]], dtype=np.float32)),)
        return _Batch(batch)

    def __getitem__(self, i: int):
        images, labels, rows, *embedding = self.__getitems__([i])
        return images[0], int(labels[0]), int(rows[0]), *(e[0] for e in embedding)


def fill_cache(
    source: ImageSource, samples, mode: str, num_workers: int, skip: bool
) -> tuple[ImageSource, dict]:
    """Preprocess every image once (in ``num_workers`` processes) into the memory or disk cache.

    Bad files stop it, or with ``skip`` are dropped from ``samples`` (and from the returned
    source). Returns the source to read from and the cache's statistics.
    """
    start = time.perf_counter()
    keep = mode == "memory"
    if keep:
        check_memory_cache_fits(len(source), source.preprocessing.shape, available_memory())
    loader = DataLoader(
        CacheFiller(source, keep, skip=skip), batch_size=4, num_workers=num_workers, collate_fn=as_list
    )
    memory = np.zeros((len(source), *source.preprocessing.shape), np.float16) if keep else None
    counts = {"reused": 0, "built": 0, "regenerated": 0, "bad": 0}
    damaged, bad, facts, moved = [], {}, {}, 0
    for batch in loader:
        for i, status, detail, image, facts[i] in batch:
            counts[status] += 1
            moved += detail == "moved"
            if status == "bad":
                if not skip:
                    raise DataError(detail)
                bad[i] = detail
                continue
            if status == "regenerated":
                damaged.append(detail)
            if keep:
                memory[i] = image
    seconds = time.perf_counter() - start
    folder = source.cache.folder if source.cache is not None else None
    log_fill(mode, folder, counts, damaged, moved, seconds)
    crops = report_nearly_whole_crops(samples.table["image_id"].tolist(), facts, source.preprocessing.crop)
    if bad:
        positions = np.array([p for p in range(len(source)) if p not in bad])
        samples.drop({samples.table.index[i]: reason for i, reason in bad.items()})
        source = source.select(positions)
    source.memory = memory
    return source, {
        **counts,
        "seconds": round(seconds, 3),
        "folder": str(folder) if folder else None,
        **crops,
    }


def log_fill(mode: str, folder: Path | None, counts: dict, damaged: list[str], moved: int, seconds: float):
    """run.log's lines of a cache fill: the spec's truncation warning, entries moved from an older
    per-file cache, and the counts."""
    if damaged:
        log.warning(
            "Disk cache truncation detected for %d samples - regenerating (%s)",
            len(damaged),
            "; ".join(damaged[:3]),
        )
        log.info("Cache rebuild complete (took %.1fs)", seconds)
    if moved:
        log.info("Moved %d entries of the per-file disk cache into the packed cache (%s)", moved, folder)
    log.info(
        "Preprocessed images (cache_mode=%s%s): %d reused, %d built, %d regenerated, %d bad (%.1fs)",
        mode,
        f", {folder}" if folder else "",
        *(counts[k] for k in ("reused", "built", "regenerated", "bad")),
        seconds,
    )
