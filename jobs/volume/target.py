"""Writing a restore target: create entries, write file data positionally, make holes.

Used by the engine's restore pipeline, which first creates every entry (:func:`create_dir`,
:func:`create_file`, :func:`create_special`), then writes verified chunk data concurrently with
:func:`write_at` (``os.pwrite``: no shared file offsets, so many threads can write one file), then
links hardlinks and applies metadata (:mod:`jobs.volume.metadata`). An existing entry of another
type at a path is replaced; nothing outside the target directory is ever followed (``O_NOFOLLOW``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import queue
import shutil
import stat
import threading
from typing import Final

from jobs.errors import VolumeIOError
from jobs.storage.base import PAGE_BYTES, AlignedBuffer, round_up
from jobs.volume.metadata import FORMAT_BY_TYPE, NODE_SYMLINK
from jobs.volume.source import ZERO_BYTES

_WRITE_FLAGS = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def _volume_error(path: str, action: str, e: OSError) -> VolumeIOError:
    return VolumeIOError(f"{path}: cannot {action}: {e.strerror}")


def _clear(path: str, keep_dir: bool) -> None:
    """Remove whatever is at ``path`` unless it is a directory and ``keep_dir``."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        if not keep_dir:
            shutil.rmtree(path)
    else:
        os.unlink(path)


def create_dir(path: str, *, fresh: bool = False) -> bool:
    """Make ``path`` a directory with full access for us (its real mode is applied last).

    Returns True when the directory is new (so nothing inside it needs clearing). ``fresh``
    (here and below) says the parent is new, so nothing can be in the way.
    """
    try:
        if fresh:
            os.mkdir(path, 0o700)
            return True
        _clear(path, keep_dir=True)
        if os.path.isdir(path):
            os.chmod(path, 0o700)
            return False
        os.mkdir(path, 0o700)
        return True
    except OSError as e:
        raise _volume_error(path, "create directory", e) from e


def create_file(path: str, size: int, *, fresh: bool = False, mode: int = 0o600) -> None:
    """Create (or replace) a regular file with ``mode`` (less the umask); ``size`` > 0 extends
    it with a hole to that size."""
    os.close(create_file_for_write(path, size, fresh=fresh, mode=mode))


def create_file_for_write(path: str, size: int, *, fresh: bool = False, mode: int = 0o600) -> int:
    """Like :func:`create_file`, but return the open descriptor for positional writes."""
    try:
        if not fresh:
            _clear(path, keep_dir=False)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | _WRITE_FLAGS, mode)
    except OSError as e:
        raise _volume_error(path, "create file", e) from e
    try:
        if size:
            os.ftruncate(fd, size)
    except OSError as e:
        os.close(fd)
        raise _volume_error(path, "create file", e) from e
    return fd


def create_special(path: str, kind: str, *, target: str = "", rdev: int = 0, fresh: bool = False) -> None:
    """Create a symlink (to ``target``), FIFO, socket or device node (``rdev``; needs root)."""
    try:
        if not fresh:
            _clear(path, keep_dir=False)
        if kind == NODE_SYMLINK:
            os.symlink(target, path)
        else:
            os.mknod(path, 0o600 | FORMAT_BY_TYPE[kind], rdev)
    except OSError as e:
        raise _volume_error(path, f"create {kind}", e) from e


def create_hardlink(existing: str, path: str) -> None:
    """Make ``path`` another name of ``existing`` (hardlinks are restored as links)."""
    try:
        _clear(path, keep_dir=False)
        os.link(existing, path, follow_symlinks=False)
    except OSError as e:
        raise _volume_error(path, "create hardlink", e) from e


def open_for_write(path: str) -> int:
    """Open an existing file or device for positional writes."""
    try:
        return os.open(path, _WRITE_FLAGS)
    except OSError as e:
        raise _volume_error(path, "open for writing", e) from e


