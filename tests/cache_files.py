"""Damage a packed disk cache the ways disks and crashes do, entry by entry (for the tests)."""

from __future__ import annotations

from pathlib import Path

from mammo.data.cache import HEADER


def where(cache, key: str) -> tuple[Path, int]:
    """The shard file that holds entry ``key`` and the entry's offset in it."""
    location = cache.index.locate(key)
    assert location is not None, f"{key} is not in the cache"
    return cache.folder / location.shard, location.offset


def last_in_its_shard(cache, keys: list[str]) -> str:
    """The key of ``keys`` stored last in its shard (cutting the shard's end cuts it alone)."""
    return max(keys, key=lambda k: (where(cache, k)[1], str(where(cache, k)[0])))


def truncate(cache, key: str, keep: int = 100) -> None:
    """Cut the shard of ``key``, which must be its last entry, ``keep`` bytes into the entry."""
    shard, offset = where(cache, key)
    with open(shard, "r+b") as f:
        f.truncate(offset + keep)


def flip_payload_byte(cache, key: str) -> None:
    """One flipped byte of the entry's image: same size and header, wrong checksum."""
    shard, offset = where(cache, key)
    with open(shard, "r+b") as f:
        f.seek(offset + cache.nbytes - 10)
        byte = f.read(1)[0]
        f.seek(offset + cache.nbytes - 10)
        f.write(bytes([byte ^ 0xFF]))


def overwrite_header(cache, key: str, at: int, data: bytes) -> None:
    """Overwrite ``data`` ``at`` bytes into the entry's header."""
    assert at + len(data) <= HEADER.size
    shard, offset = where(cache, key)
    with open(shard, "r+b") as f:
        f.seek(offset + at)
        f.write(data)


def shards(folder: Path) -> list[Path]:
    return sorted(Path(folder).glob("*.pack"))
