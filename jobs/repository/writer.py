"""The pack writer: blobs into packs, packs uploaded, their entries into index files.

Owned by the facade (:class:`jobs.repository.repository.Repository`), whose ``add_blob``,
``flush`` and ``flush_packs`` it carries out; prune's repacking uses :meth:`PackWriter.append_sealed`.
It owns pack assembly (open packs, reused page-aligned pack buffers, the pack trailer), the upload
pool, and when uploaded packs' entries are written to an index file
(:meth:`PackWriter._take_index_batch`). The pack layout is :mod:`jobs.repository.packs`.

Threading: ``add_blob`` compresses in the caller's thread, holds the writer's lock only to
reserve the blob's bytes in the open pack's buffer, then encrypts straight into them (the libraries
release the GIL); no pack is ever joined from pieces. A closed pack is uploaded, once its last
writer is done, by a small pool with a bounded number of packs in flight, so memory stays bounded
(pack buffers are reused) and a slow storage applies back-pressure to the pipeline. A blob is
always either in the index or pending here, so a concurrent ``is_known`` never misses it.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Final

from jobs.direct_io import PAGE_BYTES, AlignedBuffer, round_up
from jobs.repository.config import DATA_PREFIX, KiB, MiB, RepositoryConfig
from jobs.repository.index import Location
from jobs.repository.index_files import IndexFiles
from jobs.repository.packs import (
    BLOB_OVERHEAD_BYTES,
    FLAG_SNAPPY,
    KIND_CODES,
    KIND_NAMES,
    PackEntry,
    compress_bound,
    compress_chunk,
    encode_pack_trailer,
    pack_trailer_length,
    seal_blob_into,
    sealed_blob_length,
)
from jobs.storage.base import Storage

# Packs uploading or waiting to upload: with the open packs, bounds the pack buffers in memory.
PACKS_IN_FLIGHT: Final = 3
OPEN_PACKS: Final = 2  # one being filled per blob kind (data, tree)
# Room past a full pack's blobs for its trailer (header entries of the last blobs added).
PACK_TRAILER_ROOM_BYTES: Final = 64 * KiB
# Uploaded packs' entries wait for an index file at most this many at a time (~250 bytes each
# while they wait): a backup of millions of blobs writes an index file every this many.
UNINDEXED_MAX_ENTRIES: Final = 65_536
# ... and, so a killed backup's uploaded data is found by the next run (which then deduplicates
# instead of uploading it again), also once this many packs or seconds have gone unindexed.
UNINDEXED_MAX_PACKS: Final = 8
UNINDEXED_MAX_SECONDS: Final = 10.0
SCRATCH_MIN_RAW_BYTES: Final = 1 * MiB  # a compression buffer starts this big (grows to the largest chunk)

IndexEntries = list[tuple[bytes, Location]]


@dataclass
class _OpenPack:
    """A pack being filled: blobs are sealed straight into ``buffer`` at offsets reserved under
    the writer's lock; it is uploaded once closed and its last writer is done."""

    name: str
    buffer: AlignedBuffer
    entries: list[PackEntry] = field(default_factory=list)
    size: int = 0
    writers: int = 0  # blobs reserved but not yet written
    closed: bool = False
    failed: bool = False  # a writer failed: the pack holds a torn blob and is never uploaded


class _PackBuffers:
    """Reusable pack buffers (a fresh mapping costs a page fault per 4 KiB on every pack), at
    most ``limit`` in use at once: packs being filled, waiting for an upload slot and uploading
    all hold one, so this, not the number of uploads, is what bounds their memory."""

    def __init__(self, capacity: int, keep: int, limit: int) -> None:
        self.capacity = capacity
        self._keep = keep
        self._free: list[AlignedBuffer] = []
        self._lock = threading.Lock()
        self._permits = threading.Semaphore(limit)

    def try_take(self, needed: int) -> AlignedBuffer | None:
        """A buffer for at least ``needed`` bytes, or None when ``limit`` are in use (never blocks)."""
        if not self._permits.acquire(blocking=False):
            return None
        if needed <= self.capacity:
            with self._lock:
                if self._free:
                    return self._free.pop()
            return AlignedBuffer(self.capacity)
        return AlignedBuffer(needed)  # one oversized blob (a huge tree): a buffer of its own

    def wait(self) -> None:
        """Block until a buffer is given back (or one is free); does not take it."""
        self._permits.acquire()
        self._permits.release()

    def give(self, buffer: AlignedBuffer) -> None:
        try:
            with self._lock:
                if buffer.capacity == round_up(self.capacity, PAGE_BYTES) and len(self._free) < self._keep:
                    self._free.append(buffer)
                    return
            buffer.close()
        finally:
            self._permits.release()

    def close(self) -> None:
        with self._lock:
            free, self._free = self._free, []
        for buffer in free:
            buffer.close()


def new_pack_name() -> str:
    """A random pack object name: ``data/<2 hex>/<32 hex>`` (reveals nothing about content)."""
    token = secrets.token_hex(16)
    return f"{DATA_PREFIX}{token[:2]}/{token}"


