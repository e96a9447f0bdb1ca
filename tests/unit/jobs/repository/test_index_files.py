"""Reloading the index files: superseded and damaged files left out whatever their names, and a
peak that is the index plus a few files, not every file held at once."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from pathlib import Path

import pytest

from jobs.repository.index import INDEX_PREFIX, Location, encode_index
from jobs.repository.index_files import IndexFiles
from jobs.storage.file import FileStorage

KEY = bytes(range(32))
FILES = 40
PER_FILE = 5000
# The previous reload held every file's rows (50 bytes a blob) besides the index it built
# (60 bytes a blob here): 14.0 MB traced at its peak for these 200,000 blobs (9.5 MB now).
MAX_RELOAD_PEAK_BYTES = 11 * 1024 * 1024


def _cid(i: int) -> bytes:
    return hashlib.blake2b(i.to_bytes(8, "little"), digest_size=32).digest()


def _loc(pack: str, i: int) -> Location:
    return Location(pack, i % 2, i * 1000, 900, 1800, bool(i % 3))


def _put(storage: FileStorage, name: str, entries: list[tuple[bytes, Location]], supersedes: list[str]) -> None:
    storage.put(INDEX_PREFIX + name, encode_index(KEY, INDEX_PREFIX + name, entries, supersedes))


@pytest.mark.parametrize("new_name", ["0" * 32, "f" * 32])
def test_a_superseded_file_is_left_out_whether_it_sorts_before_or_after_its_successor(
    tmp_path: Path, new_name: str
) -> None:
    storage = FileStorage(tmp_path)
    old = "8" * 32
    _put(storage, old, [(_cid(i), _loc("data/00/old", i)) for i in range(100)], [])
    _put(storage, new_name, [(_cid(i), _loc("data/00/new", i)) for i in range(50)], [INDEX_PREFIX + old])
    files = IndexFiles(storage, KEY)
    assert files.reload() == []
    assert files.names == [INDEX_PREFIX + new_name]
    assert len(files.index) == 50
    assert all(files.index.get(_cid(i)) == _loc("data/00/new", i) for i in range(50))
    assert _cid(70) not in files.index


def test_a_damaged_file_is_skipped_and_named(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    _put(storage, "1" * 32, [(_cid(i), _loc("data/00/a", i)) for i in range(10)], [])
    storage.put(INDEX_PREFIX + "2" * 32, b"not an index file at all, just bytes")
    files = IndexFiles(storage, KEY)
    assert files.reload() == [INDEX_PREFIX + "2" * 32]
    assert files.names == [INDEX_PREFIX + "1" * 32]
    assert all(files.index.get(_cid(i)) == _loc("data/00/a", i) for i in range(10))


def test_reload_of_many_files_holds_only_a_few_of_them(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    for f in range(FILES):
        entries = [(_cid(i), _loc(f"data/{f:02x}/p", i)) for i in range(f * PER_FILE, (f + 1) * PER_FILE)]
        _put(storage, os.urandom(16).hex(), entries, [])
    files = IndexFiles(storage, KEY)
    tracemalloc.start()
    try:
        assert files.reload() == []
        _traced, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(files.index) == FILES * PER_FILE
    assert files.index.get(_cid(123_456)) == _loc(f"data/{123_456 // PER_FILE:02x}/p", 123_456)
    assert files.index.bytes_per_blob() <= 40
    assert peak <= MAX_RELOAD_PEAK_BYTES, peak
