"""``file://`` storage: objects are files under a root directory.

Used for local repositories, tests, the demo and filesystem storage locations (an RWX PVC mounted
by every mover Job). Puts are atomic: the data goes to a temporary file in the target directory,
is fsynced and then renamed into place (``os.replace``), or hard-linked for create-only puts so
exactly one concurrent creator wins. Packs (``put_aligned``) are written with ``O_DIRECT`` when the
filesystem accepts it, falling back to buffered writes. A crash leaves at most a ``.tmp-*`` file, which ``list``
ignores.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

from jobs.direct_io import AlignedBuffer, write_new_file_direct
from jobs.errors import (
    ObjectExistsError,
    ObjectNotFoundError,
    StoragePermissionError,
    StorageUnavailableError,
    UsageError,
)
from jobs.storage.base import ObjectInfo, Storage

log = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"


def check_name(name: str) -> None:
    """Reject object names that could escape the storage root or are not plain relative paths."""
    if not name or name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in name.split("/")):
        raise UsageError(f"invalid storage object name {name!r}")


class FileStorage(Storage):
    """Objects as files below ``root``; thread safe (every operation is a single syscall chain)."""

    def __init__(self, root: str | os.PathLike[str], *, direct_io: bool = True) -> None:
        self._root = Path(root)
        self._direct_io = direct_io  # put_aligned tries O_DIRECT; cleared when the filesystem refuses it

    @property
    def location(self) -> str:
        return f"file://{self._root}"

    def reopened(self) -> Storage:
        return FileStorage(self._root, direct_io=self._direct_io)  # holds no connection: a plain copy

    @property
    def root(self) -> Path:
        """The directory holding the objects."""
        return self._root

    def _path(self, name: str) -> Path:
        check_name(name)
        return self._root / name

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path(name)
        try:
            with open(path, "rb", buffering=0) as f:
                if length is None:
                    f.seek(offset)
                    return f.read()
                data = os.pread(f.fileno(), length, offset)
        except FileNotFoundError as e:
            raise ObjectNotFoundError(f"object {name} not found in {self.location}") from e
        except OSError as e:
            raise _translate(e, name) from e
        _check_length(name, len(data), length, offset)
        return data

    def get_into(self, name: str, offset: int, buffer: memoryview) -> memoryview:
        path = self._path(name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as e:
            raise ObjectNotFoundError(f"object {name} not found in {self.location}") from e
        except OSError as e:
            raise _translate(e, name) from e
        try:
            got = 0
            while got < len(buffer):
                n = os.preadv(fd, [buffer[got:]], offset + got)
                if n == 0:
                    break
                got += n
        except OSError as e:
            raise _translate(e, name) from e
        finally:
            os.close(fd)
        _check_length(name, got, len(buffer), offset)
        return buffer

    def put(self, name: str, data: bytes | memoryview, *, overwrite: bool = True) -> None:
        self._store(name, overwrite, lambda fd: _write_all(fd, memoryview(data)))

    def put_aligned(self, name: str, buffer: AlignedBuffer, length: int, *, overwrite: bool = True) -> None:
        """Write with ``O_DIRECT`` where the filesystem allows it: no copy into the page cache (the
        CPU cost of buffered writes, and a backup no longer evicts the node's cached files)."""
        self._store(name, overwrite, lambda fd: self._write_direct(fd, buffer, length))

    def _write_direct(self, fd: int, buffer: AlignedBuffer, length: int) -> None:
        if self._direct_io:
            if write_new_file_direct(fd, buffer, length):
                return
            self._direct_io = False  # this filesystem refuses O_DIRECT (or its alignment): buffered from now on
            log.debug("storage: O_DIRECT refused on %s; using buffered writes", self._root)
        _write_all(fd, buffer.view[:length])

    def _store(self, name: str, overwrite: bool, write: Callable[[int], None]) -> None:
        path = self._path(name)
        tmp = path.parent / f"{TEMP_PREFIX}{path.name}-{secrets.token_hex(6)}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                write(fd)
                os.fsync(fd)
            finally:
                os.close(fd)
            if overwrite:
                os.replace(tmp, path)
            else:
                try:
                    os.link(tmp, path)
                except FileExistsError as e:
                    raise ObjectExistsError(f"object {name} already exists") from e
                finally:
                    os.unlink(tmp)
        except OSError as e:
            _remove_quietly(tmp)
            raise _translate(e, name) from e

    def delete(self, name: str) -> None:
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            return
        except OSError as e:
            raise _translate(e, name) from e

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self._root
        # Walk only the directory the prefix points into, then filter by the full prefix.
        head = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = base / head if head else base
        if not start.is_dir():
            return
        try:
            for dirpath, _dirnames, filenames in os.walk(start):
                rel_dir = os.path.relpath(dirpath, base)
                for fname in filenames:
                    if fname.startswith(TEMP_PREFIX):
                        continue
                    name = fname if rel_dir == "." else f"{rel_dir}/{fname}"
                    if not name.startswith(prefix):
                        continue
                    try:
                        size = os.stat(os.path.join(dirpath, fname)).st_size
                    except FileNotFoundError:
                        continue  # deleted while listing
                    yield ObjectInfo(name, size)
        except OSError as e:
            raise _translate(e, prefix) from e

    def stat(self, name: str) -> ObjectInfo:
        try:
            return ObjectInfo(name, os.stat(self._path(name)).st_size)
        except FileNotFoundError as e:
            raise ObjectNotFoundError(f"object {name} not found in {self.location}") from e
        except OSError as e:
            raise _translate(e, name) from e


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _check_length(name: str, got: int, length: int, offset: int) -> None:
    if got != length:
        raise ObjectNotFoundError(
            f"object {name}: short read ({got} of {length} bytes at offset {offset}); it is truncated"
        )


def _translate(e: OSError, name: str) -> Exception:
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StoragePermissionError(f"no permission for {name}: {e.strerror}")
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageUnavailableError(f"no space left writing {name}")
    if isinstance(e, NotADirectoryError | IsADirectoryError):
        return ObjectNotFoundError(f"object {name} is not a regular file")
    return StorageUnavailableError(f"I/O error on {name}: {e.strerror}")
