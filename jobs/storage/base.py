"""The storage contract: a flat namespace of immutable named objects.

The repository layer talks only to :class:`Storage`; ``file://`` and ``s3://`` implement it (one
conformance suite in ``tests/integration/test_storage_conformance.py`` runs against both).
Names are ``/``-separated relative paths such as ``data/3f/3f9a...``; they never start with
``/`` and never contain ``..``.

Contract every implementation keeps (and every caller may rely on):

* ``put`` is atomic: readers see either no object or the whole object, never a partial one,
  even if the writer crashes mid-way. With ``overwrite=False`` it is create-only: if the object
  exists it raises :class:`~jobs.errors.ObjectExistsError` (S3 ``If-None-Match: *``).
* ``get`` with a range returns exactly ``length`` bytes or raises; a short read is an error.
  ``get_into`` is the same ranged read of ``len(buffer)`` bytes; a backend that can read into
  the caller's (reused) buffer does so (``file://``), the others return a fresh object.
* ``list`` yields every object under a prefix, however many (pagination is internal).
* ``delete`` is idempotent: deleting a missing object succeeds.
* ``put_aligned`` stores the first ``length`` bytes of an :class:`~jobs.direct_io.AlignedBuffer`; a backend that
  can write page-aligned memory without copying it (``file://`` with ``O_DIRECT``) overrides it,
  the others store ``buffer.view[:length]`` through ``put``.
* All methods are thread safe. Transient failures raise
  :class:`~jobs.errors.StorageUnavailableError` (``retryable = True``); a missing object raises
  :class:`~jobs.errors.ObjectNotFoundError`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

from jobs.direct_io import AlignedBuffer


@dataclass(frozen=True)
class ObjectInfo:
    """Name and size in bytes of one stored object."""

    name: str
    size: int


class Storage(ABC):
    """Abstract object storage. See the module docstring for the contract."""

    @property
    @abstractmethod
    def location(self) -> str:
        """A printable description of where the objects live (no credentials)."""

    @abstractmethod
    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """Return the object's bytes, or ``length`` bytes from ``offset``."""

    def get_into(self, name: str, offset: int, buffer: memoryview) -> memoryview:
        """``len(buffer)`` bytes from ``offset``, read into ``buffer`` where the backend can.

        Returns the bytes read: ``buffer`` itself, or a view of a fresh object."""
        return memoryview(self.get(name, offset, len(buffer)))

    @abstractmethod
    def put(self, name: str, data: bytes | memoryview, *, overwrite: bool = True) -> None:
        """Store the object atomically; create-only when ``overwrite`` is False."""

    def put_aligned(self, name: str, buffer: AlignedBuffer, length: int, *, overwrite: bool = True) -> None:
        """Store ``buffer.view[:length]`` like :meth:`put` (backends may avoid copying it)."""
        with buffer.view[:length] as view:  # released even if a failed attempt's traceback lives on
            self.put(name, view, overwrite=overwrite)

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove the object; succeeds if it does not exist."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield every object whose name starts with ``prefix``, in no particular order."""

    @abstractmethod
    def stat(self, name: str) -> ObjectInfo:
        """Return the object's size; raise ObjectNotFoundError when it is missing."""

    def exists(self, name: str) -> bool:
        """True if the object exists."""
        from jobs.errors import ObjectNotFoundError

        try:
            self.stat(name)
        except ObjectNotFoundError:
            return False
        return True

    def reopened(self) -> Storage | None:
        """An equivalent storage with connections of its own, for a forked child process (a
        connection inherited across ``fork`` is shared with the parent and must not be used
        there); None when this backend cannot do that (callers then stay in one process).

        Called in the child right after ``fork``: it must not take locks the parent's threads
        may have held at that moment."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections; the storage must not be used afterwards."""
