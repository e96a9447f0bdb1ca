"""Reading sources: hole detection, zero detection, read accounting, sorted listings."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from jobs.errors import VolumeIOError
from jobs.volume.source import (
    ZERO_BYTES,
    bytes_read_total,
    data_extents,
    is_zero,
    list_dir,
    open_for_read,
    read_at,
)
from tests.unit.jobs.volume.treecompare import MiB, write_sparse


def test_is_zero_finds_a_single_nonzero_byte_anywhere() -> None:
    buf = bytearray(3 * MiB)
    assert is_zero(buf)
    assert is_zero(memoryview(buf)[5:])
    for pos in (0, MiB, len(buf) - 1):
        buf[pos] = 1
        assert not is_zero(buf)
        buf[pos] = 0
    assert is_zero(b"")


def test_is_zero_beyond_the_reference_buffer() -> None:
    big = bytearray(len(ZERO_BYTES) + 10)
    assert is_zero(big)
    big[-1] = 7
    assert not is_zero(big)


def test_data_extents_report_holes(tmp_path: Path) -> None:
    path = tmp_path / "sparse"
    write_sparse(path, 8 * MiB, [(2 * MiB, b"x" * 100), (6 * MiB, b"y" * 10)])
    fd = os.open(path, os.O_RDONLY)
    try:
        extents = list(data_extents(fd, 8 * MiB))
    finally:
        os.close(fd)
    assert sum(length for _, length, _ in extents) == 8 * MiB
    assert extents[0] == (0, 2 * MiB, False)
    data = [(off, length) for off, length, is_data in extents if is_data]
    assert len(data) == 2
    assert all(length < MiB for _, length in data)
    assert data[0][0] <= 2 * MiB < data[0][0] + data[0][1]
    # contiguous cover, alternating
    pos = 0
    for off, length, _ in extents:
        assert off == pos
        pos += length


def test_data_extents_of_a_hole_only_and_a_dense_file(tmp_path: Path) -> None:
    hole = tmp_path / "hole"
    write_sparse(hole, 3 * MiB, [])
    dense = tmp_path / "dense"
    dense.write_bytes(b"a" * 10_000)
    for path, expected in ((hole, [(0, 3 * MiB, False)]), (dense, [(0, 10_000, True)])):
        fd = os.open(path, os.O_RDONLY)
        try:
            assert list(data_extents(fd, os.fstat(fd).st_size)) == expected
        finally:
            os.close(fd)


def test_read_at_counts_bytes_and_stops_at_eof(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    fd = open_for_read(str(path))
    try:
        before = bytes_read_total()
        buf = memoryview(bytearray(16))
        n = read_at(fd, buf, 4, path=str(path))
    finally:
        os.close(fd)
    assert n == 6
    assert bytes(buf[:n]) == b"456789"
    assert bytes_read_total() - before == 6


def test_list_dir_is_sorted_by_bytes_and_does_not_follow_links(tmp_path: Path) -> None:
    for name in ("b", "a", "C"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "link").symlink_to("a")
    names = [n for n, _ in list_dir(str(tmp_path))]
    assert names == ["C", "a", "b", "link"]
    assert stat.S_ISLNK(dict(list_dir(str(tmp_path)))["link"].st_mode)


def test_missing_paths_are_volume_errors(tmp_path: Path) -> None:
    with pytest.raises(VolumeIOError, match="vanished"):
        list_dir(str(tmp_path / "nope"))
    with pytest.raises(VolumeIOError, match="cannot open"):
        open_for_read(str(tmp_path / "nope"))
    (tmp_path / "link").symlink_to("elsewhere")
    with pytest.raises(VolumeIOError):
        open_for_read(str(tmp_path / "link"))  # O_NOFOLLOW: never read through a symlink
