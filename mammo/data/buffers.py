"""Batch memory that is recycled once nobody holds it any more.

A loader that hands out a fresh array for every batch makes the kernel find and zero new pages
for it whenever the allocator has given the last one back (glibc does, erratically, with a batch
still held by the training step): at 512 px that cost 40 % of a cached epoch's speed
(``scripts/bench_cache.py``). The pool hands out NumPy arrays to be wrapped with
``torch.from_numpy``, which keeps its array alive for as long as any tensor or view of that memory
exists; an array whose only reference is the pool's own is therefore free to be written again.
"""

from __future__ import annotations

import sys

import numpy as np

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