def write_at(fd: int, data: bytes | bytearray | memoryview, offset: int, *, path: str) -> None:
    """Write all of ``data`` at ``offset`` (``os.pwrite``; safe for concurrent writers)."""
    view = memoryview(data)
    done = 0
    try:
        while done < len(view):
            done += os.pwrite(fd, view[done:], offset + done)
    except OSError as e:
        raise _volume_error(path, f"write at offset {offset + done}", e) from e


DIRECT_MIN_BYTES: Final = 64 * 1024  # whole-page middles shorter than this go through the page cache


def open_direct(path: str) -> int | None:
    """A second write descriptor with ``O_DIRECT``, or None where the filesystem/device refuses it."""
    try:
        return os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
    except OSError:
        return None


def write_split(
    fd: int, direct_fd: int, data: bytes | bytearray | memoryview, offset: int, direct: DirectWrites, *, path: str
) -> None:
    """Write ``data`` at ``offset``: the whole pages in its middle with ``O_DIRECT`` (queued on
    ``direct``) when a bounce buffer is free, else through the page cache like the partial pages
    at both ends (``fd``).

    Writes of neighbouring ranges never share a page between the two paths: a partial end page
    always goes through the page cache. Where the kernel refuses ``O_DIRECT`` the queued write
    goes through the page cache instead and ``path`` lands in ``direct.refused``.
    """
    view = memoryview(data).cast("B")
    end = offset + len(view)
    first, last = -(-offset // PAGE_BYTES) * PAGE_BYTES, end // PAGE_BYTES * PAGE_BYTES
    if last - first < DIRECT_MIN_BYTES:
        write_at(fd, view, offset, path=path)
        return
    if first > offset:
        write_at(fd, view[: first - offset], offset, path=path)
    for start in range(first, last, direct.capacity):
        piece = view[start - offset : min(last, start + direct.capacity) - offset]
        if not direct.submit(fd, direct_fd, piece, start, path=path):
            write_at(fd, piece, start, path=path)  # the device is busy: the page cache takes this one
    if end > last:
        write_at(fd, view[last - offset :], last, path=path)


class DirectWrites:
    """Whole-page ``O_DIRECT`` writes done by a thread of their own from a few page-aligned
    bounce buffers.

    An ``O_DIRECT`` write returns only once the device has the data; done inline it stalled
    the restore writer for every large chunk, and a restore ran no faster than the device
    wrote. Here the caller copies the pages into a free bounce buffer and goes on; when every
    buffer is in flight :meth:`submit` declines and the caller uses the page cache instead, so
    the device takes what it can and the page cache (whose growth costs kernel time) the rest.
    :meth:`drain` waits for the queued writes: call it before closing a descriptor they use. A
    write the kernel refuses (EINVAL) is written through the page cache (``fd``) and its path
    recorded in :attr:`refused`; any other error is raised by the next :meth:`submit` or
    :meth:`drain`.
    """

    def __init__(self, buffers: int, capacity: int) -> None:
        self.capacity = round_up(capacity, PAGE_BYTES)
        self.refused: set[str] = set()
        self._buffers = [AlignedBuffer(self.capacity) for _ in range(buffers)]
        self._free: queue.SimpleQueue[AlignedBuffer] = queue.SimpleQueue()
        for buffer in self._buffers:
            self._free.put(buffer)
        self._jobs: queue.SimpleQueue[tuple[int, int, AlignedBuffer, int, int, str] | None] = queue.SimpleQueue()
        self._idle = threading.Condition()
        self._pending = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="direct-write", daemon=True)
        self._thread.start()

    def submit(self, fd: int, direct_fd: int, data: memoryview, offset: int, *, path: str) -> bool:
        """Queue ``data`` (whole pages, at most :attr:`capacity` bytes) for ``offset``; False,
        queueing nothing, while every bounce buffer is in flight."""
        self._raise_error()
        try:
            buffer = self._free.get_nowait()
        except queue.Empty:
            return False
        copy_released(buffer.view, data)
        with self._idle:
            self._pending += 1
        self._jobs.put((fd, direct_fd, buffer, len(data), offset, path))
        return True

    def drain(self) -> None:
        """Wait until every queued write is done; raise the first one's error."""
        with self._idle:
            self._idle.wait_for(lambda: self._pending == 0)
        self._raise_error()

    def close(self) -> None:
        """Drain, stop the thread and unmap the buffers."""
        try:
            self.drain()
        finally:
            self._jobs.put(None)
            self._thread.join()
            for buffer in self._buffers:
                buffer.close()

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            fd, direct_fd, buffer, n, offset, path = job
            try:
                if self._error is None:
                    done = pwrite_direct(direct_fd, buffer.view[:n], offset, path=path)
                    if done < n:
                        self.refused.add(path)
                        write_at(fd, buffer.view[done:n], offset + done, path=path)
            except BaseException as e:  # noqa: BLE001 - handed to the submitting thread
                self._error = self._error or e
            finally:
                self._free.put(buffer)
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()


