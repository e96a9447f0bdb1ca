"""The backup and restore pipelines against an in-memory repository: fidelity, sparse, hardlinks,
incremental (unchanged files are not read), dedup, block volumes, cancellation, integrity."""

from __future__ import annotations

import os
import random
import shutil
import threading
from pathlib import Path

import pytest

from jobs.engine.backup import FilesystemBackup, TreeStats, backup_block
from jobs.engine.pipeline import Abort
from jobs.engine.progress import Progress, ProgressTracker
from jobs.engine.restore import restore_block, restore_filesystem
from jobs.errors import CanceledError, IntegrityError, StorageUnavailableError, UsageError, VolumeIOError
from jobs.volume.source import bytes_read_total
from tests.unit.jobs.engine.fakerepo import FakeRepository, MiB
from tests.unit.jobs.volume.treecompare import IS_ROOT, allocated_bytes, compare_trees, make_sample_tree, write_sparse


def run_backup(
    repo: FakeRepository,
    source: Path,
    *,
    parent: str | None = None,
    cancel: threading.Event | None = None,
    parallel: int = 2,
    budget: int = 64 * MiB,
) -> tuple[TreeStats, Progress]:
    progress = ProgressTracker(None)
    stats = FilesystemBackup(
        repo,
        str(source),
        parallel=parallel,
        memory_budget_bytes=budget,
        progress=progress,
        abort=Abort(cancel),
        parent_root=parent,
    ).run()
    return stats, progress.finish()


def run_restore(repo: FakeRepository, root: str, target: Path, *, write_sparse: bool = True) -> None:
    restore_filesystem(
        repo,
        root,
        str(target),
        parallel=3,
        write_sparse=write_sparse,
        progress=ProgressTracker(None),
        abort=Abort(None),
    )


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    make_sample_tree(src)
    return src


def test_round_trip_is_faithful(sample: Path, tmp_path: Path) -> None:
    repo = FakeRepository()
    stats, progress = run_backup(repo, sample)
    assert stats.files > 15
    assert stats.dirs >= 6
    assert progress.bytes_done == progress.total_bytes > 8 * MiB
    target = tmp_path / "restored"
    run_restore(repo, stats.root, target)
    assert compare_trees(sample, target) == []
    assert allocated_bytes(target / "sparse.img") < MiB
    assert allocated_bytes(target / "zeros.bin") == 0  # zero chunks are never stored, restored as holes


def test_restore_without_sparse_writes_zeros(sample: Path, tmp_path: Path) -> None:
    repo = FakeRepository()
    stats, _ = run_backup(repo, sample)
    target = tmp_path / "dense"
    run_restore(repo, stats.root, target, write_sparse=False)
    # zero pieces are written after all data: times and modes still end up right
    assert [d for d in compare_trees(sample, target) if "less sparse" not in d] == []
    assert (target / "sparse.img").read_bytes() == (sample / "sparse.img").read_bytes()
    assert allocated_bytes(target / "sparse.img") >= 8 * MiB


@pytest.mark.parametrize("sparse", [True, False])
def test_large_files_are_restored_through_o_direct_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sparse: bool
) -> None:
    """Files of DIRECT_FILE_BYTES and more get their whole pages written with O_DIRECT (chunk
    edges buffered): bytes, holes, size and times come out as they went in."""
    import jobs.direct_io as direct_io

    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(5)  # fixed data: a fixed number of chunks
    (src / "big.bin").write_bytes(rng.randbytes(20 * MiB + 77))
    write_sparse(src / "holey.img", 12 * MiB + 5, [(100, rng.randbytes(5 * MiB)), (11 * MiB, rng.randbytes(MiB + 5))])
    (src / "small.txt").write_bytes(b"small\n" * 100)
    repo = FakeRepository()
    stats, _ = run_backup(repo, src)
    calls = [0]
    real = direct_io.write_split

    def counted(*args: object, **kwargs: object) -> bool:
        calls[0] += 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(direct_io, "write_split", counted)
    target = tmp_path / "restored"
    run_restore(repo, stats.root, target, write_sparse=sparse)
    assert calls[0] >= 20  # every chunk of both large files
    assert [d for d in compare_trees(src, target) if sparse or "less sparse" not in d] == []
    assert (target / "holey.img").read_bytes() == (src / "holey.img").read_bytes()
    if sparse:
        assert allocated_bytes(target / "holey.img") < 8 * MiB