def _location(pack: str, e: PackEntry) -> Location:
    return Location(pack, e.kind, e.offset, e.length, e.raw_length, e.compressed)


class PackWriter:
    """Writes blobs into packs of about ``config.pack_target_bytes``; see the module docstring."""

    def __init__(
        self,
        storage: Storage,
        key: bytes,
        config: RepositoryConfig,
        indexes: IndexFiles,
        *,
        upload_parallel: int,
        packs_in_flight: int | None = None,
    ) -> None:
        self._storage = storage
        self._key = key
        self._pack_target_bytes = config.pack_target_bytes
        self._indexes = indexes
        self._lock = threading.Lock()
        self._scratch = threading.local()  # add_blob: one reused compression buffer per thread
        self._pending: set[bytes] = set()
        self._open: dict[int, _OpenPack | None] = {k: None for k in KIND_NAMES}
        self._unindexed: IndexEntries = []
        self._unindexed_packs = 0
        # prune's repacked blobs are indexed by its consolidated index only, which it writes from
        # the in-memory index's records (a repacked blob's record names its new pack once uploaded)
        self._repacking = False
        self._indexed_at = time.monotonic()  # when uploaded packs were last made findable
        self._uploader = ThreadPoolExecutor(max_workers=max(1, upload_parallel), thread_name_prefix="pack-upload")
        # packs_in_flight: a worker process of a multi-process backup holds fewer (they add up)
        in_flight = packs_in_flight or max(PACKS_IN_FLIGHT, upload_parallel)
        self._in_flight = threading.BoundedSemaphore(in_flight)
        largest_blob = max(config.cdc_max_bytes, config.block_size) + BLOB_OVERHEAD_BYTES
        self._buffers = _PackBuffers(
            config.pack_target_bytes + largest_blob + PACK_TRAILER_ROOM_BYTES, in_flight, in_flight + OPEN_PACKS
        )
        self._futures: set[Future[None]] = set()
        self._upload_error: BaseException | None = None

    def close(self) -> None:
        """Stop the upload pool (does not flush) and unmap the pack buffers."""
        self._uploader.shutdown(wait=True)
        self._buffers.close()

    def is_known(self, cid: bytes) -> bool:
        """True when the blob is indexed or was added in this session. Thread safe."""
        return cid in self._indexes.index or cid in self._pending

    def add_blob(self, kind: str, cid: bytes, data: bytes | memoryview) -> int:
        """Store one chunk unless known; returns the bytes it adds to the repository (0 when deduplicated)."""
        self._raise_upload_error()
        with self._lock:
            if cid in self._indexes.index or cid in self._pending:
                return 0
            self._pending.add(cid)
        code = KIND_CODES[kind]
        flag, payload = compress_chunk(data, self._compress_scratch(len(data)))
        length = sealed_blob_length(payload)
        pack, out = self._reserve(PackEntry(cid, code, 0, length, len(data), flag == FLAG_SNAPPY))
        ok = False
        try:
            seal_blob_into(self._key, code, cid, flag, payload, out)
            ok = True
        finally:
            self._written(pack, ok)
        return length

    def _compress_scratch(self, raw_length: int) -> bytearray:
        """This thread's compression buffer, grown to fit ``raw_length``: reused chunk after chunk,
        so compressing allocates nothing (large short-lived allocations by several threads
        are what bloats a process's heap beyond its data)."""
        need = compress_bound(raw_length)
        scratch: bytearray | None = getattr(self._scratch, "buffer", None)
        if scratch is None or len(scratch) < need:
            scratch = self._scratch.buffer = bytearray(max(need, compress_bound(SCRATCH_MIN_RAW_BYTES)))
        return scratch

    def append_sealed(self, chunk_id: bytes, kind: int, sealed: memoryview, raw_length: int, compressed: bool) -> None:
        """Append an already sealed blob (prune's repacking); uploaded by the next ``flush_packs``.
        No index file lists it and no entry is kept for it: once uploaded, its record in the
        in-memory index names the new pack, and prune writes its index from those records."""
        with self._lock:
            self._repacking = True
            self._pending.add(chunk_id)
        pack, out = self._reserve(PackEntry(chunk_id, kind, 0, len(sealed), raw_length, compressed))
        ok = False
        try:
            out[:] = sealed
            ok = True
        finally:
            self._written(pack, ok)

    def _reserve(self, entry: PackEntry) -> tuple[_OpenPack, memoryview]:
        """Room for one blob in the open pack of its kind (closing that pack when it is full).

        When a new pack needs a buffer and all are in use, wait for one outside the lock: the
        packs holding them are uploaded (or completed by their writers) meanwhile."""
        length = entry.length
        while True:
            ready: list[_OpenPack] = []
            with self._lock:
                pack = self._open[entry.kind]
                if (
                    pack is not None
                    and pack.size + length + pack_trailer_length(len(pack.entries) + 1) > pack.buffer.capacity
                ):
                    ready += self._close(pack)
                    pack = None
                if pack is None:
                    buffer = self._buffers.try_take(length + pack_trailer_length(1))
                    if buffer is not None:
                        pack = self._open[entry.kind] = _OpenPack(new_pack_name(), buffer)
                if pack is not None:
                    offset = pack.size
                    pack.entries.append(dataclasses.replace(entry, offset=offset))
                    pack.size += length
                    pack.writers += 1
                    if pack.size + pack_trailer_length(len(pack.entries)) >= self._pack_target_bytes:
                        ready += self._close(pack)
            for full in ready:
                self._submit(full)
            if pack is not None:
                return pack, pack.buffer.view[offset : offset + length]
            self._buffers.wait()

    def _close(self, pack: _OpenPack) -> list[_OpenPack]:
        """Under the lock: no more blobs go into ``pack``; returns it when it can be uploaded now."""
        pack.closed = True
        if self._open[pack.entries[0].kind] is pack:
            self._open[pack.entries[0].kind] = None
        return [pack] if pack.writers == 0 else []

    def _written(self, pack: _OpenPack, ok: bool) -> None:
        with self._lock:
            pack.writers -= 1
            pack.failed = pack.failed or not ok
            ready = pack.closed and pack.writers == 0
        if ready:
            self._submit(pack)

    def _submit(self, pack: _OpenPack) -> None:
        if pack.failed:  # never store a pack with a torn blob; the error that tore it is already raised
            with self._lock:
                self._pending.difference_update(e.chunk_id for e in pack.entries)
            self._buffers.give(pack.buffer)
            return
        self._in_flight.acquire()
        try:
            future = self._uploader.submit(self._upload, pack)
        except BaseException:
            self._in_flight.release()
            self._buffers.give(pack.buffer)
            raise
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._upload_done)

    def _upload_done(self, future: Future[None]) -> None:
        self._in_flight.release()
        with self._lock:
            self._futures.discard(future)
        error = future.exception()
        if error is not None and self._upload_error is None:
            self._upload_error = error

    def _upload(self, pack: _OpenPack) -> None:
        try:
            trailer = encode_pack_trailer(self._key, pack.entries)
            end = pack.size + len(trailer)
            pack.buffer.view[pack.size : end] = trailer  # _reserve keeps room for it
            self._storage.put_aligned(pack.name, pack.buffer, end)
        finally:
            self._buffers.give(pack.buffer)
        with self._lock:
            index = self._indexes.index
            uploaded = [(e.chunk_id, _location(pack.name, e)) for e in pack.entries]
            for cid, loc in uploaded:
                index.add(cid, loc)
                self._pending.discard(cid)
            if not self._repacking:  # prune lists repacked blobs from the index's records instead
                self._unindexed.extend(uploaded)
                self._unindexed_packs += 1
            entries = self._take_index_batch()
        if entries:
            self._indexes.write(entries, supersedes=[])  # its packs are all uploaded: write order holds

    def _take_index_batch(self, *, force: bool = False) -> IndexEntries:
        """The index-flush policy, under the lock: the uploaded entries due for an index file now
        (FORMAT.md §7), else none.

        Due when ``force`` (``flush``) or when the entries, packs or seconds since the last one
        reach their bound, so a killed backup's uploads are findable; never during prune's
        repacking until it forces (its consolidated index lists them). Only uploaded packs are
        ever listed, so the write order of FORMAT.md §10 holds."""
        now = time.monotonic()
        due = force or (
            len(self._unindexed) >= UNINDEXED_MAX_ENTRIES
            or self._unindexed_packs >= UNINDEXED_MAX_PACKS
            or now - self._indexed_at >= UNINDEXED_MAX_SECONDS
        )
        if not due or (self._repacking and not force):
            return []
        entries, self._unindexed, self._unindexed_packs, self._indexed_at = self._unindexed, [], 0, now
        return entries

    def _raise_upload_error(self) -> None:
        if self._upload_error is not None:
            raise self._upload_error

    def _wait_uploads(self) -> None:
        while True:
            with self._lock:
                futures = set(self._futures)
            if not futures:
                break
            wait(futures)
        self._raise_upload_error()

    def _close_open_packs(self) -> None:
        """Close and submit every open pack (callers have no ``add_blob`` running)."""
        ready: list[_OpenPack] = []
        with self._lock:
            for pack in list(self._open.values()):
                if pack is not None:
                    ready += self._close(pack)
        for pack in ready:
            self._submit(pack)

    def flush_packs(self) -> IndexEntries:
        """Upload open packs, wait for every upload, and return the entries no index file holds yet."""
        self._close_open_packs()
        self._wait_uploads()
        with self._lock:
            entries = self._take_index_batch(force=True)
            self._repacking = False
        return entries

    def flush(self) -> None:
        """:meth:`flush_packs`, then one index file for the entries it returns."""
        entries = self.flush_packs()
        if entries:
            self._indexes.write(entries, supersedes=[])
