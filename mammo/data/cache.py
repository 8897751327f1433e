"""Cache and batch: preprocessed images stored once, then read back a batch at a time.

**The disk cache.** Preprocessed-image cache (``data.cache_mode=disk``): one small binary file per image.

Layout: ``<cache_dir>/preprocessed_<H>x<W>/<settings key>/<AccessionNumber>_<name>.<sha>.bin``
with a ``settings.json`` beside the entries. The settings key hashes every preprocessing
setting and the pipeline version; ``<sha>`` is the start of the DICOM file's SHA-256. A change
of either gives a new entry name, so a stale image can never be served.

An entry is a 32-byte header (magic, height, width, CRC-32 of the payload, dtype code, and how the
image was made: :class:`~mammo.data.images.Facts`, the shares of the file the crop kept and of
the input the breast covers, the chest-wall and window sources) and the image as float16.
Writes go to a temporary file in the same folder and are renamed into place, so readers
(DataLoader workers, a second run sharing the cache) see a whole entry or none.
Each run checks every entry's size and header when it prepares the dataset (32 bytes per entry,
not the whole file: a 100,000-image cache is checked in seconds), and each entry's CRC the first
time a process reads it; later reads check size and header only, which keeps them at the speed of
a raw NumPy read (``scripts/bench_data.py``; a ``torch.load`` of a per-image ``.pt`` was several
times slower). An entry found bad either way is rebuilt from its DICOM.

**Image sources and batches.** Where each image comes from (memory cache, disk cache or the
DICOM file), the one-pass cache filler, and the batch-reading Dataset the loaders use.

Images are ``[1, H, W]`` tensors in [0, 1] (float16 as stored); training batches are augmented in
the training process (:class:`BatchAugmentation`, float32 after it), and the model normalises
them (``DensityClassifier.forward``). Loader workers only read and preprocess: they draw no random
numbers, so results do not depend on how many there are.

**Batch memory.** Batch memory that is recycled once nobody holds it any more.

A loader that hands out a fresh array for every batch makes the kernel find and zero new pages
for it whenever the allocator has given the last one back (glibc does, erratically, with a batch
still held by the training step): at 512 px that cost 40 % of a cached epoch's speed
(``scripts/bench_cache.py``). The pool hands out NumPy arrays to be wrapped with
``torch.from_numpy``, which keeps its array alive for as long as any tensor or view of that memory
exists; an array whose only reference is the pool's own is therefore free to be written again.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import struct
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from mammo.artifacts.io import atomic_open
from mammo.core.errors import DataError
from mammo.data.images import (
    CHEST_WALL_SOURCES,
    WINDOW_SOURCES,
    Facts,
    Preprocessing,
    report_nearly_whole_crops,
)

# -- batch memory -------------------------------------------------------------------------------------
_FREE = 2  # the pool's list entry + getrefcount's own argument


class BatchBuffers:
    """Up to ``keep`` arrays per shape, each reused when no one else references it.

    Args:
        keep: how many arrays of one shape to hold on to (a training loop holds one or two
            batches; the rest are allocated as usual and freed when dropped).
    """

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self.pool: dict[tuple, list[np.ndarray]] = {}

    def get(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        """An array of ``shape`` and ``dtype`` that nothing else references (contents undefined)."""
        key = (tuple(shape), np.dtype(dtype).str)
        arrays = self.pool.setdefault(key, [])
        for k in range(len(arrays)):
            if sys.getrefcount(arrays[k]) <= _FREE:
                return arrays[k]
        array = np.empty(shape, dtype)
        if len(arrays) < self.keep:
            arrays.append(array)
        return array

    def __getstate__(self) -> dict:  # a loader worker starts with an empty pool of its own
        return {"keep": self.keep, "pool": {}}


# -- the disk cache -----------------------------------------------------------------------------------
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
        which is why :class:`~mammo.data.cache.ImageSource` calls it only after a miss."""
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