class _PyBuffer(ctypes.Structure):
    """CPython's ``Py_buffer`` (the buffer protocol's view of an object's memory)."""

    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
_get_buffer.restype = ctypes.c_int
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = [ctypes.POINTER(_PyBuffer)]
_release_buffer.restype = None
_PYBUF_SIMPLE: Final = 0
_PYBUF_WRITABLE: Final = 1


def _address(data: bytes | bytearray | memoryview, flags: int) -> tuple[int, int]:
    """``(address, length)`` of a contiguous buffer's memory (BufferError if it is not usable)."""
    view = _PyBuffer()
    _get_buffer(data, ctypes.byref(view), flags)
    try:
        return view.buf or 0, view.len
    finally:
        _release_buffer(ctypes.byref(view))


def copy_released(dst: memoryview, src: bytes | bytearray | memoryview) -> None:
    """``dst[:len(src)] = src`` with the GIL released during the copy.

    A slice assignment copies while holding the GIL; a restore's bounce copies (every large
    file's bytes) then stall the loading threads' Python work. ``ctypes.memmove`` is a foreign
    call, which releases it. Both objects are referenced here for the whole copy, so their
    memory cannot go away meanwhile."""
    src_address, n = _address(src, _PYBUF_SIMPLE)
    dst_address, room = _address(dst, _PYBUF_WRITABLE)
    if n > room:
        raise ValueError(f"copy of {n} bytes into a {room}-byte buffer")
    ctypes.memmove(dst_address, src_address, n)


def write_direct(
    direct_fd: int, data: bytes | bytearray | memoryview, offset: int, bounce: memoryview, *, path: str
) -> int:
    """Copy whole-page ``data`` into the page-aligned ``bounce`` and write it at ``offset`` with
    ``O_DIRECT`` (:func:`pwrite_direct`)."""
    n = len(data)
    copy_released(bounce[:n], data)
    return pwrite_direct(direct_fd, bounce[:n], offset, path=path)


def pwrite_direct(direct_fd: int, aligned: memoryview, offset: int, *, path: str) -> int:
    """Write page-aligned whole pages at ``offset`` with ``O_DIRECT``. Returns the bytes written:
    ``len(aligned)``, or fewer when the kernel refused ``O_DIRECT`` (EINVAL) — the caller writes
    the rest through the page cache."""
    done = 0
    try:
        while done < len(aligned):
            done += os.pwrite(direct_fd, aligned[done:], offset + done)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise _volume_error(path, f"write at offset {offset + done}", e) from e
    return done


def write_zeros(fd: int, offset: int, length: int, *, path: str) -> None:
    """Write explicit zero bytes over ``[offset, offset + length)``."""
    end = offset + length
    while offset < end:
        n = min(end - offset, len(ZERO_BYTES))
        write_at(fd, memoryview(ZERO_BYTES)[:n], offset, path=path)
        offset += n
