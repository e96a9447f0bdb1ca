"""Restore-side primitives: entry creation, positional writes, block targets and sources."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from jobs.direct_io import write_at
from jobs.errors import VolumeIOError
from jobs.volume.block import BlockSource, BlockTarget
from jobs.volume.metadata import NODE_FIFO, NODE_SYMLINK
from jobs.volume.target import create_dir, create_file, create_hardlink, create_special, open_for_write
from tests.unit.jobs.volume.treecompare import MiB, allocated_bytes, write_sparse


def test_create_file_is_a_hole_of_the_right_size(tmp_path: Path) -> None:
    path = tmp_path / "f"
    create_file(str(path), 64 * MiB)
    assert path.stat().st_size == 64 * MiB
    assert allocated_bytes(path) == 0


def test_concurrent_positional_writes(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "f"
    create_file(str(path), 4 * MiB)
    fd = open_for_write(str(path))
    try:
        threads = [
            threading.Thread(target=write_at, args=(fd, bytes([i + 1]) * MiB, i * MiB), kwargs={"path": str(path)})
            for i in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        os.close(fd)
    data = path.read_bytes()
    assert all(data[i * MiB : (i + 1) * MiB] == bytes([i + 1]) * MiB for i in range(4))


def test_existing_entries_of_another_type_are_replaced(tmp_path: Path) -> None:
    (tmp_path / "was-dir").mkdir()
    (tmp_path / "was-dir" / "x").write_bytes(b"")
    create_file(str(tmp_path / "was-dir"), 3)
    assert (tmp_path / "was-dir").is_file()
    (tmp_path / "was-file").write_bytes(b"old")
    create_dir(str(tmp_path / "was-file"))
    assert (tmp_path / "was-file").is_dir()
    create_special(str(tmp_path / "was-file2"), NODE_SYMLINK, target="t")
    assert os.readlink(tmp_path / "was-file2") == "t"


def test_special_entries_and_hardlinks(tmp_path: Path) -> None:
    create_special(str(tmp_path / "p"), NODE_FIFO)
    assert stat.S_ISFIFO(os.lstat(tmp_path / "p").st_mode)
    (tmp_path / "a").write_bytes(b"x")
    create_hardlink(str(tmp_path / "a"), str(tmp_path / "b"))
    assert os.lstat(tmp_path / "a").st_ino == os.lstat(tmp_path / "b").st_ino


def test_writes_never_follow_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "outside").write_bytes(b"keep")
    (tmp_path / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(VolumeIOError):
        open_for_write(str(tmp_path / "link"))
    assert (tmp_path / "outside").read_bytes() == b"keep"


def test_block_source_size_of_image(tmp_path: Path) -> None:
    img = tmp_path / "img"
    write_sparse(img, 10 * MiB + 3, [(MiB, b"x")])
    src = BlockSource(str(img))
    try:
        assert src.size == 10 * MiB + 3
    finally:
        src.close()
    with pytest.raises(VolumeIOError):
        BlockSource(str(tmp_path))
    with pytest.raises(VolumeIOError):
        BlockSource(str(tmp_path / "missing"))


def test_block_target_image_is_truncated_sparse(tmp_path: Path) -> None:
    img = tmp_path / "out.img"
    img.write_bytes(b"old data that must go" * 1000)
    target = BlockTarget(str(img), 32 * MiB, write_sparse=True)
    assert not target.needs_zeroing
    write_at(target.fd, b"abc", 5 * MiB, path=str(img))
    target.close()
    data = img.read_bytes()
    assert len(data) == 32 * MiB
    assert data[:21] == bytes(21)
    assert data[5 * MiB : 5 * MiB + 3] == b"abc"
    assert allocated_bytes(img) < MiB


def test_block_target_without_sparse_writes_zeros(tmp_path: Path) -> None:
    img = tmp_path / "out.img"
    target = BlockTarget(str(img), 2 * MiB, write_sparse=False)
    assert target.needs_zeroing
    target.zero_range(0, 2 * MiB)
    target.close()
    assert allocated_bytes(img) >= 2 * MiB
    assert img.read_bytes() == bytes(2 * MiB)


def test_block_source_and_target_follow_a_symlinked_device_name(tmp_path: Path) -> None:
    img = tmp_path / "img"
    write_sparse(img, 2 * MiB, [(0, b"data")])
    (tmp_path / "by-id").symlink_to(img)
    src = BlockSource(str(tmp_path / "by-id"))
    try:
        assert src.size == 2 * MiB
    finally:
        src.close()
    out = tmp_path / "out"
    out.write_bytes(b"")
    (tmp_path / "out-link").symlink_to(out)
    BlockTarget(str(tmp_path / "out-link"), MiB, write_sparse=True).close()
    assert out.stat().st_size == MiB
    assert (tmp_path / "out-link").is_symlink()


@pytest.mark.parametrize("direct", [True, False])
def test_block_target_writes_from_many_threads_with_and_without_o_direct(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    """Whole-page writes take the O_DIRECT descriptor, others (and every write where O_DIRECT is
    refused) the page cache; either way the image holds exactly what was written."""
    import threading

    import jobs.direct_io as direct_io

    if not direct:
        monkeypatch.setattr(direct_io, "open_direct", lambda _path: None)
    img = tmp_path / "out.img"
    size = 16 * MiB + 1234
    target = BlockTarget(str(img), size, write_sparse=True)
    assert target._writes.direct == direct or not direct  # the filesystem may refuse it
    pieces = [(i * MiB, os.urandom(MiB)) for i in range(0, 16, 2)] + [(16 * MiB, os.urandom(1234)), (MiB + 7, b"odd")]
    threads = [threading.Thread(target=target.write, args=(data, offset)) for offset, data in pieces]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    target.close()
    expected = bytearray(size)
    for offset, data in pieces:
        expected[offset : offset + len(data)] = data
    assert img.read_bytes() == bytes(expected)
    assert allocated_bytes(img) < 10 * MiB  # the odd blocks stayed holes
