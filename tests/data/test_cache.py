"""The preprocessed-image cache: identical images in every mode, reuse, repair, sharing."""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import time

import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader

from mammo.core.errors import DataError
from mammo.data.cache import (
    COLD_BATCHES,
    HEADER,
    MAGIC,
    CacheEntryError,
    DiskCache,
    Location,
    collate,
    stored_facts,
)
from tests.cache_files import flip_payload_byte, last_in_its_shard, overwrite_header, shards, truncate, where
from tests.conftest import missing_component


def val_images(dm) -> torch.Tensor:
    images, _, _ = next(iter(dm.val_dataloader()))
    return images


def facts_of(dm) -> list:
    return stored_facts(dm.source.cache.folder, dm.source.entries)


def test_every_cache_mode_gives_the_same_images(dataset, make_datamodule):
    batches = {
        mode: val_images(make_datamodule(*dataset, cache_mode=mode)) for mode in ("none", "memory", "disk")
    }
    assert batches["none"].dtype == torch.float16 and batches["none"].shape[1:] == (1, 32, 32)
    assert torch.equal(batches["none"], batches["memory"]) and torch.equal(batches["none"], batches["disk"])


def test_disk_cache_is_built_once_then_reused(dataset, make_datamodule):
    first = make_datamodule(*dataset, cache_mode="disk")
    assert first.cache_stats["built"] == 40 and first.cache_stats["reused"] == 0
    assert len(shards(first.source.cache.folder)) == 1  # packed: one shard per writing process
    assert all(f is not None for f in facts_of(first)) and not list(first.source.cache.folder.glob("*.bin"))
    assert first.source.cache.folder.parent.name == "preprocessed_32x32"
    assert (first.source.cache.folder / "settings.json").is_file()
    second = make_datamodule(*dataset, cache_mode="disk")
    assert second.cache_stats["reused"] == 40 and second.cache_stats["built"] == 0
    other = make_datamodule(*dataset, cache_mode="disk", crop=False)  # another setting, another folder
    assert other.cache_stats["built"] == 40 and other.source.cache.folder != first.source.cache.folder


def test_truncated_and_corrupt_entries_are_regenerated_with_a_warning(dataset, make_datamodule, caplog):
    first = make_datamodule(*dataset, cache_mode="disk")
    reference = val_images(first)
    cache, keys = first.source.cache, first.source.entries
    cut = last_in_its_shard(cache, keys)
    truncate(cache, cut, keep=1000)  # a crash or a full disk: the shard ends inside its last entry
    flip_payload_byte(cache, next(k for k in keys if k != cut))  # same size, wrong checksum
    with caplog.at_level(logging.WARNING, logger="mammo"):
        second = make_datamodule(*dataset, cache_mode="disk")  # start-up: sizes and headers only
    assert second.cache_stats["regenerated"] == 1 and second.cache_stats["reused"] == 39
    assert "Disk cache truncation detected for 1 samples - regenerating" in caplog.text
    assert "truncated" in caplog.text and "checksum mismatch" not in caplog.text
    source, out = second.source, np.empty((32, 32), np.float16)
    with caplog.at_level(logging.WARNING, logger="mammo"):
        for i in range(len(source)):  # the first read of each entry checks its CRC
            source.read_into(i, out)
    assert "checksum mismatch (corrupt)) - regenerating" in caplog.text
    cache = second.source.cache
    for key in keys:
        cache.read(key, verify=True)  # repaired in the pack
    assert torch.equal(val_images(second), reference)
    assert len(source.verified) == len(source)  # later reads skip the CRC


def test_entry_damaged_during_training_is_rebuilt_on_read(dataset, make_datamodule, caplog):
    dm = make_datamodule(*dataset, cache_mode="disk")
    reference = val_images(dm)
    facts = facts_of(dm)
    for shard in shards(dm.source.cache.folder):
        shard.write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="mammo"):
        assert torch.equal(val_images(dm), reference)
    assert "Disk cache entry unreadable" in caplog.text
    val = set(dm.val_table.index)
    rebuilt = [(f, after) for k, (f, after) in enumerate(zip(facts, facts_of(dm))) if k in val]
    assert rebuilt and all(before == after for before, after in rebuilt)  # how it was made, kept too
    assert dm.cache_report()["rebuilt_on_read"] == len(reference)
    for shard in shards(dm.source.cache.folder):
        shard.write_bytes(b"")
    loader = DataLoader(dm.dataset(dm.train_table), batch_size=8, num_workers=2, collate_fn=collate)
    assert sum(len(images) for images, *_ in loader) == len(dm.train_table)
    rebuilt_by_workers = dm.cache_report()["rebuilt_on_read"] - len(reference)
    assert rebuilt_by_workers == len(dm.train_table)


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_worker_processes_fill_the_cache(dataset, make_datamodule, mode):
    serial = val_images(make_datamodule(*dataset, cache_mode="none"))
    dm = make_datamodule(*dataset, cache_mode=mode, num_workers=2)
    assert dm.cache_stats["built"] == 40
    assert torch.equal(val_images(dm), serial)