def test_zero_chunks_and_holes_are_not_stored(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    write_sparse(src / "holes", 64 * MiB, [(10 * MiB, b"z" * 1000)])
    (src / "zeros").write_bytes(bytes(8 * MiB))
    repo = FakeRepository()
    run_backup(repo, src)
    assert repo.data_bytes() < MiB


def test_many_small_files_and_one_large_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    rng = random.Random(3)
    for d in range(20):
        (src / f"d{d}").mkdir(parents=True)
        for i in range(50):
            (src / f"d{d}" / f"f{i}").write_bytes(rng.randbytes(rng.randrange(0, 3000)))
    (src / "huge").write_bytes(rng.randbytes(40 * MiB))
    repo = FakeRepository()
    stats, progress = run_backup(repo, src, parallel=3, budget=8 * MiB)  # a budget smaller than the file
    assert stats.files == 1001
    assert progress.files_done == 1001
    target = tmp_path / "out"
    run_restore(repo, stats.root, target)
    assert compare_trees(src, target) == []


def test_unchanged_second_backup_reads_nothing_and_stores_nothing(sample: Path) -> None:
    repo = FakeRepository()
    first, _ = run_backup(repo, sample)
    stored, data = repo.stored_bytes, repo.data_bytes()
    before = bytes_read_total()
    _, progress = run_backup(repo, sample, parent=first.root)
    assert bytes_read_total() == before
    assert progress.new_bytes == 0
    assert repo.data_bytes() == data
    assert repo.stored_bytes - stored < 0.01 * stored  # at most tree blobs with new atimes


def test_changed_file_is_the_only_one_read(sample: Path) -> None:
    repo = FakeRepository()
    first, _ = run_backup(repo, sample)
    (sample / "text.log").write_bytes(b"changed contents")
    before = bytes_read_total()
    _, progress = run_backup(repo, sample, parent=first.root)
    assert bytes_read_total() - before == len(b"changed contents")
    assert progress.new_bytes == len(b"changed contents")


def test_without_parent_everything_is_read(sample: Path) -> None:
    repo = FakeRepository()
    run_backup(repo, sample)
    before = bytes_read_total()
    _, progress = run_backup(repo, sample)
    assert bytes_read_total() - before > 5 * MiB
    assert progress.new_bytes == 0  # all deduplicated


@pytest.mark.parametrize(
    "change", ["rename", "delete", "truncate", "replace-same-size", "new-hardlink", "xattr-only", "empty-file-xattr"]
)
def test_incremental_after_changes_restores_correctly(sample: Path, tmp_path: Path, change: str) -> None:
    repo = FakeRepository()
    first, _ = run_backup(repo, sample)
    if change == "rename":
        os.rename(sample / "large.bin", sample / "dir" / "moved.bin")
        os.rename(sample / "dir" / "nested", sample / "nested-moved")
    elif change == "delete":
        os.unlink(sample / "text.log")
        shutil.rmtree(sample / "dir" / "nested")
    elif change == "truncate":
        os.truncate(sample / "large.bin", 1000)
        os.truncate(sample / "small.txt", 0)
    elif change == "replace-same-size":
        data = (sample / "large.bin").read_bytes()
        st = os.stat(sample / "large.bin")
        (sample / "large.bin").write_bytes(data[::-1])
        os.utime(sample / "large.bin", ns=(st.st_atime_ns, st.st_mtime_ns))  # only ctime tells
    elif change == "xattr-only":  # content and mtime as before: only the ctime tells
        os.setxattr(sample / "small.txt", "user.added", b"after the first backup")
    elif change == "empty-file-xattr":
        (sample / "empty-now").write_bytes(b"")
        os.setxattr(sample / "empty-now", "user.on-empty", b"kept")
    else:
        os.link(sample / "small.txt", sample / "dir" / "small-link")
    second, _ = run_backup(repo, sample, parent=first.root)
    target = tmp_path / f"restored-{change}"
    run_restore(repo, second.root, target)
    assert compare_trees(sample, target) == []


def test_insertion_at_start_of_large_file_stores_little(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = random.Random(9).randbytes(32 * MiB)
    (src / "big").write_bytes(data)
    repo = FakeRepository()
    run_backup(repo, src)
    first = repo.data_bytes()
    (src / "big").write_bytes(os.urandom(100) + data)
    run_backup(repo, src)
    assert repo.data_bytes() - first < 0.15 * first  # one or two chunks of ~32 change


def test_cancel_stops_with_canceled_error(sample: Path) -> None:
    repo = FakeRepository()
    cancel = threading.Event()
    repo.on_add = lambda calls: cancel.set() if calls == 2 else None
    with pytest.raises(CanceledError):
        run_backup(repo, sample, cancel=cancel)


def test_storage_error_in_a_worker_surfaces(sample: Path) -> None:
    repo = FakeRepository()

    def fail(calls: int) -> None:
        if calls == 3:
            raise StorageUnavailableError("storage went away")

    repo.on_add = fail
    with pytest.raises(StorageUnavailableError, match="went away"):
        run_backup(repo, sample)


def test_source_errors(tmp_path: Path) -> None:
    with pytest.raises(VolumeIOError, match="cannot read source"):
        run_backup(FakeRepository(), tmp_path / "missing")
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(VolumeIOError, match="not a directory"):
        run_backup(FakeRepository(), tmp_path / "file")


def test_corrupt_blob_is_never_written(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "victim").write_bytes(b"precious data " * 100)
    repo = FakeRepository()
    stats, _ = run_backup(repo, src)
    cid = next(cid for cid, kind in repo.kinds.items() if kind == "data")
    repo.blobs[cid] = b"tampered" + repo.blobs[cid][8:]
    target = tmp_path / "out"
    with pytest.raises(IntegrityError):
        run_restore(repo, stats.root, target)
    victim = target / "victim"
    assert not victim.exists() or b"tampered" not in victim.read_bytes()


def _block_run(repo: FakeRepository, image: Path, target: Path, *, write_sparse: bool = True) -> None:
    abort = Abort(None)
    stats = backup_block(repo, str(image), parallel=3, progress=ProgressTracker(None), abort=abort)
    restore_block(
        repo,
        stats.root,
        str(target),
        parallel=3,
        write_sparse=write_sparse,
        progress=ProgressTracker(None),
        abort=abort,
    )


def test_block_round_trip_is_identical_and_sparse(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    rng = random.Random(5)
    write_sparse(
        image,
        40 * MiB + 4096,
        [
            (0, rng.randbytes(3 * MiB)),
            (10 * MiB, bytes(2 * MiB)),
            (20 * MiB + 7, rng.randbytes(5000)),
            (40 * MiB, b"e"),
        ],
    )
    repo = FakeRepository()
    target = tmp_path / "restored.img"
    _block_run(repo, image, target)
    assert target.read_bytes() == image.read_bytes()
    assert allocated_bytes(target) <= 6 * MiB
    assert repo.data_bytes() <= 6 * MiB  # zero blocks are never stored
    dense = tmp_path / "dense.img"
    _block_run(repo, image, dense, write_sparse=False)
    assert dense.read_bytes() == image.read_bytes()
    assert allocated_bytes(dense) >= 40 * MiB


def test_mode_mismatch_is_a_usage_error(sample: Path, tmp_path: Path) -> None:
    repo = FakeRepository()
    stats, _ = run_backup(repo, sample)
    with pytest.raises(UsageError, match="--mode filesystem"):
        restore_block(
            repo,
            stats.root,
            str(tmp_path / "x.img"),
            parallel=1,
            write_sparse=True,
            progress=ProgressTracker(None),
            abort=Abort(None),
        )


def test_restore_over_an_existing_tree_replaces_entries_and_never_writes_through_links(
    sample: Path, tmp_path: Path
) -> None:
    repo = FakeRepository()
    stats, _ = run_backup(repo, sample)
    target = tmp_path / "restored"
    target.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"must stay untouched")
    (target / "small.txt").symlink_to(outside)  # a file in the snapshot is a symlink here
    (target / "emptydir").write_bytes(b"a file where the snapshot has a directory")
    (target / "link-to-small").mkdir()  # a directory where the snapshot has a symlink
    (target / "link-to-small" / "junk").write_bytes(b"x")
    run_restore(repo, stats.root, target)
    run_restore(repo, stats.root, target)  # and once more over its own result
    assert outside.read_bytes() == b"must stay untouched"
    assert compare_trees(sample, target) == []


def test_progress_is_reported_at_the_end_with_final_counts(sample: Path) -> None:
    seen: list[Progress] = []
    progress = ProgressTracker(seen.append, interval_seconds=3600)  # throttled: only the final report
    FilesystemBackup(
        FakeRepository(),
        str(sample),
        parallel=2,
        memory_budget_bytes=64 * MiB,
        progress=progress,
        abort=Abort(None),
        parent_root=None,
    ).run()
    final = progress.finish()
    assert seen[-1] == final
    assert final.files_done == final.files_total > 15
    assert final.bytes_done == final.total_bytes
    assert seen == [final]


def test_progress_callbacks_during_a_run_when_the_interval_allows(sample: Path) -> None:
    seen: list[Progress] = []
    progress = ProgressTracker(seen.append, interval_seconds=0.0)
    FilesystemBackup(
        FakeRepository(),
        str(sample),
        parallel=2,
        memory_budget_bytes=64 * MiB,
        progress=progress,
        abort=Abort(None),
        parent_root=None,
    ).run()
    final = progress.finish()
    assert len(seen) > 5
    assert seen[-1] == final
    assert all(p.bytes_done <= final.bytes_done for p in seen)


def test_source_and_target_named_through_symlinks(sample: Path, tmp_path: Path) -> None:
    (tmp_path / "src-link").symlink_to(sample)
    repo = FakeRepository()
    stats, _ = run_backup(repo, tmp_path / "src-link")
    real_target = tmp_path / "real-target"
    real_target.mkdir()
    (tmp_path / "target-link").symlink_to(real_target)
    run_restore(repo, stats.root, tmp_path / "target-link")
    assert (tmp_path / "target-link").is_symlink()
    assert compare_trees(sample, real_target) == []


def test_restore_cancel_stops_with_canceled_error(sample: Path, tmp_path: Path) -> None:
    repo = FakeRepository()
    stats, _ = run_backup(repo, sample)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CanceledError):
        restore_filesystem(
            repo,
            stats.root,
            str(tmp_path / "out"),
            parallel=2,
            write_sparse=True,
            progress=ProgressTracker(None),
            abort=Abort(cancel),
        )
    assert not (tmp_path / "out" / "large.bin").exists()


MODES = (0o644, 0o600, 0o755, 0o640, 0o444, 0o000, 0o666, 0o4755, 0o2750, 0o1644)


def mode_tree(src: Path, owner: tuple[int, int] | None = None) -> None:
    """Files of many modes (and, as root, owners: ``owner`` or one per file), with data and
    without, in nested directories."""
    for i, mode in enumerate(MODES):
        for sub in ("", "a/b/"):
            f = src / f"{sub}m{mode:04o}"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(b"x" * (i * 100))  # the first one is empty
            if IS_ROOT:
                os.chown(f, *(owner or (1000 + i, 2000 + i)))  # before chmod: chown clears setuid
            os.chmod(f, mode)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o000])
