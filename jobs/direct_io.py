"""O_DIRECT writes: page-aligned buffers, the thresholds, bounce copies, refusal handling.

Everything the mover does with ``O_DIRECT`` is here, used by

* file restore (:mod:`jobs.engine.restore`): :class:`DirectFiles` gives each large file
  (``DIRECT_FILE_BYTES`` and more) a second ``O_DIRECT`` descriptor and writes the whole pages of
  each chunk through it (:func:`write_split`, queued to :class:`DirectWrites`' thread);
* block restore (:class:`jobs.volume.block.BlockTarget`): :class:`DirectTarget` writes whole-page
  blocks through a page-aligned bounce buffer per writer thread;
* the pack writer and ``file://`` storage: packs are assembled in :class:`AlignedBuffer` memory, which
  ``file://`` writes with ``O_DIRECT`` (:func:`write_new_file_direct`).

Where a filesystem or device refuses ``O_DIRECT`` (``open`` fails, or a write gets EINVAL) the
bytes go through the page cache instead, and that file is written that way from then on; the
caller never sees the refusal. Plain positional writes (:func:`write_at`) live here too, because
they are that fallback. This module sits below ``jobs.storage`` and ``jobs.volume`` (it imports
only :mod:`jobs.errors`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import mmap
import os
import queue
import threading
from typing import Final

from jobs.errors import VolumeIOError

MiB: Final = 1024 * 1024

PAGE_BYTES: Final = mmap.PAGESIZE


def round_up(n: int, multiple: int) -> int:
    """``n`` rounded up to a multiple of ``multiple``."""
    return -(-n // multiple) * multiple


class AlignedBuffer:
    """A writable, page-aligned buffer (anonymous memory map) that outlives many uses.

    Packs are assembled in these so that blobs are encrypted straight into the bytes that are
    stored, and so that ``file://`` can write them with ``O_DIRECT``: the mapping is rounded up to
    whole pages, so a write padded to the next page boundary stays inside it.
    """

    def __init__(self, capacity: int) -> None:
        self._map = mmap.mmap(-1, round_up(max(1, capacity), PAGE_BYTES))
        self.view = memoryview(self._map)

    @property
    def capacity(self) -> int:
        """Usable bytes (whole pages)."""
        return len(self._map)

    @property
    def unmapped(self) -> bool:
        """True once :meth:`close` has unmapped the memory (False while a view of it is held)."""
        return self._map.closed

    def close(self) -> None:
        """Unmap the memory; the buffer must not be used afterwards.

        A view of it that someone else still holds (a library's retried request kept alive by
        an exception's traceback until the garbage collector runs) makes an immediate unmap
        impossible; the mapping is then freed with that last view instead of failing the job."""
        self.view.release()
        with contextlib.suppress(BufferError):  # else unmapped when the last outstanding view is collected
            self._map.close()


# File restore: files this large get their whole pages written with O_DIRECT: no copy into (and no
# growth of) the page cache, the largest kernel cost of a restore; the partial pages at chunk edges
# stay buffered.
DIRECT_FILE_BYTES: Final = 4 * MiB
DIRECT_BOUNCE_BYTES: Final = 2 * MiB  # a larger chunk's whole pages go in several pieces
DIRECT_BUFFERS: Final = 6  # per writer (12 MiB): pieces queued for the device; more go to the page cache
# Block restore: one bounce buffer per writer thread, of the default block size.
BLOCK_BOUNCE_BYTES: Final = 1 * MiB


def volume_error(path: str, action: str, e: OSError) -> VolumeIOError:
    """The error a failed write (or create, open) of ``path`` on the restore target raises."""
    return VolumeIOError(f"{path}: cannot {action}: {e.strerror}")


def write_at(fd: int, data: bytes | bytearray | memoryview, offset: int, *, path: str) -> None:
    """Write all of ``data`` at ``offset`` through the page cache (``os.pwrite``; safe for
    concurrent writers)."""
    view = memoryview(data)
    done = 0
    try:
        while done < len(view):
            done += os.pwrite(fd, view[done:], offset + done)
    except OSError as e:
        raise volume_error(path, f"write at offset {offset + done}", e) from e


def set_direct(fd: int, enabled: bool) -> None:
    """Switch ``O_DIRECT`` on or off for an open descriptor (``file://`` storage's pack writes)."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, (flags | os.O_DIRECT) if enabled else (flags & ~os.O_DIRECT))


def write_new_file_direct(fd: int, buffer: AlignedBuffer, length: int) -> bool:
    """Write the first ``length`` bytes of ``buffer`` into the new, empty file open as ``fd`` with
    ``O_DIRECT``: its whole pages, then the file cut back to ``length``. Returns False where the
    filesystem refuses ``O_DIRECT`` (or its alignment): the file is then empty again, at offset 0
    and without ``O_DIRECT``, for the caller to write through the page cache. Other errors raise
    ``OSError`` (the caller translates them)."""
    padded = round_up(length, PAGE_BYTES)
    if padded > buffer.capacity:
        return False
    try:
        set_direct(fd, True)
        done = 0
        while done < padded:
            done += os.pwrite(fd, buffer.view[done:padded], done)
        os.ftruncate(fd, length)
        return True
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        set_direct(fd, False)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        return False


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
            raise volume_error(path, f"write at offset {offset + done}", e) from e
    return done


class DirectFiles:
    """The ``O_DIRECT`` side of one restore writer's large files: a second descriptor per file
    (:meth:`open`), their whole pages queued to a :class:`DirectWrites` thread (:meth:`write`), and
    the page cache for a file whose ``O_DIRECT`` is refused, from the refusal on.

    Not thread safe: each restore writer thread has its own. The thread and bounce buffers start
    at the first write."""

    def __init__(self, buffers: int = DIRECT_BUFFERS, bounce_bytes: int = DIRECT_BOUNCE_BYTES) -> None:
        self._buffers = buffers
        self._bounce_bytes = bounce_bytes
        self._fds: dict[str, int | None] = {}  # path -> its O_DIRECT descriptor (None: refused)
        self._writes: DirectWrites | None = None

    def open(self, path: str) -> None:
        """Open ``path``'s ``O_DIRECT`` descriptor (None where refused: the page cache takes it all)."""
        self._fds[path] = open_direct(path)

    def write(self, fd: int, path: str, data: bytes | bytearray | memoryview, offset: int) -> None:
        """Write ``data`` at ``offset`` of the file open as ``fd``: whole pages ``O_DIRECT`` where
        possible (:func:`write_split`), the rest through ``fd``."""
        direct_fd = self._fds.get(path)
        if direct_fd is not None and self._writes is not None and path in self._writes.refused:
            self._writes.drain()  # O_DIRECT refused after all: the page cache from now on
            os.close(direct_fd)
            self._fds[path] = direct_fd = None
        if direct_fd is None:
            write_at(fd, data, offset, path=path)
            return
        if self._writes is None:
            self._writes = DirectWrites(self._buffers, self._bounce_bytes)
        write_split(fd, direct_fd, data, offset, self._writes, path=path)

    def forget(self, path: str) -> None:
        """Before ``path``'s page-cache descriptor is closed: wait for its queued writes (they use
        both descriptors) and close its ``O_DIRECT`` one."""
        direct_fd = self._fds.pop(path, None)
        if self._writes is not None:
            self._writes.drain()
        if direct_fd is not None:
            os.close(direct_fd)

    def close(self) -> None:
        """Wait for the queued writes and stop the thread; raises a queued write's error. Closes
        no descriptor: callers :meth:`forget` each file when they close it."""
        writes, self._writes = self._writes, None
        if writes is not None:
            writes.close()


class DirectTarget:
    """Synchronous writes to one file or device at ``path`` (open as ``fd``): a write of whole pages
    at a page-aligned offset goes ``O_DIRECT`` through a page-aligned bounce buffer of the calling
    thread's own (no copy into the page cache, no contention on the file's lock between writers);
    others, and every write once ``O_DIRECT`` is refused, through the page cache. Thread safe."""

    def __init__(self, path: str, fd: int, *, bounce_bytes: int = BLOCK_BOUNCE_BYTES) -> None:
        self._path = path
        self._fd = fd
        self._bounce_bytes = bounce_bytes
        self._direct_fd: int | None = open_direct(path)
        self._local = threading.local()
        self._bounce: list[AlignedBuffer] = []
        self._lock = threading.Lock()

    @property
    def direct(self) -> bool:
        """Whether whole-page writes still go ``O_DIRECT`` (False once opened or written refused)."""
        return self._direct_fd is not None

    def write(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        """Write ``data`` at ``offset``; ``O_DIRECT`` when both are whole pages."""
        n = len(data)
        direct_fd = self._direct_fd
        if direct_fd is None or offset % PAGE_BYTES or n % PAGE_BYTES:
            write_at(self._fd, data, offset, path=self._path)
            return
        done = write_direct(direct_fd, data, offset, self._bounce_view(n), path=self._path)
        if done < n:
            self._direct_fd = None  # refused after all (alignment of this device): the page cache from now on
            write_at(self._fd, memoryview(data)[done:], offset + done, path=self._path)

    def _bounce_view(self, n: int) -> memoryview:
        buffer: AlignedBuffer | None = getattr(self._local, "buffer", None)
        if buffer is None or buffer.capacity < n:
            buffer = AlignedBuffer(max(n, self._bounce_bytes))
            self._local.buffer = buffer
            with self._lock:
                self._bounce.append(buffer)
        return buffer.view[:n]

    def close(self) -> None:
        """Close the ``O_DIRECT`` descriptor and unmap the bounce buffers (not ``fd``)."""
        if self._direct_fd is not None:
            os.close(self._direct_fd)
            self._direct_fd = None
        for buffer in self._bounce:
            buffer.close()
