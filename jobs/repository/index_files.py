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
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import chain
from typing import Final

from jobs.errors import IntegrityError, ObjectNotFoundError
from jobs.repository.index import INDEX_PREFIX, Index, IndexRows, Location, decode_index_rows, encode_index
from jobs.storage.base import Storage

log = logging.getLogger(__name__)

LOAD_PARALLEL: Final = 8  # index files read at once by reload
LOAD_WINDOW_BYTES: Final = 8 * 1024 * 1024  # at most this much of them (sealed sizes) held at once, or one file
# Stored bytes per index row (50 bytes before snappy; a row's 32 random id bytes do not
# compress): reload sizes the index's slot table from the files' sizes.
ROW_ESTIMATE_BYTES: Final = 44


class IndexFiles:
    """The index files of one repository as this process knows them."""

    def __init__(self, storage: Storage, key: bytes) -> None:
        self._storage = storage
        self._key = key
        self._lock = threading.Lock()
        self._index = Index()
        self._unloaded: list[str] = []  # adopted index files not in the index yet
        self.names: list[str] = []  # the index files in use (superseded ones left out)
        self.recorded_snapshots: dict[str, str] = {}  # snapshot id -> the index file recording it

    @property
    def index(self) -> Index:
        """The in-memory index of every index file in :attr:`names` (adopted ones are read in
        now if they are not yet)."""
        if self._unloaded:
            self._load_adopted()
        return self._index

    @index.setter
    def index(self, index: Index) -> None:
        self._index = index

    def adopt(self, names: list[str]) -> None:
        """Index files that other processes of this backup (its workers) wrote: they count as
        in use now and are read into the index when it is next used (a backup that ends its
        process then never reads them)."""
        with self._lock:
            self.names += names
            self._unloaded += names

    def _load_adopted(self) -> None:
        with self._lock:
            names, self._unloaded = self._unloaded, []
            for name in names:
                rows = decode_index_rows(self._key, name, self._storage.get(name))
                self._index.add_rows(rows.packs, rows.body)

    def write(
        self, entries: Iterable[tuple[bytes, Location]], supersedes: list[str], snapshots: list[str] | None = None
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

        Files are read ``LOAD_PARALLEL`` at a time (at most ``LOAD_WINDOW_BYTES`` of them held
        decoded) and added to the new index in name order as they arrive, so the peak is the
        index itself plus a few files, whatever the repository's size. A file found superseded
        only after it was added (a prune crashed before deleting it) makes a second pass that
        leaves it out. The index in use is dropped first (callers reload with no reader running)."""
        listed = sorted((o.name, o.size) for o in self._storage.list(INDEX_PREFIX))
        with self._lock:  # never two indexes at once: the old one goes before the new one is built
            self._index = Index()  # (its scratch file closes when the last reference goes)
            self._unloaded = []
        superseded: set[str] = set()
        while True:
            index, recorded, kept, damaged, seen_superseded = self._load(listed, superseded)
            if not seen_superseded & set(kept):
                break
            superseded |= seen_superseded  # rare: redo without the files named superseded
            index.close()
        with self._lock:
            self._index = index
            self.recorded_snapshots = recorded
            self.names = kept
        return damaged

    def _load(
        self, listed: list[tuple[str, int]], superseded: set[str]
    ) -> tuple[Index, dict[str, str], list[str], list[str], set[str]]:
        """One pass over the index files ``listed`` (name, size) but ``superseded``: (index,
        snapshot id -> recording file, files added, damaged files, every file named superseded)."""
        todo = [(name, size) for name, size in listed if name not in superseded]
        index = Index()
        index.reserve(sum(size for _, size in todo) // ROW_ESTIMATE_BYTES)
        recorded: dict[str, str] = {}
        kept: list[str] = []
        damaged: list[str] = []
        named: set[str] = set()

        def load(name: str) -> IndexRows | None:
            try:
                return decode_index_rows(self._key, name, self._storage.get(name))
            except (IntegrityError, ObjectNotFoundError) as e:
                log.warning("skipping index file: %s", e)
                return None

        window: deque[tuple[str, int, Future[IndexRows | None]]] = deque()
        held = 0
        with ThreadPoolExecutor(max_workers=LOAD_PARALLEL) as pool:
            for name, size in chain(todo, [("", 0)]):
                while window and (not name or len(window) >= LOAD_PARALLEL or held + size > LOAD_WINDOW_BYTES):
                    first, first_size, future = window.popleft()
                    held -= first_size
                    rows = future.result()
                    if rows is None:
                        damaged.append(first)
                        continue
                    named.update(rows.supersedes)
                    if first in named:
                        continue  # named superseded by a file added before it
                    index.add_rows(rows.packs, rows.body)
                    recorded.update(dict.fromkeys(rows.snapshots, first))
                    kept.append(first)
                if name:
                    window.append((name, size, pool.submit(load, name)))
                    held += size
        return index, recorded, kept, sorted(damaged), named
