"""The order batches are read in: a full shuffle per epoch that depends only on ``(seed, epoch)``,
and batches that each know the next one (so that reads from a cold disk cache start early)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import BatchSampler, RandomSampler


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


class BatchIndices(list):
    """A batch's indices, and the next batch's (``after``, empty for the last batch)."""

    def __init__(self, indices: list[int], after: list[int]) -> None:
        super().__init__(indices)
        self.after = after


class LookaheadBatches(BatchSampler):
    """``BatchSampler``'s batches of ``sampler``'s order, the same ones, each a
    :class:`BatchIndices` that also names the next batch, so that a batch read from a cold disk
    cache starts the next one's reads (:meth:`~mammo.data.cache.DiskCache.read_entries`). It
    draws one batch ahead from ``sampler``, whose order (``EpochShuffle``: ``(seed, epoch)``
    only) does not depend on when it is drawn; Lightning's ``set_epoch`` reaches it as
    ``batch_sampler.sampler``."""

    def __iter__(self):
        batches = super().__iter__()
        current = next(batches, None)
        for upcoming in batches:
            yield BatchIndices(current, upcoming)
            current = upcoming
        if current is not None:
            yield BatchIndices(current, [])
