"""Writing a restore target: create entries, write file data positionally, make holes.

Used by the engine's restore pipeline, which first creates every entry (:func:`create_dir`,
:func:`create_file`, :func:`create_special`), then writes verified chunk data concurrently with
:func:`jobs.direct_io.write_at` (``os.pwrite``: no shared file offsets, so many threads can write
one file; large files' whole pages with ``O_DIRECT``, all of which lives in :mod:`jobs.direct_io`),
then links hardlinks and applies metadata (:mod:`jobs.volume.metadata`). An existing entry of another
type at a path is replaced; nothing outside the target directory is ever followed (``O_NOFOLLOW``).
"""

from __future__ import annotations

import os
import shutil
import stat

from jobs.direct_io import volume_error, write_at
from jobs.volume.metadata import FORMAT_BY_TYPE, NODE_SYMLINK
from jobs.volume.source import ZERO_BYTES

_WRITE_FLAGS = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC


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
        raise volume_error(path, "create directory", e) from e


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
        raise volume_error(path, "create file", e) from e
    try:
        if size:
            os.ftruncate(fd, size)
    except OSError as e:
        os.close(fd)
        raise volume_error(path, "create file", e) from e
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
        raise volume_error(path, f"create {kind}", e) from e


def create_hardlink(existing: str, path: str) -> None:
    """Make ``path`` another name of ``existing`` (hardlinks are restored as links)."""
    try:
        _clear(path, keep_dir=False)
        os.link(existing, path, follow_symlinks=False)
    except OSError as e:
        raise volume_error(path, "create hardlink", e) from e


def open_for_write(path: str) -> int:
    """Open an existing file or device for positional writes."""
    try:
        return os.open(path, _WRITE_FLAGS)
    except OSError as e:
        raise volume_error(path, "open for writing", e) from e


def write_zeros(fd: int, offset: int, length: int, *, path: str) -> None:
    """Write explicit zero bytes over ``[offset, offset + length)``."""
    end = offset + length
    while offset < end:
        n = min(end - offset, len(ZERO_BYTES))
        write_at(fd, memoryview(ZERO_BYTES)[:n], offset, path=path)
        offset += n
