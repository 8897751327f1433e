"""Recycled batch memory: reused only once no tensor, view or array of it is held."""

from __future__ import annotations

import numpy as np
import torch

from mammo.data.cache import BatchBuffers


def test_an_array_is_reused_only_when_nothing_else_holds_its_memory():
    buffers = BatchBuffers(keep=2)
    batch = torch.from_numpy(buffers.get((2, 3), np.float16))
    view = batch[0]
    del batch
    second = buffers.get((2, 3), np.float16)  # the first is still seen through `view`
    assert not np.shares_memory(second, view.numpy())
    as_numpy = torch.from_numpy(second).numpy()
    del second
    third = buffers.get((2, 3), np.float16)  # both held: a third, beyond `keep`, is not pooled
    assert not np.shares_memory(third, view.numpy()) and not np.shares_memory(third, as_numpy)
    assert len(buffers.pool[((2, 3), "<f2")]) == 2
    del view, third
    again = buffers.get((2, 3), np.float16)
    assert np.shares_memory(again, buffers.pool[((2, 3), "<f2")][0])
    assert buffers.get((1, 3), np.float16).shape == (1, 3)  # another shape, its own arrays


def test_batches_held_by_the_caller_keep_their_values(dataset, make_datamodule):
    dm = make_datamodule(*dataset, cache_mode="disk")
    data = dm.dataset(dm.samples.table)
    held = [data.__getitems__([i, i + 1])[0] for i in range(0, 8, 2)]
    copies = [batch.clone() for batch in held]
    for i in range(8, 20, 2):  # more batches while the first four are still held
        data.__getitems__([i, i + 1])
    assert all(torch.equal(batch, copy) for batch, copy in zip(held, copies))
    assert not all(torch.equal(held[0], batch) for batch in held[1:])


class Copy:
    """A stand-in for the CUDA event recorded after a batch's copy to the GPU."""

    def __init__(self) -> None:
        self.waited = 0

    def synchronize(self) -> None:
        self.waited += 1


def test_the_next_batch_waits_for_the_last_copy_out_of_the_memory_before_reusing_it():
    buffers = BatchBuffers()
    first = buffers.get((2, 3), np.float16)
    del first
    buffers.fence = copy = Copy()  # a copy to the GPU of that batch may still be reading it
    again = buffers.get((2, 3), np.float16)
    assert copy.waited == 1 and buffers.fence is None
    assert np.shares_memory(again, buffers.pool[((2, 3), "<f2")][0])  # then reused
    buffers.get((2, 3), np.float16)
    assert copy.waited == 1  # once


def test_every_loader_of_a_datamodule_reads_into_one_memory_pinned_only_for_a_gpu(dataset, make_datamodule):
    dm = make_datamodule(*dataset, cache_mode="disk")
    memory = dm.train_dataloader().dataset.buffers
    assert dm.val_dataloader().dataset.buffers is memory and not memory.pinned  # no trainer: the CPU
    batch = next(iter(dm.val_dataloader()))
    assert dm.transfer_batch_to_device(batch, torch.device("cpu"), 0)[0].device.type == "cpu"
    assert memory.fence is None  # a copy on the CPU is done when it returns
