"""The repository's index files taken together: which exist, the in-memory index they make, and
which snapshots they record.

Owned by the facade (:class:`jobs.repository.repository.Repository`) and shared with the pack
writer, which adds each uploaded pack's blobs to :attr:`IndexFiles.index` and writes index files
(:meth:`IndexFiles.write`), and the blob reader, which looks blobs up in it. The file format is
:mod:`jobs.repository.index` (FORMAT.md §7).

Threading: :meth:`write` and :meth:`reload` may run from any thread. :attr:`index` is replaced
whole by :meth:`reload`; adding to it is the pack writer's job, under the writer's lock.
"""

from __future__ import annotations

import logging
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from jobs.errors import IntegrityError, ObjectNotFoundError
from jobs.repository.index import INDEX_PREFIX, Index, IndexRows, Location, decode_index_rows, encode_index
from jobs.storage.base import Storage

log = logging.getLogger(__name__)

LOAD_PARALLEL: Final = 8  # index files read at once by reload


class IndexFiles:
    """The index files of one repository as this process knows them."""

    def __init__(self, storage: Storage, key: bytes) -> None:
        self._storage = storage
        self._key = key
        self._lock = threading.Lock()
        self.index = Index()
        self.names: list[str] = []  # the index files in use (superseded ones left out)
        self.recorded_snapshots: dict[str, str] = {}  # snapshot id -> the index file recording it

    def write(
        self, entries: list[tuple[bytes, Location]], supersedes: list[str], snapshots: list[str] | None = None
    ) -> str:
        """Write one index file (after its packs exist); returns its name."""
        name = INDEX_PREFIX + secrets.token_hex(16)
        sealed = encode_index(self._key, name, entries, supersedes, snapshots)
        self._storage.put(name, sealed, overwrite=False)
        with self._lock:
            self.names.append(name)
            for sid in snapshots or []:
                self.recorded_snapshots[sid] = name
        return name

    def reload(self) -> list[str]:
        """(Re)read every index file; returns the names of the damaged ones, which are skipped.

        Files are kept as packed rows until added, and each is dropped once added, so the peak
        is about one packed copy of the index (no object per blob)."""
        names = sorted(o.name for o in self._storage.list(INDEX_PREFIX))
        files: dict[str, IndexRows] = {}
        damaged: list[str] = []

        def load(name: str) -> None:
            try:
                files[name] = decode_index_rows(self._key, name, self._storage.get(name))
            except (IntegrityError, ObjectNotFoundError) as e:
                log.warning("skipping index file: %s", e)
                damaged.append(name)

        with ThreadPoolExecutor(max_workers=LOAD_PARALLEL) as pool:
            list(pool.map(load, names))
        superseded = {s for f in files.values() for s in f.supersedes}
        index = Index()
        recorded: dict[str, str] = {}
        kept = [n for n in sorted(files) if n not in superseded]
        for name in kept:
            rows = files.pop(name)
            index.add_rows(rows.packs, rows.body)
            recorded.update(dict.fromkeys(rows.snapshots, name))
        with self._lock:
            self.index = index
            self.recorded_snapshots = recorded
            self.names = kept
        return damaged
