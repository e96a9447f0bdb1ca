"""The O_DIRECT machinery (jobs.direct_io): aligned buffers, split and queued writes, bounce
copies, and the page cache taking over where O_DIRECT is refused or the device is busy."""

from __future__ import annotations

import errno
import os
import random
import threading
from itertools import pairwise
from pathlib import Path

import pytest

import jobs.direct_io as direct_io
from jobs.direct_io import (
    DIRECT_MIN_BYTES,
    AlignedBuffer,
    DirectFiles,
    DirectTarget,
    DirectWrites,
    copy_released,
    open_direct,
    write_split,
)
from jobs.errors import VolumeIOError

MiB = 1024 * 1024


# AlignedBuffer.close: a view someone else still holds must not fail the job at shutdown.


def test_close_with_an_outstanding_view_leaves_the_unmap_to_that_view() -> None:
    buffer = AlignedBuffer(8192)
    held = buffer.view[:100]  # e.g. kept alive by an exception's traceback
    buffer.close()  # no BufferError
    assert not buffer.unmapped
    held[:3] = b"abc"  # the memory stays valid for the holder
    assert bytes(held[:3]) == b"abc"
    held.release()


def test_close_without_views_unmaps() -> None:
    buffer = AlignedBuffer(8192)
    buffer.view[:4] = b"data"
    buffer.close()
    assert buffer.unmapped