def test_restored_modes_are_exact_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    src = tmp_path / "src"
    mode_tree(src)
    repo = FakeRepository()
    stats, _ = run_backup(repo, src)
    old = os.umask(umask)
    try:
        run_restore(repo, stats.root, tmp_path / "out")
    finally:
        os.umask(old)
    assert compare_trees(src, tmp_path / "out") == []
    assert not [p for p in (tmp_path / "out").rglob(".snapmover-probe-*")]


@pytest.mark.skipif(not IS_ROOT, reason="needs root: files of other owners and a setgid directory of another group")
def test_restore_into_a_setgid_directory_of_another_group_keeps_each_files_group(tmp_path: Path) -> None:
    src = tmp_path / "src"
    mode_tree(src, owner=(0, 0))  # owned like the files the restore creates: only a probe tells them apart
    repo = FakeRepository()
    stats, _ = run_backup(repo, src)
    target = tmp_path / "out"
    target.mkdir()
    os.chown(target, 0, 4321)
    os.chmod(target, 0o2775)  # new entries inherit group 4321
    run_restore(repo, stats.root, target)
    assert compare_trees(src, target) == []
    for f in src.rglob("m*"):
        restored = target / f.relative_to(src)
        assert (restored.stat().st_uid, restored.stat().st_gid) == (f.stat().st_uid, f.stat().st_gid), f


