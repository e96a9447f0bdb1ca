"""The blob reader: blobs found in the index, read from their packs, decrypted and verified.

Owned by the facade (:class:`jobs.repository.repository.Repository`), whose ``load_blob`` and
``load_blobs`` it carries out for restore, backup (a parent snapshot's trees) and maintenance. It
owns the range reads (neighbouring blobs of a pack merged into one ranged read), the long-lived
pools of reading threads, the per-thread read buffers, and verifying each blob against its keyed
id before it is handed out. The blob layout is :mod:`jobs.repository.packs`.

Threading: every method is thread safe; ``load_blobs`` may be called from several threads.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Final

import blake3

from jobs.errors import IntegrityError, ObjectNotFoundError
from jobs.repository.config import KiB, MiB
from jobs.repository.crypto import MasterKeys
from jobs.repository.index import Location
from jobs.repository.index_files import IndexFiles
from jobs.repository.packs import BlobData, open_blob
from jobs.storage.base import Storage

# Ranged reads merge blobs separated by at most this gap, up to this many bytes per request.
READ_MERGE_GAP_BYTES: Final = 256 * KiB
READ_MAX_RANGE_BYTES: Final = 8 * MiB
# A thread's read buffer starts this big and grows (rounded up to it) to its largest range so far:
# zero-filled when made, it costs resident memory for its whole size even when ranges are small.
READ_BUFFER_STEP_BYTES: Final = 1 * MiB

_Range = list[tuple[bytes, Location]]


class BlobReader:
    """Reads verified blobs of one repository; see the module docstring."""

    def __init__(self, storage: Storage, keys: MasterKeys, indexes: IndexFiles) -> None:
        self._storage = storage
        self._keys = keys
        self._indexes = indexes
        self._lock = threading.Lock()
        self._read_buffers = threading.local()  # load_blobs: one reused read buffer per thread
        # load_blobs' reading threads live as long as the reader: a backup loads its parent's
        # trees once per directory, and a pool per call started and joined threads per directory.
        self._pools: dict[int, ThreadPoolExecutor] = {}

    def close(self) -> None:
        """Stop the reading threads."""
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.shutdown(wait=True)

    def _location(self, cid: bytes) -> Location:
        # Every blob read is verified against ``cid`` (_verify), so the lookup need not read
        # the id's tail back from the index's scratch file.
        loc = self._indexes.index.get_for_read(cid)
        if loc is None:
            raise IntegrityError(f"blob {cid.hex()[:16]} is referenced but in no index (missing or damaged index)")
        return loc

    def _verify(self, cid: bytes, data: BlobData, where: str) -> BlobData:
        if blake3.blake3(data, key=self._keys.chunk_id).digest() != cid:
            raise IntegrityError(f"blob {cid.hex()[:16]} in {where} does not match its id")
        return data

    def load_blob(self, chunk_id: str) -> BlobData:
        """Read, decrypt and verify one blob; IntegrityError (naming the pack) when it is damaged."""
        cid = bytes.fromhex(chunk_id)
        loc = self._location(cid)
        try:
            sealed = self._storage.get(loc.pack, loc.offset, loc.length)
        except ObjectNotFoundError as e:
            raise IntegrityError(f"pack {loc.pack} holding blob {chunk_id[:16]} is missing or truncated") from e
        return self._verify(cid, open_blob(self._keys.encryption, loc.kind, cid, sealed, loc.pack), loc.pack)

    def load_blobs(self, chunk_ids: Iterable[str], *, parallel: int = 4) -> Iterator[tuple[str, BlobData]]:
        """Read many blobs with merged, parallel ranged reads; yields each requested id once, any order."""
        ranges = self._ranges(chunk_ids)
        if not ranges:
            return
        pool = self._pool(max(1, parallel))
        pending: set[Future[list[tuple[str, BlobData]]]] = set()
        todo = iter(ranges)
        window = max(1, parallel) * 2
        try:
            for r in todo:
                pending.add(pool.submit(self._read_range, r))
                if len(pending) >= window:
                    break
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield from future.result()
                    nxt = next(todo, None)
                    if nxt is not None:
                        pending.add(pool.submit(self._read_range, nxt))
        finally:
            # An abandoned or failed load leaves no read running behind the caller's back.
            for future in pending:
                future.cancel()
            wait(pending)

    def _ranges(self, chunk_ids: Iterable[str]) -> list[_Range]:
        """The distinct ``chunk_ids``' blobs as ranged reads, each of neighbouring blobs of one pack."""
        by_pack: dict[str, _Range] = defaultdict(list)
        seen: set[bytes] = set()
        for chunk_id in chunk_ids:
            cid = bytes.fromhex(chunk_id)
            if cid in seen:
                continue
            seen.add(cid)
            loc = self._location(cid)
            by_pack[loc.pack].append((cid, loc))
        return [r for entries in by_pack.values() for r in _merge_ranges(entries)]

    def _pool(self, parallel: int) -> ThreadPoolExecutor:
        """The long-lived pool of ``parallel`` reading threads (created on first use)."""
        with self._lock:
            pool = self._pools.get(parallel)
            if pool is None:
                pool = self._pools[parallel] = ThreadPoolExecutor(
                    max_workers=parallel, thread_name_prefix=f"blob-read{parallel}"
                )
            return pool

    def _read_range(self, entries: _Range) -> list[tuple[str, BlobData]]:
        pack = entries[0][1].pack
        start = entries[0][1].offset
        end = entries[-1][1].offset + entries[-1][1].length
        # One read buffer per loading thread, reused range after range: the opened blobs never
        # point into it (decryption copies), so it is free again when this returns.
        buffer: bytearray | None = getattr(self._read_buffers, "buffer", None)
        if buffer is None or len(buffer) < end - start:
            size = -(-(end - start) // READ_BUFFER_STEP_BYTES) * READ_BUFFER_STEP_BYTES
            buffer = self._read_buffers.buffer = bytearray(size)
        try:
            data = self._storage.get_into(pack, start, memoryview(buffer)[: end - start])
        except ObjectNotFoundError as e:
            raise IntegrityError(f"pack {pack} is missing or truncated") from e
        out = []
        for cid, loc in entries:
            sealed = data[loc.offset - start : loc.offset - start + loc.length]
            plain = open_blob(self._keys.encryption, loc.kind, cid, sealed, pack)
            out.append((cid.hex(), self._verify(cid, plain, pack)))
        return out


def _merge_ranges(entries: _Range) -> Iterator[_Range]:
    entries.sort(key=lambda e: e[1].offset)
    group: _Range = []
    start = end = 0
    for cid, loc in entries:
        if group and (
            loc.offset - end > READ_MERGE_GAP_BYTES or loc.offset + loc.length - start > READ_MAX_RANGE_BYTES
        ):
            yield group
            group = []
        if not group:
            start = loc.offset
        group.append((cid, loc))
        end = max(end, loc.offset + loc.length) if len(group) > 1 else loc.offset + loc.length
    if group:
        yield group