@pytest.mark.parametrize("refused", [False, True])
def test_write_split_sends_whole_pages_direct_and_page_edges_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused: bool
) -> None:
    """Unaligned chunks back to back (as a restore writes them): the file holds exactly the data,
    whether O_DIRECT takes the middles or is refused (EINVAL) and everything goes buffered."""

    path = tmp_path / "file"
    size = 9 * MiB + 321
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.ftruncate(fd, size)
    direct_fd = open_direct(str(path))
    assert direct_fd is not None  # tmp_path is on a filesystem with O_DIRECT here
    real_pwrite = os.pwrite
    direct_bytes = [0]

    def pwrite(f: int, data: memoryview, offset: int) -> int:
        if f == direct_fd:
            if refused:
                raise OSError(errno.EINVAL, "Invalid argument")
            direct_bytes[0] += len(data)
        return real_pwrite(f, data, offset)

    monkeypatch.setattr(direct_io.os, "pwrite", pwrite)
    expected = os.urandom(size)
    rng = random.Random(7)
    cuts = sorted({0, size, *(rng.randrange(size) for _ in range(12)), 5000, 5000 + DIRECT_MIN_BYTES - 1})
    # chunks larger than 1 MiB go in pieces; a buffer for every piece (at most one per MiB plus
    # one per cut), so none finds them all in flight: a busy device sends a piece to the page
    # cache, and the count below would depend on timing
    direct = DirectWrites(size // MiB + len(cuts) + 1, MiB)
    for a, b in pairwise(cuts):
        write_split(fd, direct_fd, expected[a:b], a, direct, path=str(path))
    direct.close()  # waits for the queued writes
    os.close(direct_fd)
    os.close(fd)
    assert path.read_bytes() == expected
    assert direct.refused == ({str(path)} if refused else set())
    assert (direct_bytes[0] > MiB) is not refused


def test_a_failed_queued_direct_write_is_raised_to_the_writer(tmp_path: Path) -> None:

    path = tmp_path / "file"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    direct = DirectWrites(1, MiB)
    direct.submit(fd, 987654, memoryview(bytes(MiB)), 0, path=str(path))  # not an open descriptor
    with pytest.raises(VolumeIOError, match="cannot write at offset 0"):
        direct.drain()
    direct.close()  # the error was raised once; closing is clean
    os.close(fd)


def test_copy_released_copies_every_kind_of_chunk_buffer() -> None:

    bounce = AlignedBuffer(64 * 1024)
    stored = bytes(range(256)) * 64  # a stored chunk: a read-only view past the flag byte
    for src in (memoryview(b"\x00" + stored)[1:], bytearray(stored[:5000]), stored[:1]):
        copy_released(bounce.view[: len(src)], src)
        assert bytes(bounce.view[: len(src)]) == bytes(src)
    with pytest.raises(ValueError, match="into a 10-byte buffer"):
        copy_released(bounce.view[:10], stored[:11])
    with pytest.raises(BufferError):
        copy_released(memoryview(stored), stored[:1])  # a read-only destination
    bounce.close()


def test_while_the_device_is_busy_write_split_uses_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With its only bounce buffer in flight, a second chunk is written through the page cache
    at once (not queued behind the device); both land exactly."""

    path = tmp_path / "file"
    size = 4 * MiB
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.ftruncate(fd, size)
    direct_fd = open_direct(str(path))
    assert direct_fd is not None
    device_busy = threading.Event()
    real_pwrite = os.pwrite
    routes: list[tuple[str, int]] = []

    def pwrite(f: int, data: memoryview, offset: int) -> int:
        if f == direct_fd:
            assert device_busy.wait(10)  # held until the second chunk is written
        routes.append(("direct" if f == direct_fd else "cache", offset))
        return real_pwrite(f, data, offset)

    monkeypatch.setattr(direct_io.os, "pwrite", pwrite)
    expected = os.urandom(size)
    direct = DirectWrites(1, 2 * MiB)
    write_split(fd, direct_fd, expected[: 2 * MiB], 0, direct, path=str(path))  # queued, stuck
    write_split(fd, direct_fd, expected[2 * MiB :], 2 * MiB, direct, path=str(path))  # declined
    assert routes == [("cache", 2 * MiB)]
    device_busy.set()
    direct.close()
    os.close(direct_fd)
    os.close(fd)
    assert routes == [("cache", 2 * MiB), ("direct", 0)]
    assert path.read_bytes() == expected


def _refuse_direct_writes(monkeypatch: pytest.MonkeyPatch, refuse: set[int]) -> None:
    """Every pwrite to a descriptor in ``refuse`` fails as a kernel refusing O_DIRECT does."""
    real_pwrite = os.pwrite

    def pwrite(f: int, data: memoryview, offset: int) -> int:
        if f in refuse:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(f, data, offset)

    monkeypatch.setattr(direct_io.os, "pwrite", pwrite)


def test_direct_files_switch_a_refused_file_to_the_page_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file whose O_DIRECT writes are refused is written through the page cache from then on,
    its O_DIRECT descriptor closed; the other file keeps O_DIRECT; both hold exactly the data."""
    files = DirectFiles(buffers=2, bounce_bytes=MiB)
    paths = [str(tmp_path / "a"), str(tmp_path / "b")]
    fds = [os.open(p, os.O_CREAT | os.O_WRONLY, 0o600) for p in paths]
    for fd in fds:
        os.ftruncate(fd, 4 * MiB)
    for p in paths:
        files.open(p)
    refused_fd, kept_fd = files._fds[paths[0]], files._fds[paths[1]]
    assert refused_fd is not None and kept_fd is not None  # tmp_path's filesystem takes O_DIRECT
    _refuse_direct_writes(monkeypatch, {refused_fd})
    data = [os.urandom(4 * MiB), os.urandom(4 * MiB)]
    for piece in range(4):
        for fd, p, d in zip(fds, paths, data, strict=True):
            files.write(fd, p, memoryview(d)[piece * MiB : (piece + 1) * MiB], piece * MiB)
    assert files._fds[paths[0]] is None and files._fds[paths[1]] == kept_fd
    for fd, p in zip(fds, paths, strict=True):
        files.forget(p)
        os.close(fd)
    files.close()
    assert [Path(p).read_bytes() for p in paths] == data
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(kept_fd)  # forget closed the O_DIRECT descriptor


def test_direct_target_uses_the_page_cache_once_o_direct_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "img"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.ftruncate(fd, 3 * MiB)
    target = DirectTarget(str(path), fd, bounce_bytes=MiB)
    assert target.direct
    first = os.urandom(MiB)
    target.write(first, 0)  # whole pages: O_DIRECT
    assert target.direct
    assert target._direct_fd is not None
    _refuse_direct_writes(monkeypatch, {target._direct_fd})
    rest = os.urandom(2 * MiB)
    target.write(rest, MiB)  # refused: written through the page cache, and so on from now on
    assert not target.direct
    target.write(b"odd", 5)  # not whole pages: always the page cache
    target.close()
    os.close(fd)
    assert path.read_bytes() == first[:5] + b"odd" + first[8:] + rest


@pytest.mark.parametrize("refused", [False, True])
def test_a_new_file_is_written_direct_or_left_empty_for_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused: bool
) -> None:
    """file:// pack writes: whole pages with O_DIRECT, cut back to the length; where refused,
    nothing is left written and the descriptor is back to buffered writes at offset 0."""
    import fcntl

    from jobs.direct_io import write_new_file_direct

    path = tmp_path / "pack"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    buffer = AlignedBuffer(3 * 4096)
    data = os.urandom(2 * 4096 + 100)
    buffer.view[: len(data)] = data
    if refused:
        _refuse_direct_writes(monkeypatch, {fd})
    assert write_new_file_direct(fd, buffer, len(data)) is not refused
    if refused:
        assert path.stat().st_size == 0 and os.lseek(fd, 0, os.SEEK_CUR) == 0
        assert not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT
    os.close(fd)
    buffer.close()
    assert path.read_bytes() == (b"" if refused else data)
