"""The multi-process filesystem backup (jobs.engine.procs) against a real repository on file storage.

Worker processes are forked for real: the same trees as single-process backups (entry for
entry), hardlinks whose names the different workers list, parent reuse, excludes, blobs that two
workers both stored (check, prune and restore with those duplicates), and what the caller sees
when a worker fails, dies or is canceled."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.engine import backup as backup_module
from jobs.engine.api import DataPathOptions, backup, init_repository, restore
from jobs.engine.backup import load_entries
from jobs.errors import CanceledError, MoverError, VolumeIOError
from jobs.repository.index import decode_index
from jobs.repository.maintenance import check, prune
from jobs.repository.repository import Repository
from jobs.repository.tree import NODE_DIR, Node
from jobs.volume.patterns import PathFilter
from tests.unit.jobs.volume.treecompare import compare_trees, make_sample_tree

PASSWORD = "procs"
TWO = DataPathOptions(processes=2, parallel=2)
ONE = DataPathOptions(processes=1, parallel=2)


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    repository = init_repository(f"file://{tmp_path / 'repo'}", PASSWORD)
    yield repository
    repository.close()


def wide_tree(root: Path, *, dirs: int = 24, files: int = 30, same: bool = False) -> None:
    """``dirs`` directories (some nested) of ``files`` small files each; ``same``: every
    directory holds the same contents (the workers then meet the same new chunks)."""
    for d in range(dirs):
        sub = root / f"d{d:02}" / ("inner" if d % 3 == 0 else "")
        sub.mkdir(parents=True, exist_ok=True)
        for f in range(files):
            seed = f if same else d * 1000 + f
            (sub / f"f{f:03}").write_bytes(b"%d-" % seed * (50 + seed % 200))
    (root / "top.txt").write_bytes(b"top")
    (root / "empty").mkdir()


def all_nodes(repo: Repository, tree: str | None, path: str = "") -> dict[str, Node]:
    """Every entry of a snapshot by path, atime left out (reading a directory changes it)."""
    out: dict[str, Node] = {}
    for name, node in load_entries(repo, tree).items():
        node.atime_ns = 0
        out[f"{path}/{name}"] = node
        if node.type == NODE_DIR:
            out.update(all_nodes(repo, node.subtree, f"{path}/{name}"))
            node.subtree = None  # compared through its entries
    return out


def snapshot_root(repo: Repository, snapshot_id: str) -> str:
    return repo.load_snapshot(snapshot_id).root


def test_the_trees_are_those_of_a_single_process_backup(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_sample_tree(src)
    wide_tree(src / "wide")
    two = backup(repo, src, options=TWO, parent="none")
    one = backup(repo, src, options=ONE, parent="none")
    assert (two.files, two.dirs) == (one.files, one.dirs)
    assert all_nodes(repo, snapshot_root(repo, two.snapshot_id)) == all_nodes(
        repo, snapshot_root(repo, one.snapshot_id)
    )
    target = tmp_path / "restored"
    restore(repo, two.snapshot_id, target)
    assert compare_trees(src, target) == []


def test_hardlinks_listed_by_different_workers_are_stored_once(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    wide_tree(src, dirs=12, files=3)
    for i in range(16):  # every file has a name in several directories: both workers list some
        first = src / f"d{i % 12:02}" / f"link{i}"
        first.write_bytes(os.urandom(3000 + i))
        for d in (i + 1, i + 5, i + 7):
            os.link(first, src / f"d{d % 12:02}" / f"other{i}-{d}")
    result = backup(repo, src, options=TWO)
    target = tmp_path / "restored"
    restore(repo, result.snapshot_id, target)
    assert compare_trees(src, target) == []  # includes the hardlink groups
    nodes = all_nodes(repo, snapshot_root(repo, result.snapshot_id))
    for i in range(16):
        names = [n for p, n in nodes.items() if p.endswith((f"/link{i}",)) or f"/other{i}-" in p]
        assert len(names) == 4
        assert len({tuple(n.content) for n in names}) == 1  # one content for every name
    # every file was stored once (all contents differ): the new bytes are those of each inode once
    files = [p.lstat() for p in src.rglob("*") if p.is_file()]
    inodes = {(st.st_dev, st.st_ino): st.st_size for st in files}
    assert result.incremental_bytes == sum(inodes.values())


def test_second_backup_reuses_the_parent_and_stores_nothing(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_sample_tree(src)
    wide_tree(src / "wide")
    first = backup(repo, src, options=TWO)
    second = backup(repo, src, options=TWO)
    assert second.parent_id == first.snapshot_id
    assert second.incremental_bytes == 0
    first_nodes = all_nodes(repo, snapshot_root(repo, first.snapshot_id))
    assert all_nodes(repo, snapshot_root(repo, second.snapshot_id)) == first_nodes
    (src / "wide" / "d05" / "f001").write_bytes(b"changed")
    third = backup(repo, src, options=TWO)
    assert third.incremental_bytes == len(b"changed")
    target = tmp_path / "restored"
    restore(repo, third.snapshot_id, target)
    assert compare_trees(src, target) == []


def test_excludes_apply_in_every_worker(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    wide_tree(src)
    result = backup(repo, src, options=TWO, excludes=PathFilter.compile(["d0*/inner", "*/f00[0-4]"]))
    paths = set(all_nodes(repo, snapshot_root(repo, result.snapshot_id)))
    assert "/./d03/inner" not in paths and "/./d12/inner" in paths
    excluded = {f"/./d{d:02}/f00{i}" for d in range(24) for i in range(5)}
    assert not paths & excluded
    assert "/./d12/inner/f000" in paths and "/./d11/f005" in paths  # "*" is one path component


def test_chunks_stored_by_two_workers_are_harmless_duplicates(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    wide_tree(src, same=True)
    first = backup(repo, src, options=TWO)
    entries = [decode_index(repo.keys.encryption, n, repo.storage.get(n)).entries for n in repo.index_files]
    ids = [cid for file in entries for cid, _ in file]
    assert len(ids) > len(set(ids))  # some chunk is in two index files (and two packs)
    report = check(repo, read_data=True)
    assert report.ok, report.errors
    (src / "d01" / "f000").write_bytes(b"new")
    second = backup(repo, src, options=TWO)
    repo.forget([first.snapshot_id])
    prune(repo)
    repo.reload_index()
    report = check(repo, read_data=True)
    assert report.ok, report.errors
    target = tmp_path / "restored"
    restore(repo, second.snapshot_id, target)
    assert compare_trees(src, target) == []


def _poison(monkeypatch: pytest.MonkeyPatch, name: str, action: str) -> None:
    """Make whichever worker opens the file ``name`` fail (VolumeIOError) or die (SIGKILL)."""
    real = backup_module.open_for_read

    def open_for_read(path: str) -> int:
        if os.path.basename(path) == name:
            if action == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise VolumeIOError(f"{path}: read error at offset 0: Input/output error")
        return real(path)

    monkeypatch.setattr(backup_module, "open_for_read", open_for_read)


def test_a_worker_error_reaches_the_caller_as_is_and_no_snapshot_is_written(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    wide_tree(src)
    _poison(monkeypatch, "f007", "error")
    with pytest.raises(VolumeIOError, match="f007: read error at offset 0: Input/output error"):
        backup(repo, src, options=TWO)
    assert repo.snapshot_ids() == []


def test_a_killed_worker_fails_the_backup_clearly_and_no_snapshot_is_written(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    wide_tree(src)
    (src / "d17" / "zz-poison").write_bytes(b"x")
    _poison(monkeypatch, "zz-poison", "kill")
    with pytest.raises(MoverError, match=r"worker process \(pid \d+\) was killed by signal 9 \(SIGKILL\)") as e:
        backup(repo, src, options=TWO)
    assert "no snapshot was written" in str(e.value)
    assert repo.snapshot_ids() == []
    monkeypatch.undo()
    again = backup(repo, src, options=TWO)  # the repository is fine for the next run
    target = tmp_path / "restored"
    restore(repo, again.snapshot_id, target)
    assert compare_trees(src, target) == []


def test_cancel_stops_every_worker_and_a_retry_reuses_what_was_uploaded(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    wide_tree(src)
    (src / "d20" / "zz-slow").write_bytes(b"slow")
    real = backup_module.open_for_read

    def slow_open(path: str) -> int:  # the backup cannot complete before the cancel
        if path.endswith("zz-slow"):
            threading.Event().wait(3.0)
        return real(path)

    monkeypatch.setattr(backup_module, "open_for_read", slow_open)
    cancel = threading.Event()
    timer = threading.Timer(0.5, cancel.set)
    timer.start()
    with pytest.raises(CanceledError):
        backup(repo, src, options=TWO, cancel=cancel)
    timer.join()
    assert repo.snapshot_ids() == []
    assert repo.index_files  # the workers indexed what they had uploaded
    monkeypatch.undo()
    result = backup(repo, src, options=TWO)
    assert result.incremental_bytes < sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    target = tmp_path / "restored"
    restore(repo, result.snapshot_id, target)
    assert compare_trees(src, target) == []
