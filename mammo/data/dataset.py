"""Datasets of preprocessed images: where each image comes from (memory cache, disk cache or the
DICOM file), the one-pass cache filler, and the batch-reading Dataset the loaders use.

Images are ``[1, H, W]`` tensors in [0, 1] (float16 as stored); training batches are augmented in
the training process (:class:`BatchAugmentation`, float32 after it), and the model normalises
them (``DensityClassifier.forward``). Loader workers only read and preprocess: they draw no random
numbers, so results do not depend on how many there are.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from mammo.core.errors import DataError
from mammo.data.breast import report_nearly_whole_crops
from mammo.data.buffers import BatchBuffers
from mammo.data.cache import CacheEntryError, DiskCache, available_memory, check_memory_cache_fits
from mammo.data.preprocess import Facts, Preprocessing

log = logging.getLogger("mammo.data")


def train_augmentation():
    """Mild geometric and contrast jitter, applied to the [1, H, W] image in [0, 1]."""
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
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

    def __init__(self) -> None:
        self.transform = train_augmentation()

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
        # recycled batch memory (mammo.data.buffers), NumPy's: NumPy asks for transparent huge
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