class EpochShuffle(RandomSampler):
    """A random order per epoch that depends only on ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before every epoch, a resumed run too (the epoch comes from
    the checkpoint), so the resumed epochs see the same orders as an uninterrupted run whatever the
    loader workers did. Under DDP the datamodule shards with a ``DistributedSampler`` instead,
    seeded by epoch the same way.
    """

    def __init__(self, data_source, seed: int) -> None:
        super().__init__(data_source)
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        generator = torch.Generator()
        generator.manual_seed(int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0]))
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


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

    def read_batch(self, indices: list[int], out: np.ndarray) -> None:
        """Images ``indices`` into ``out`` ([B, H, W]). From the disk cache, entries are read from
        the page cache without waiting until one is missing there; then the rest of the batch's
        reads are all started at once (:meth:`DiskCache.advise`) before reading on."""
        on_disk = self.cache is not None and self.memory is None
        paths = [self.entries[i] for i in indices] if on_disk else []
        fds = self.cache.open_entries(paths) if on_disk else [None] * len(indices)
        try:
            advised = not on_disk
            for k, i in enumerate(indices):
                if not self.read_into(i, out[k], fds[k], nowait=not advised):
                    self.cache.advise(fds[k:])
                    advised = True
                    self.read_into(i, out[k], fds[k])
        finally:
            for fd in [fd for fd in fds if fd is not None]:
                os.close(fd)

    def read_into(self, i: int, out: np.ndarray, fd: int | None = None, nowait: bool = False) -> bool:
        """Put image ``i`` into ``out`` (a float16 [H, W] view, e.g. a slot of a batch); ``fd`` is
        its open disk cache entry. ``False`` (nothing done) where ``nowait`` and the entry is not
        in the page cache (:meth:`DiskCache.read_into`)."""
        if self.memory is not None:
            out[...] = self.memory[self.memory_index[i]]
        elif self.cache is None:
            out[...] = self.compute(i)[0]
        else:
            entry = self.entries[i]
            try:
                if not self.cache.read_into(entry, out, entry not in self.verified, fd, nowait):
                    return False
            except (FileNotFoundError, CacheEntryError) as exc:  # damaged, or changed since prepare()
                log.warning("Disk cache entry unreadable (%s) - regenerating", exc)
                image, facts = self.compute(i)
                out[...] = image
                self.cache.write(entry, image, facts)
                with self.rebuilt.get_lock():
                    self.rebuilt.value += 1
            self.verified.add(entry)
        return True

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
            try:  # the memory cache needs the image (and its CRC); the disk cache only its header
                facts = source.cache.check(source.entries[i])
                if self.keep:
                    image = source.cache.read(source.entries[i], verify=True)
                status = "reused"
            except FileNotFoundError:
                pass
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

    def __init__(self, table: pd.DataFrame, source: ImageSource, embeddings=None) -> None:
        self.labels = table["label"].to_numpy()
        self.rows = table.index.to_numpy()
        self.source = source
        self.embeddings = embeddings  # (features [N, D] array, row in it per table row) or None
        self.buffers = BatchBuffers()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, indices: list[int]) -> _Batch:
        # recycled batch memory (mammo.data.cache), NumPy's: NumPy asks for transparent huge
        # pages on large arrays, so new memory faults in 2 MiB pages rather than 4 KiB ones
        images = self.buffers.get((len(indices), 1, *self.source.preprocessing.shape), np.float16)
        self.source.read_batch(indices, images[:, 0])
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
    damaged, bad, facts = [], {}, {}
    for batch in loader:
        for i, status, detail, image, facts[i] in batch:
            counts[status] += 1
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
    if damaged:
        log.warning(
            "Disk cache truncation detected for %d samples - regenerating (%s)",
            len(damaged),
            "; ".join(damaged[:3]),
        )
        log.info("Cache rebuild complete (took %.1fs)", seconds)
    folder = source.cache.folder if source.cache is not None else None
    log.info(
        "Preprocessed images (cache_mode=%s%s): %d reused, %d built, %d regenerated, %d bad (%.1fs)",
        mode,
        f", {folder}" if folder else "",
        *(counts[k] for k in ("reused", "built", "regenerated", "bad")),
        seconds,
    )
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