def _prepare(csv, root, cache_dir, barrier, results):
    from mammo.data.datamodule import DensityDataModule

    dm = DensityDataModule.from_config(
        csv=str(csv),
        dicom_root=str(root),
        img_size=32,
        num_workers=0,
        cache_mode="disk",
        cache_dir=cache_dir,
        batch_size=16,
        train_augment=True,
        seed=42,
    )
    barrier.wait()
    dm.setup("fit")
    results.put(dm.cache_stats["bad"])


def test_two_runs_can_fill_one_cache_at_once(dataset, tmp_path):
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    procs = [
        context.Process(target=_prepare, args=(*dataset, str(tmp_path / "shared"), barrier, results))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert [results.get(timeout=5), results.get(timeout=5)] == [0, 0]
    from mammo.data.images import Preprocessing

    cache = DiskCache(tmp_path / "shared", Preprocessing(32))
    cache.index.refresh()
    assert len(cache.index.entries) == 40 and not list(cache.folder.glob("*.tmp"))
    assert 1 <= len(shards(cache.folder)) <= 2  # a shard per process that wrote
    out = np.empty((32, 32), np.float16)
    for _, shard, offset in cache.index.entries.values():  # each entry whole, to its checksum
        fd = os.open(cache.folder / shard, os.O_RDONLY)
        try:
            cache.read_into("entry", out, verify=True, where=Location(shard, fd, offset))  # or raises
        finally:
            os.close(fd)
        assert np.isfinite(out).all()


def test_a_memory_cache_that_would_not_fit_is_refused_before_any_work(dataset, make_datamodule, monkeypatch):
    import mammo.data.cache

    monkeypatch.setattr(mammo.data.cache, "available_memory", lambda: 10_000)  # 10 kB of RAM
    with pytest.raises(
        DataError, match=r"data.cache_mode=memory: \d+ images at 32x32 need .* use data.cache_mode=disk"
    ):
        make_datamodule(*dataset, cache_mode="memory")
    monkeypatch.undo()
    assert make_datamodule(*dataset, cache_mode="memory").cache_stats["built"] > 0


def meminfo_bytes(field: str) -> int:
    with open("/proc/meminfo") as f:
        return int(dict(line.split(":", 1) for line in f)[field].split()[0]) * 1024


def test_the_machines_memory_is_read_and_a_memory_cache_that_would_not_fit_is_refused_on_it(
    dataset, make_datamodule
):
    """Nothing tested the real reading: one that returned None made the fit check never refuse."""
    import math

    from mammo.data.settings import available_memory

    available = available_memory()
    assert available is not None and 0 < available <= meminfo_bytes("MemTotal")
    assert abs(available - meminfo_bytes("MemAvailable")) < 0.1 * meminfo_bytes("MemTotal")  # a moment apart
    side = math.ceil(math.sqrt(available / 40 / 2))  # 40 float16 images of side² pixels: all the RAM
    with pytest.raises(DataError, match=rf"data.cache_mode=memory: 40 images at {side}x{side} need "):
        make_datamodule(*dataset, cache_mode="memory", img_size=side)


def test_a_subset_run_prepares_only_the_images_it_uses(dataset, make_datamodule):
    everything = make_datamodule(*dataset, cache_mode="memory")
    total = len(everything.samples.table)
    dm = make_datamodule(*dataset, cache_mode="memory", subset=0.4)
    used = len(dm.train_table) + len(dm.val_table)
    assert dm.cache_stats["built"] == used == len(dm.samples.table) < total
    assert set(dm.val_table["image_id"]) == set(everything.val_table["image_id"])  # validation untouched
    assert len(dm.train_table) < 0.6 * len(everything.train_table)
    described = dm.describe()
    assert described["num_train"] + described["num_val"] == used and described["subset"] == 0.4


def test_batch_reads_open_no_file_per_image(dataset, make_datamodule):
    dm = make_datamodule(*dataset, cache_mode="disk")
    cache, keys = dm.source.cache, dm.source.entries
    overwrite_header(cache, keys[0], 0, b"MAMMOC01")  # a bad header: rebuilt on read
    data, everything = dm.dataset(dm.samples.table), list(range(len(dm.samples.table)))
    images, *_ = data.__getitems__(everything)
    open_after_one = len(os.listdir("/proc/self/fd"))
    overwrite_header(cache, keys[1], 0, b"MAMMOC01")
    data.source.verified.clear()
    for _ in range(3):
        images, *_ = data.__getitems__(everything)
    assert len(os.listdir("/proc/self/fd")) == open_after_one  # the shards stay open, nothing else
    assert images.shape[0] == len(data) and float(images.float().amax()) > 0
    assert dm.cache_report()["rebuilt_on_read"] == 2


def evict(path, offset: int = 0, size: int = 0) -> None:
    """Drop a file's pages (``size`` bytes from ``offset``; 0: all) from the page cache (any user
    may, for clean pages)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, offset, size, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def pages_can_be_dropped(folder) -> bool:
    """``False`` on a file system that keeps every page in memory (tmpfs)."""
    probe = folder / "probe"
    probe.write_bytes(b"x" * 8192)
    evict(probe)
    fd = os.open(probe, os.O_RDONLY)
    try:
        return os.preadv(fd, [bytearray(1)], 0, os.RWF_NOWAIT) != 1
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="needs Linux preadv2(RWF_NOWAIT)")
def test_entries_missing_from_the_page_cache_are_read_after_advising_the_rest_of_the_batch(
    dataset, make_datamodule, monkeypatch, tmp_path
):
    if not pages_can_be_dropped(tmp_path):
        missing_component(
            "a temporary folder whose pages can be dropped (not tmpfs)",
            "TMPDIR=<a folder on a disk> make test",
        )
    source = make_datamodule(*dataset, cache_mode="disk", img_size=64).source  # entries of 3 pages
    cache, n = source.cache, 6
    expected = np.stack([cache.read(source.entries[i]) for i in range(n)])
    advised = []
    monkeypatch.setattr(cache, "advise", lambda fds: advised.append(len(fds)))
    batch = np.zeros((n, 64, 64), np.float16)
    for _ in range(5):  # a page still in another CPU's LRU batch is not dropped: try again
        for i in range(2, n):
            shard, offset = where(cache, source.entries[i])
            first_page = (offset + 4095) // 4096 * 4096  # whole pages only: entries 0 and 1 stay
            evict(shard, first_page, offset + cache.nbytes - first_page)
        source.read_batch(list(range(n)), batch)
        if advised:
            break
        time.sleep(0.1)
    # once, at the first miss (entries 0 and 1 stayed in memory), for it and the rest of the batch
    assert len(advised) == 1 and 1 <= advised[0] <= n - 2
    np.testing.assert_array_equal(batch, expected)
    source.read_batch(list(range(n)), batch)  # now all in the page cache: no advice
    assert len(advised) == 1


def test_each_entry_records_how_its_image_was_made(dataset, make_datamodule, tmp_path):
    from mammo.data.images import Facts, Preprocessing

    dm = make_datamodule(*dataset, cache_mode="disk")
    cache, table = dm.source.cache, dm.samples.table
    stored = facts_of(dm)
    for i in range(len(table)):
        _, made = dm.preprocessing.preprocess(dm.source.paths[i], dm.source.laterality[i] or None)
        recorded = cache.check(dm.source.entries[i])
        assert recorded == stored[i]
        assert recorded.chest_wall_from == made.chest_wall_from and recorded.window == made.window
        assert recorded.crop_share == pytest.approx(made.crop_share, rel=1e-6)  # stored as float32
        assert recorded.input_share == pytest.approx(made.input_share, rel=1e-6)
    own = DiskCache(tmp_path / "own", Preprocessing(32))
    facts = Facts(0.5, 0.25, "brightness", "percentile")
    own.write("e", np.zeros((32, 32), np.float16), facts)
    assert own.check("e") == stored_facts(own.folder, ["e"])[0] == facts
    assert stored_facts(own.folder, ["missing"]) == [None]
    overwrite_header(own, "e", 0, b"MAMMOC01")  # an entry of the format before facts
    assert stored_facts(own.folder, ["e"]) == [None] and MAGIC != b"MAMMOC01"
    with pytest.raises(CacheEntryError, match="bad header"):
        own.check("e")
    overwrite_header(own, "e", 0, MAGIC)
    overwrite_header(own, "e", 21, bytes([9]))  # the chest-wall source's code (after magic, height,
    with pytest.raises(CacheEntryError, match="bad header"):  # width, CRC, dtype): out of range
        own.check("e")


@pytest.mark.parametrize(("orient", "flips"), [("left", False), ("none", True)])
def test_training_augmentation_flips_only_images_whose_chest_wall_was_not_oriented(
    dataset, make_datamodule, orient, flips
):
    """With data.orient=left every input has its chest wall on the left; a flipped training image
    would show it on the right, which no input does (tta=hflip is refused for the same reason)."""
    dm = make_datamodule(*dataset, setup=False, orient=orient)
    images = torch.zeros(64, 1, 32, 32)
    images[..., :16] = 0.8  # the chest wall's side bright
    torch.manual_seed(0)
    out = dm.augment(images)
    mirrored = out[..., 16:].mean(dim=(1, 2, 3)) > out[..., :16].mean(dim=(1, 2, 3))
    assert bool(mirrored.any()) == flips, int(mirrored.sum())


@pytest.mark.parametrize(("mode", "workers"), [("disk", 0), ("memory", 0), ("none", 2)])
def test_cached_batches_are_read_in_the_training_process(dataset, make_datamodule, mode, workers):
    """A cached image is read, not decoded: workers would only hand each batch over to the
    training process (scripts/bench_cache.py). They decode where there is no cache."""
    dm = make_datamodule(*dataset, cache_mode=mode, num_workers=2)
    assert dm.train_dataloader().num_workers == workers and dm.val_dataloader().num_workers == workers
    if mode == "disk":
        assert dm.cache_stats["built"] == 40  # the fill still uses data.num_workers
        assert dm.source.cache.threads == 2  # and reads each batch with as many threads
    loader = dm.train_dataloader()
    batches = list(loader.batch_sampler)  # the sampler's batches, each naming the next one
    assert [list(b) for b in batches] == list(BatchSampler(loader.batch_sampler.sampler, 64, False))
    assert [b.after for b in batches] == [list(b) for b in batches[1:]] + [[]]


def test_under_ddp_the_shard_stays_the_loaders_sampler():
    """Lightning looks for a ``DistributedSampler`` as the loader's ``sampler`` (else it puts in its
    own, with another seed)."""
    from torch.utils.data import DistributedSampler

    from mammo.data.datamodule import batch_loader
    from mammo.data.settings import LoaderSettings

    data = list(range(10))
    shard = DistributedSampler(data, num_replicas=2, rank=1, seed=42)
    loader = batch_loader(data, LoaderSettings(4, 0, "memory", None, False, 42), shard)
    assert loader.sampler is shard and [len(b) for b in loader] == [4, 1]


def small_cache(folder, threads: int, n: int = 24, size: int = 256):
    """A disk cache of ``n`` random ``size``-px images (keys ``k0``, ``k1``, ...), and the images."""
    from mammo.data.images import Facts, Preprocessing

    cache = DiskCache(folder, Preprocessing(size), threads)
    images = np.random.default_rng(0).random((n, size, size)).astype(np.float16)
    for i, image in enumerate(images):
        cache.write(f"k{i}", image, Facts())
    return cache, images


def test_threads_read_a_batch_as_one_thread_does_and_report_what_they_could_not(tmp_path):
    cache, images = small_cache(tmp_path, threads=2, size=320)  # entries of 200 KiB
    assert len(cache._parts(list(range(16)))) == 2 and len(cache._parts(list(range(4)))) == 1
    flip_payload_byte(cache, "k5")
    order = [7, 3, 12, 5, 0, 21, 9, 14, 1, 18, 2, 11, 23, 6, 17, 4]
    keys = [f"k{i}" for i in order]
    keys[6] = "not-cached"
    out, verified = np.zeros((16, 320, 320), np.float16), set()
    failed = cache.read_entries(keys, out, verified)
    assert cache.pool is not None  # the threads read it
    assert sorted(failed) == [3, 6]
    assert isinstance(failed[3], CacheEntryError) and "checksum mismatch" in str(failed[3])
    assert isinstance(failed[6], FileNotFoundError)
    good = [k for k in range(16) if k not in failed]
    np.testing.assert_array_equal(out[good], images[[order[k] for k in good]])
    assert verified == {keys[k] for k in good}
    from mammo.data.images import Preprocessing

    one, by_one = DiskCache(tmp_path, Preprocessing(320), threads=1), np.zeros_like(out)
    assert sorted(one.read_entries(keys, by_one, set())) == [3, 6] and one.pool is None
    np.testing.assert_array_equal(by_one[good], out[good])
    copy = pickle.loads(pickle.dumps(cache))  # as a spawned loader worker gets it: threads of its own
    assert copy.pool is None and not copy.read_entries(keys[:2], out[:2], set())


def test_a_batch_that_waits_for_the_disk_starts_the_next_batchs_reads(tmp_path, monkeypatch):
    """From a cold cache, the next batch's entries are advised at once, and go on being advised
    for a few batches (their reads were started early, so they need not wait themselves)."""
    import mammo.data.cache

    cache, _ = small_cache(tmp_path, threads=1, n=24, size=32)
    advised, cold = [], {"k0"}  # k0 is not in the page cache (simulated)
    monkeypatch.setattr(cache, "advise", lambda at: advised.append(sorted(a.offset for a in at)))
    real = mammo.data.cache._preadv

    def preadv(fd, buffers, offset, nowait):
        missing = nowait and offset == cache.index.locate("k0").offset and cold
        return None if missing else real(fd, buffers, offset, nowait)

    monkeypatch.setattr(mammo.data.cache, "_preadv", preadv)
    offsets = {f"k{i}": cache.index.locate(f"k{i}").offset for i in range(24)}
    batches = [[f"k{i}", f"k{i + 1}"] for i in range(0, 24, 2)]
    out = np.zeros((2, 32, 32), np.float16)
    for n, batch in enumerate(batches[:-1]):
        cache.read_entries(batch, out, set(), after=batches[n + 1])
        cold.clear()
    expected = [
        [offsets["k0"], offsets["k1"]],  # the miss: the rest of its batch
        [offsets["k2"], offsets["k3"]],  # and the next batch
    ] + [sorted(offsets[k] for k in batches[n + 1]) for n in range(1, 1 + COLD_BATCHES)]
    assert advised == expected  # then, the cache warm again, nothing more
    advised.clear()
    cache.read_entries(batches[0], out, set(), after=batches[1])
    assert advised == []  # warm: no system call per entry


def test_a_per_file_cache_of_an_older_mammo_is_moved_into_the_pack(dataset, make_datamodule, caplog):
    """Its entries are whole (checked to the CRC) and moved, or damaged and rebuilt: never a wrong
    image, and the old files are gone afterwards."""
    import zlib

    first = make_datamodule(*dataset, cache_mode="disk")
    reference, cache, keys = val_images(first), first.source.cache, first.source.entries
    old_files = []
    for key in keys:  # the layout before the pack: one file per image, named by its key
        image, made = cache.read(key), cache.check(key)
        payload = image.tobytes()
        header = HEADER.pack(MAGIC, 32, 32, zlib.crc32(payload), 1, 1, 1, made.crop_share, made.input_share)
        old_files.append(cache.folder / key)
        old_files[-1].write_bytes(header + payload)
    for path in [*shards(cache.folder), *cache.folder.glob("*.idx")]:
        path.unlink()
    damaged = bytearray(old_files[0].read_bytes())
    damaged[-10] ^= 0xFF
    old_files[0].write_bytes(bytes(damaged))
    with caplog.at_level(logging.INFO, logger="mammo"):
        second = make_datamodule(*dataset, cache_mode="disk")
    assert second.cache_stats["reused"] == 39 and second.cache_stats["regenerated"] == 1
    assert "Moved 39 entries of the per-file disk cache into the packed cache" in caplog.text
    assert not any(path.exists() for path in old_files)
    third = make_datamodule(*dataset, cache_mode="disk")
    assert third.cache_stats["reused"] == 40 and torch.equal(val_images(third), reference)


def test_a_removed_cache_folder_is_rebuilt_by_the_next_run_and_a_running_one_keeps_reading(
    dataset, make_datamodule
):
    import shutil

    dm = make_datamodule(*dataset, cache_mode="disk")
    reference = val_images(dm)
    shutil.rmtree(dm.source.cache.folder.parent.parent)  # rm -rf outputs/*/cache
    assert torch.equal(val_images(dm), reference)  # open shards are still read
    again = make_datamodule(*dataset, cache_mode="disk")
    assert again.cache_stats["built"] == 40 and torch.equal(val_images(again), reference)


def test_a_dropped_cache_leaves_no_shard_open(dataset, make_datamodule):
    """A run's folds and trials each build a cache: the shards it opened close with it."""
    import gc

    make_datamodule(*dataset, cache_mode="disk")  # built: the next one only reads
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))
    dm = make_datamodule(*dataset, cache_mode="disk")
    val_images(dm)
    assert len(os.listdir("/proc/self/fd")) > before  # its shard, open while it is used
    del dm
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == before
