"""Round trips through the real repository on a file:// storage, via the engine API.

Fidelity (bytes and metadata of every entry), dedup acceptance figures of issue 3, incremental
backups that do not read unchanged files, block volumes on an image file and on a loop device,
cancellation that leaves no snapshot behind.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.contract import TAG_SOURCE_NAMESPACE, TAG_SOURCE_PVC
from jobs.engine.api import DataPathOptions, backup, init_repository, open_repository, restore
from jobs.errors import CanceledError
from jobs.repository.maintenance import check
from jobs.repository.repository import Repository
from jobs.volume.source import bytes_read_total
from tests.unit.jobs.volume.treecompare import (
    IS_ROOT,
    MiB,
    allocated_bytes,
    compare_trees,
    make_sample_tree,
    write_sparse,
)

pytestmark = pytest.mark.integration
PASSWORD = "correct horse battery staple"
OPTIONS = DataPathOptions(parallel=2)


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    url = f"file://{tmp_path}/repo"
    init_repository(url, PASSWORD).close()
    r = open_repository(url, PASSWORD)
    yield r
    r.close()


def _stored_size(repo: Repository) -> int:
    return sum(o.size for o in repo.storage.list(""))


def test_filesystem_round_trip_is_faithful(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_sample_tree(src)
    result = backup(repo, src, options=OPTIONS)
    assert result.files > 15
    assert result.parent_id is None
    target = tmp_path / "restored"
    restored = restore(repo, result.snapshot_id[:12], target, options=OPTIONS)
    assert restored.snapshot_id == result.snapshot_id
    assert compare_trees(src, target) == []
    assert allocated_bytes(target / "sparse.img") < MiB
    assert check(repo, read_data=True).errors == []


def test_unchanged_second_upload_adds_under_one_percent(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_sample_tree(src, large_bytes=8 * MiB)
    backup(repo, src, options=OPTIONS)
    first = _stored_size(repo)
    before = bytes_read_total()
    second = backup(repo, src, options=OPTIONS)
    assert bytes_read_total() == before  # parent auto: same source path, nothing re-read
    assert second.parent_id is not None
    assert second.incremental_bytes == 0
    assert _stored_size(repo) - first < 0.01 * first


def test_insert_100_bytes_at_start_of_64_mib_file_stores_under_ten_percent(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = random.Random(1).randbytes(64 * MiB)
    (src / "big").write_bytes(data)
    backup(repo, src, options=OPTIONS)
    first = _stored_size(repo)
    (src / "big").write_bytes(os.urandom(100) + data)
    second = backup(repo, src, options=OPTIONS)
    assert _stored_size(repo) - first < 0.10 * first
    assert second.incremental_bytes < 0.10 * len(data)
    target = tmp_path / "out"
    restore(repo, second.snapshot_id, target, options=OPTIONS)
    assert (target / "big").read_bytes()[100:] == data


def test_parent_auto_follows_source_tags_and_skips_unchanged_files(repo: Repository, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "f").write_bytes(os.urandom(3 * MiB))
    tags_a = {TAG_SOURCE_NAMESPACE: "ns", TAG_SOURCE_PVC: "a"}
    tags_b = {TAG_SOURCE_NAMESPACE: "ns", TAG_SOURCE_PVC: "b"}
    first_a = backup(repo, a, tags=tags_a, options=OPTIONS)
    first_b = backup(repo, b, tags=tags_b, options=OPTIONS)
    (a / "g").write_bytes(b"new file")
    before = bytes_read_total()
    second_a = backup(repo, a, tags=tags_a, options=OPTIONS)
    assert second_a.parent_id == first_a.snapshot_id
    assert bytes_read_total() - before == len(b"new file")
    assert second_a.incremental_bytes == len(b"new file")
    none = backup(repo, b, tags=tags_b, parent="none", options=OPTIONS)
    assert none.parent_id is None
    explicit = backup(repo, b, tags=tags_b, parent=first_b.snapshot_id, options=OPTIONS)
    assert explicit.parent_id == first_b.snapshot_id


def test_parent_written_by_another_mover_after_open_is_used(repo: Repository, tmp_path: Path) -> None:
    """Two movers of one repository: the second opened it before the first wrote its snapshot and
    index, then picks that snapshot as parent (seen in the 20-DataUpload e2e run: the parent's tree
    was in no index the second mover had read)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(2 * MiB))
    tags = {TAG_SOURCE_NAMESPACE: "ns", TAG_SOURCE_PVC: "data"}
    other = Repository.open(repo.storage, PASSWORD)
    try:
        first = backup(other, src, tags=tags, options=OPTIONS)
    finally:
        other.close()
    before = bytes_read_total()
    second = backup(repo, src, tags=tags, options=OPTIONS)  # `repo` still has the index of before
    assert second.parent_id == first.snapshot_id
    assert bytes_read_total() - before == 0 and second.incremental_bytes == 0
    restore(repo, second.snapshot_id, tmp_path / "out", options=OPTIONS)
    assert (tmp_path / "out" / "f").read_bytes() == (src / "f").read_bytes()


