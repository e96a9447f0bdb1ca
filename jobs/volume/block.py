"""Raw block volumes: the source device/image to read and the target to write, positionally.

The engine reads a block source in fixed blocks from several threads at once (``os.preadv`` via
:func:`jobs.volume.source.read_at`) and writes a restore target with ``os.pwrite``. A target can
be a regular file (an image: truncated to the snapshot size, so unwritten zero blocks stay holes)
or a device node. Whole-page writes go ``O_DIRECT`` (:class:`jobs.direct_io.DirectTarget`: copied
into a page-aligned buffer per writer thread): no copy into the page cache and no contention on the
file's lock between writers; where ``O_DIRECT`` is refused they use the page cache like the rest.
A device is not known to read as zeros, so zero runs are zeroed there with the
``BLKZEROOUT`` ioctl (thin-provisioned devices turn it into an unmap) and, where the ioctl is not
available, by writing zeros; ``write_sparse=False`` forces explicit zero writes everywhere.
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct
from typing import Final

from jobs.direct_io import DirectTarget
from jobs.errors import VolumeIOError
from jobs.volume.source import open_for_read
from jobs.volume.target import open_for_write, write_zeros

BLKZEROOUT: Final = 0x127F  # _IO(0x12, 127): zero a byte range of a block device
SECTOR_BYTES: Final = 512


class BlockSource:
    """A readable raw volume (block device or image file) of a fixed size."""

    def __init__(self, path: str) -> None:
        self.path = path
        path = os.path.realpath(path)  # /dev/disk/by-id/... names are symlinks to the device
        try:
            st = os.stat(path)
        except OSError as e:
            raise VolumeIOError(f"{path}: cannot open block volume: {e.strerror}") from e
        if not (stat.S_ISBLK(st.st_mode) or stat.S_ISREG(st.st_mode)):
            raise VolumeIOError(f"{path}: not a block device or image file")
        self.fd = open_for_read(path)
        self.size = os.lseek(self.fd, 0, os.SEEK_END)  # st_size is 0 for devices

    def close(self) -> None:
        """Close the volume."""
        os.close(self.fd)


class BlockTarget:
    """A writable raw volume: an image file (created if missing) or an existing device."""

    def __init__(self, path: str, size: int, *, write_sparse: bool) -> None:
        self.path = path
        self.write_sparse = write_sparse
        path = os.path.realpath(path)  # /dev/disk/by-id/... names are symlinks to the device
        try:
            st: os.stat_result | None = os.stat(path)
        except FileNotFoundError:
            st = None
        except OSError as e:
            raise VolumeIOError(f"{path}: cannot open block target: {e.strerror}") from e
        self.is_device = st is not None and stat.S_ISBLK(st.st_mode)
        if st is not None and not (self.is_device or stat.S_ISREG(st.st_mode)):
            raise VolumeIOError(f"{path}: not a block device or image file")
        if self.is_device:
            self.fd = open_for_write(path)
            capacity = os.lseek(self.fd, 0, os.SEEK_END)
            if capacity < size:
                os.close(self.fd)
                raise VolumeIOError(f"{path}: device has {capacity} bytes, the snapshot needs {size}")
        else:
            try:
                self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                os.ftruncate(self.fd, size)  # after O_TRUNC: every block reads as zero (a hole)
            except OSError as e:
                raise VolumeIOError(f"{path}: cannot create image file: {e.strerror}") from e
        self._writes = DirectTarget(self.path, self.fd)  # errors name the path as given

    def write(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        """Write ``data`` at ``offset`` (thread safe); ``O_DIRECT`` when both are whole pages."""
        self._writes.write(data, offset)

    @property
    def needs_zeroing(self) -> bool:
        """True when zero runs must be written (a device, or sparse writing turned off)."""
        return self.is_device or not self.write_sparse

    def zero_range(self, offset: int, length: int) -> None:
        """Make ``[offset, offset + length)`` read as zeros on the target."""
        if self.is_device and self.write_sparse and offset % SECTOR_BYTES == 0 and length % SECTOR_BYTES == 0:
            try:
                fcntl.ioctl(self.fd, BLKZEROOUT, struct.pack("=QQ", offset, length))
                return
            except OSError:
                pass  # not supported by this device: fall back to writing zeros
        write_zeros(self.fd, offset, length, path=self.path)

    def close(self) -> None:
        """Flush and close the target."""
        try:
            os.fsync(self.fd)
        except OSError as e:
            raise VolumeIOError(f"{self.path}: cannot flush: {e.strerror}") from e
        finally:
            os.close(self.fd)
            self._writes.close()
