"""Restore of a snapshot with many entries: memory does not grow with the file count, and the
tree comes back entry by entry (hardlinks across directories, symlinks, directory times)."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

from jobs.engine.backup import store_tree
from jobs.engine.pipeline import Abort
from jobs.engine.progress import ProgressTracker
from jobs.engine.restore import RESTORE_BATCH_FILES, restore_filesystem
from jobs.repository.tree import NODE_DIR, NODE_FILE, NODE_SYMLINK, Node
from tests.unit.jobs.engine.fakerepo import FakeRepository

DIRS = 96
FILES_PER_DIR = 500  # 48,000 files: about three restore batches
CONTENTS = [b"content %d\n" % i * (i + 1) for i in range(8)]
MTIME_NS = 1_600_000_000_123_456_789
# Planning every file at once (the previous restore) peaked at ~60 MiB traced for this tree.
MAX_TRACED_PEAK_BYTES = 40 * 1024 * 1024


def _file(name: str, i: int, refs: list[tuple[str, int]], *, linked: bool) -> Node:
    cid, length = refs[i % len(refs)]
    return Node(
        name,
        NODE_FILE,
        mode=0o640,
        size=length,
        mtime_ns=MTIME_NS,
        content=[(cid, length)],
        inode=i + 1,
        dev=1,
        nlink=2 if linked else 1,
    )


def _snapshot(repo: FakeRepository) -> str:
    """Directories of files sharing a few blobs; every 50th file also linked from the next directory."""
    refs = []
    for data in CONTENTS:
        cid = repo.chunk_id(data)
        repo.add_blob("data", cid, data)
        refs.append((cid, len(data)))
    dirs = []
    for d in range(DIRS):
        nodes = [_file(f"f{f:04d}", d * FILES_PER_DIR + f, refs, linked=f % 50 == 0) for f in range(FILES_PER_DIR)]
        if d:  # the other names of the previous directory's linked files
            nodes += [
                _file(f"link{f:04d}", (d - 1) * FILES_PER_DIR + f, refs, linked=True)
                for f in range(0, FILES_PER_DIR, 50)
            ]
        nodes.append(Node("sym", NODE_SYMLINK, target=f"f{d:04d}", mtime_ns=MTIME_NS))
        tree, _ = store_tree(repo, nodes)
        dirs.append(Node(f"d{d:03d}", NODE_DIR, mode=0o750, mtime_ns=MTIME_NS + d, subtree=tree))
    top, _ = store_tree(repo, dirs)
    root, _ = store_tree(repo, [Node(".", NODE_DIR, mode=0o755, mtime_ns=MTIME_NS, subtree=top)])
    return root


def test_restore_of_many_files_is_bounded_and_faithful(tmp_path: Path) -> None:
    assert DIRS * FILES_PER_DIR > 2 * RESTORE_BATCH_FILES
    repo = FakeRepository()
    root = _snapshot(repo)
    target = tmp_path / "out"
    tracemalloc.start()
    try:
        stats = restore_filesystem(
            repo, root, str(target), parallel=2, write_sparse=True, progress=ProgressTracker(None), abort=Abort(None)
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= MAX_TRACED_PEAK_BYTES
    assert stats.files == DIRS * FILES_PER_DIR + (DIRS - 1) * (FILES_PER_DIR // 50)
    for d in range(DIRS):
        sub = target / f"d{d:03d}"
        st = os.lstat(sub)
        assert (st.st_mode & 0o7777, st.st_mtime_ns) == (0o750, MTIME_NS + d)  # set after its contents
        assert os.readlink(sub / "sym") == f"f{d:04d}"
        for f in (0, 7, FILES_PER_DIR - 1):
            i = d * FILES_PER_DIR + f
            p = sub / f"f{f:04d}"
            fst = os.lstat(p)
            assert p.read_bytes() == CONTENTS[i % len(CONTENTS)]
            assert (fst.st_mode & 0o7777, fst.st_mtime_ns) == (0o640, MTIME_NS)
        if d:
            for f in range(0, FILES_PER_DIR, 50):
                first = os.lstat(target / f"d{d - 1:03d}" / f"f{f:04d}")
                other = os.lstat(sub / f"link{f:04d}")
                assert (other.st_ino, other.st_nlink) == (first.st_ino, 2)


def test_consecutive_directories_of_small_files_go_to_different_writers(tmp_path: Path) -> None:
    # The blobs arrive directory by directory (backup order): with a directory per writer chosen
    # by hash, neighbouring directories often shared a writer and the other one idled.
    from jobs.engine.restore import WRITERS, _Batch, _plan_file
    from jobs.volume.metadata import CreationRules

    batch, rules = _Batch(), CreationRules.probe(str(tmp_path))
    dirs = [str(tmp_path / f"d{d}") for d in range(8)]
    for d in dirs:
        for f in range(3):
            node = Node(f"f{f}", NODE_FILE, mode=0o640, size=100, content=[(f"{d}{f}", 100)])
            _plan_file(batch, f"{d}/f{f}", node, d, {}, fresh=True, rules=rules)
    shard = batch.plan.shard_filesystem
    writer_of = [{shard(f"{d}/f{f}", 0) % WRITERS for f in range(3)} for d in dirs]
    assert all(len(w) == 1 for w in writer_of)  # one writer per directory
    assert all(writer_of[i] != writer_of[i + 1] for i in range(len(dirs) - 1))
