"""walk_trees keeps what is reachable as bitmaps over the index, not a Python object per blob."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Iterable, Iterator
from typing import cast

from jobs.repository.index import Index, Location
from jobs.repository.maintenance import walk_trees
from jobs.repository.repository import Repository
from jobs.repository.tree import Node, encode_tree

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
