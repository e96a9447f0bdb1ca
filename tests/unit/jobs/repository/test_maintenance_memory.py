"""walk_trees keeps what is reachable as bitmaps over the index, not a Python object per blob;
prune repacks without an entry per repacked blob."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import cast

from jobs.repository.config import MiB
from jobs.repository.crypto import KdfParams
from jobs.repository.index import Index, Location
from jobs.repository.maintenance import check, prune, walk_trees
from jobs.repository.repository import Repository
from jobs.repository.snapshots import SnapshotManifest
from jobs.repository.tree import NODE_DIR, NODE_FILE, Node, encode_tree
from jobs.storage.file import FileStorage

DIRS = 200
FILES_PER_DIR = 1000
# The previous sets of ids took ~25 MB for these 200,000 data blobs.
MAX_TRACED_BYTES = 6 * 1024 * 1024


def _cid(i: int) -> bytes:
    return hashlib.blake2b(i.to_bytes(8, "little"), digest_size=32).digest()


class _TreeRepo:
    """Just what walk_trees reads: the index and tree blobs by id."""

    def __init__(self, index: Index, trees: dict[str, bytes]) -> None:
        self.index = index
        self.trees = trees

    def load_blobs(self, chunk_ids: Iterable[str], *, parallel: int = 4) -> Iterator[tuple[str, bytes]]:
        return ((tid, self.trees[tid]) for tid in chunk_ids)

    def load_blob(self, chunk_id: str) -> bytes:
        return self.trees[chunk_id]


def test_walk_trees_over_200k_blobs_is_bounded_and_finds_missing_ones() -> None:
    index = Index()
    trees: dict[str, bytes] = {}
    loc = Location("data/00/pack", 0, 0, 100, 100, False)
    subtrees: list[Node] = []
    missing = _cid(10**9)
    for d in range(DIRS):
        files = [
            Node(name=f"f{f}", type="file", content=[(_cid(d * FILES_PER_DIR + f).hex(), 100)])
            for f in range(FILES_PER_DIR)
        ]
        if d == 0:
            files.append(Node(name="lost", type="file", content=[(missing.hex(), 100)]))
        tid = _cid(-(d + 1) % 2**63)
        trees[tid.hex()] = encode_tree(files)
        subtrees.append(Node(name=f"d{d}", type="dir", subtree=tid.hex()))
    root = _cid(2**62)
    trees[root.hex()] = encode_tree(subtrees)
    for i in range(DIRS * FILES_PER_DIR):
        if i % 10:  # every tenth blob is not indexed but the rest are
            index.add(_cid(i), loc)
    for tid in trees:
        index.add(bytes.fromhex(tid), loc)
    index.add(_cid(10**9 + 1), loc)  # indexed, unreferenced

    tracemalloc.start()
    try:
        tree_ids, data_ids = walk_trees(cast(Repository, _TreeRepo(index, trees)), [root.hex()])
        _traced, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= MAX_TRACED_BYTES
    assert all(tree_ids.has_record(index.number(bytes.fromhex(t)) or 0) for t in trees)
    assert data_ids.outside == {_cid(i) for i in range(0, DIRS * FILES_PER_DIR, 10)} | {missing}
    numbers = [index.number(_cid(i)) for i in range(DIRS * FILES_PER_DIR) if i % 10]
    assert all(r is not None and data_ids.has_record(r) for r in numbers)
    unreferenced = index.number(_cid(10**9 + 1))
    assert unreferenced is not None
    assert not data_ids.has_record(unreferenced) and not tree_ids.has_record(unreferenced)


PRUNE_DIRS = 40  # 40,000 small files in directories of 1,000
# Prune repacking the 20,000 live blobs of 40,000 peaks at ~10.6 MB traced (the index, a pack
# read, the open packs' entries, one index file encoded). The previous code held an (id,
# Location) pair per repacked blob until its index was written (15.6 MB here) and its tree
# walk's read buffers took 8 MiB per loading thread whatever the ranges (24.2 MB).
MAX_PRUNE_TRACED_BYTES = 12.5 * 1024 * 1024


def _snapshot(repo: Repository, files: list[list[bytes]]) -> str:
    """A snapshot of one directory per list of file contents."""
    dirs = []
    for d, contents in enumerate(files):
        nodes = []
        for f, data in enumerate(contents):
            cid = repo.chunk_id(data)
            repo.add_blob("data", cid, data)
            nodes.append(Node(name=f"f{f:04d}", type=NODE_FILE, size=len(data), content=[(cid, len(data))]))
        raw = encode_tree(nodes)
        tid = repo.chunk_id(raw)
        repo.add_blob("tree", tid, raw)
        dirs.append(Node(name=f"d{d:03d}", type=NODE_DIR, subtree=tid))
    top = encode_tree(dirs)
    root = repo.chunk_id(top)
    repo.add_blob("tree", root, top)
    repo.flush()
    return repo.save_snapshot(SnapshotManifest(source="/src", root=root))


def test_prune_repacking_20k_live_blobs_holds_no_entry_per_blob(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path / "repo")
    repo = Repository.init(storage, "pw", kdf_params=KdfParams(n=1 << 10, r=8, p=1), pack_target_bytes=1 * MiB)
    contents = [[os.urandom(60) for _ in range(1000)] for _ in range(PRUNE_DIRS)]
    first = _snapshot(repo, contents)
    kept = [c[::2] for c in contents]  # every other file: every pack is half unused
    second = _snapshot(repo, kept)
    repo.forget([first])
    repo.close()
    repo = Repository.open(storage, "pw", upload_parallel=2)
    tracemalloc.start()
    try:
        stats = prune(repo)
        _traced, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stats.packs_repacked >= 1 and stats.blobs_removed >= 20_000, stats
    assert peak <= MAX_PRUNE_TRACED_BYTES, peak
    reopened = Repository.open(storage, "pw")
    assert [s.id for s in reopened.list_snapshots()] == [second]
    assert len(reopened.index) == 20_000 + PRUNE_DIRS + 1
    assert check(reopened, read_data=True).errors == []