def test_incremental_after_rename_delete_truncate_restores(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_sample_tree(src)
    backup(repo, src, options=OPTIONS)
    os.rename(src / "large.bin", src / "dir" / "renamed.bin")
    os.unlink(src / "text.log")
    shutil.rmtree(src / "dir" / "nested")
    os.truncate(src / "hard-a", 10)
    (src / "sparse.img").write_bytes(b"no longer sparse")
    result = backup(repo, src, options=OPTIONS)
    assert result.parent_id is not None
    target = tmp_path / "out"
    restore(repo, result.snapshot_id, target, options=OPTIONS)
    assert compare_trees(src, target) == []


def test_block_image_round_trip_is_identical_and_sparse(repo: Repository, tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    rng = random.Random(2)
    write_sparse(image, 48 * MiB, [(0, rng.randbytes(2 * MiB)), (30 * MiB + 5, rng.randbytes(100_000))])
    with open(image, "r+b") as f:  # a written run of zeros, not a hole: still never stored
        f.seek(10 * MiB)
        f.write(bytes(4 * MiB))
    result = backup(repo, image, mode="block", options=OPTIONS)
    assert result.total_bytes == 48 * MiB
    assert result.incremental_bytes <= 4 * MiB
    target = tmp_path / "restored.img"
    restore(repo, result.snapshot_id, target, mode="block", options=OPTIONS)
    assert target.read_bytes() == image.read_bytes()
    assert allocated_bytes(target) <= 4 * MiB


@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT or shutil.which("losetup") is None, reason="needs root and losetup")
def test_block_round_trip_on_a_loop_device(repo: Repository, tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    write_sparse(image, 16 * MiB, [(MiB, os.urandom(3 * MiB))])
    backing = tmp_path / "target-backing.img"
    backing.write_bytes(b"\xff" * (16 * MiB))  # garbage the restore must zero where the source has zeros
    try:
        dev = subprocess.run(
            ["losetup", "--find", "--show", str(backing)], check=True, capture_output=True, text=True
        ).stdout.strip()
    except (subprocess.CalledProcessError, OSError) as e:
        pytest.skip(f"no loop device available here: {e}")
    try:
        src_result = backup(repo, image, mode="block", options=OPTIONS)
        restore(repo, src_result.snapshot_id, Path(dev), mode="block", options=OPTIONS)
        with open(dev, "rb") as f:
            assert f.read(16 * MiB) == image.read_bytes()
    finally:
        subprocess.run(["losetup", "--detach", dev], check=False)


def test_cancel_writes_no_snapshot_and_leaves_the_repository_consistent(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_sample_tree(src)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CanceledError):
        backup(repo, src, options=OPTIONS, cancel=cancel)
    assert repo.list_snapshots() == []
    assert check(repo, read_data=True).errors == []
    result = backup(repo, src, options=OPTIONS)  # the lock was released
    assert result.snapshot_id