def test_files_created_with_their_final_mode_skip_the_chmod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.volume import metadata as metadata_module

    src = tmp_path / "src"
    mode_tree(src, owner=(os.geteuid(), os.getegid()))
    repo = FakeRepository()
    stats, _ = run_backup(repo, src)
    changed: list[str] = []
    real_chmod = os.chmod

    def chmod(path: str, mode: int, **kwargs: object) -> None:
        changed.append(os.path.basename(path))
        real_chmod(path, mode)

    monkeypatch.setattr(metadata_module.os, "chmod", chmod)
    old = os.umask(0o022)
    try:
        run_restore(repo, stats.root, tmp_path / "out")
    finally:
        os.umask(old)
    assert compare_trees(src, tmp_path / "out") == []
    files_chmodded = sorted({n for n in changed if n.startswith("m")})
    # group/other write bits (umask 022) and special bits still need one; plain modes do not
    expected = {f"m{m:04o}" for m in MODES if m & 0o7022 or not (IS_ROOT or m & 0o200)}
    assert set(files_chmodded) == expected


def test_a_failing_queued_direct_write_fails_the_restore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An O_DIRECT write runs on its writer's I/O thread; its error still fails the restore."""
    import jobs.direct_io as direct_io

    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(random.Random(3).randbytes(12 * MiB))
    repo = FakeRepository()
    stats, _ = run_backup(repo, src)

    def failing(*_args: object, path: str, **_kwargs: object) -> int:
        raise VolumeIOError(f"{path}: cannot write at offset 0: No space left on device")

    monkeypatch.setattr(direct_io, "pwrite_direct", failing)
    with pytest.raises(VolumeIOError, match="No space left on device"):
        run_restore(repo, stats.root, tmp_path / "out")
