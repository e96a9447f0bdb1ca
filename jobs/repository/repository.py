"""The repository: an encrypted, deduplicating store of chunks, trees and snapshots.

This is the API the engine uses (``jobs.engine``): :meth:`Repository.init` / :meth:`Repository.open`,
then ``chunk_id`` / ``has_blob`` / ``add_blob`` from many worker threads, ``flush`` to make the
added blobs durable and indexed, ``save_snapshot`` last. Reading: ``load_blob`` / ``load_blobs``
verify every blob. Maintenance (``forget``, ``prune``, ``check``) lives in
:mod:`jobs.repository.maintenance`. The format is specified in ``jobs/FORMAT.md``.

Threading: ``add_blob`` compresses in the caller's thread, holds the repository lock only to
reserve the blob's bytes in the open pack's buffer, then encrypts straight into them (the libraries
release the GIL); no pack is ever joined from pieces. A closed pack is uploaded, once its last
writer is done, by a small pool with a bounded number of packs in flight, so memory stays bounded
(pack buffers are reused) and a slow storage applies back-pressure to the pipeline.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import blake3

from jobs.errors import (
    IntegrityError,
    ObjectExistsError,
    ObjectNotFoundError,
    RepositoryExistsError,
    RepositoryNotFoundError,
    SnapshotNotFoundError,
    UsageError,
)
from jobs.repository.crypto import KdfParams, MasterKeys, open_sealed, seal
from jobs.repository.index import INDEX_PREFIX, Index, IndexRows, Location, decode_index_rows, encode_index
from jobs.repository.keys import KEYS_PREFIX, add_key, open_keys
from jobs.repository.locks import LockManager
from jobs.repository.packs import (
    BLOB_OVERHEAD_BYTES,
    FLAG_SNAPPY,
    KIND_CODES,
    KIND_NAMES,
    BlobData,
    PackEntry,
    compress_bound,
    compress_chunk,
    encode_pack_trailer,
    open_blob,
    pack_trailer_length,
    seal_blob_into,
    sealed_blob_length,
)
from jobs.repository.snapshots import (
    FORGOTTEN_PREFIX,
    SNAPSHOTS_PREFIX,
    SnapshotManifest,
    encode_tombstone,
    tombstone_is_authentic,
)
from jobs.storage.base import PAGE_BYTES, AlignedBuffer, Storage, round_up

log = logging.getLogger(__name__)

KiB: Final = 1024
MiB: Final = 1024 * KiB
REPOSITORY_VERSION: Final = 1
SUPPORTED_VERSIONS: Final = frozenset({1})
CONFIG_NAME: Final = "config"
CONFIG_AAD: Final = b"snapmover-config"
DATA_PREFIX: Final = "data/"
DEFAULT_PACK_TARGET_BYTES: Final = 16 * MiB
DEFAULT_BLOCK_SIZE: Final = 1 * MiB
# pyfastcdc limits: min <= 1 MiB, avg <= 4 MiB, max <= 16 MiB.
DEFAULT_CDC_MIN_BYTES: Final = 512 * KiB
DEFAULT_CDC_AVG_BYTES: Final = 1 * MiB
DEFAULT_CDC_MAX_BYTES: Final = 8 * MiB
# Packs uploading or waiting to upload: with the open packs, bounds the pack buffers in memory.
PACKS_IN_FLIGHT: Final = 3
OPEN_PACKS: Final = 2  # one being filled per blob kind (data, tree)
# Room past a full pack's blobs for its trailer (header entries of the last blobs added).
PACK_TRAILER_ROOM_BYTES: Final = 64 * KiB
# Ranged reads merge blobs separated by at most this gap, up to this many bytes per request.
READ_MERGE_GAP_BYTES: Final = 256 * KiB
READ_MAX_RANGE_BYTES: Final = 8 * MiB
# Uploaded packs' entries wait for an index file at most this many at a time (~250 bytes each
# while they wait): a backup of millions of blobs writes an index file every this many.
UNINDEXED_MAX_ENTRIES: Final = 65_536
# ... and, so a killed backup's uploaded data is found by the next run (which then deduplicates
# instead of uploading it again), also once this many packs or seconds have gone unindexed.
UNINDEXED_MAX_PACKS: Final = 8
UNINDEXED_MAX_SECONDS: Final = 10.0
SCRATCH_MIN_RAW_BYTES: Final = 1 * MiB  # a compression buffer starts this big (grows to the largest chunk)


@dataclass(frozen=True)
class RepositoryConfig:
    """Parameters fixed at ``repo init`` (stored sealed in the ``config`` object)."""

    version: int
    id: str
    cdc_min_bytes: int
    cdc_avg_bytes: int
    cdc_max_bytes: int
    block_size: int
    pack_target_bytes: int

    @property
    def cdc_seed(self) -> int:
        """The chunker's secret gear-table seed (from the key material; never printed)."""
        return int(self.__dict__.get("_cdc_seed", 0))

    def with_seed(self, seed: int) -> RepositoryConfig:
        """A copy carrying the secret seed (kept out of ``asdict`` and ``repr``)."""
        copy = RepositoryConfig(**asdict(self))
        object.__setattr__(copy, "_cdc_seed", seed)
        return copy


@dataclass(frozen=True)
class RepositoryStats:
    """Sizes and counts, for ``repo info``."""

    snapshots: int
    packs: int
    blobs: int
    index_files: int
    stored_bytes: int


@dataclass
class _OpenPack:
    """A pack being filled: blobs are sealed straight into ``buffer`` at offsets reserved under
    the repository lock; it is uploaded once closed and its last writer is done."""

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


class Repository:
    """An opened repository. See the module docstring for the threading contract."""

    def __init__(
        self, storage: Storage, keys: MasterKeys, config: RepositoryConfig, *, upload_parallel: int = 2
    ) -> None:
        self.storage = storage
        self._keys = keys
        self.config = config.with_seed(keys.cdc_seed)
        self.id = config.id
        self._lock = threading.Lock()
        self._index = Index()
        self._read_buffers = threading.local()  # load_blobs: one reused read buffer per thread
        # load_blobs' reading threads live as long as the repository: a backup loads its parent's
        # trees once per directory, and a pool per call started and joined threads per directory.
        self._readers: dict[int, ThreadPoolExecutor] = {}
        self._scratch = threading.local()  # add_blob: one reused compression buffer per thread
        self.index_files: list[str] = []
        self.damaged: list[str] = []  # objects found corrupted while opening (reported by check)
        self._pending: set[bytes] = set()
        self.recorded_snapshots: dict[str, str] = {}  # snapshot id -> the index file recording it
        self._open: dict[int, _OpenPack | None] = {k: None for k in KIND_NAMES}
        self._unindexed: list[tuple[bytes, Location]] = []
        self._unindexed_packs = 0
        self._repacking = False  # prune's repacked blobs are indexed by its consolidated index only
        self._indexed_at = time.monotonic()  # when uploaded packs were last made findable
        self._uploader = ThreadPoolExecutor(max_workers=max(1, upload_parallel), thread_name_prefix="pack-upload")
        in_flight = max(PACKS_IN_FLIGHT, upload_parallel)
        self._in_flight = threading.BoundedSemaphore(in_flight)
        largest_blob = max(config.cdc_max_bytes, config.block_size) + BLOB_OVERHEAD_BYTES
        self._buffers = _PackBuffers(
            config.pack_target_bytes + largest_blob + PACK_TRAILER_ROOM_BYTES, in_flight, in_flight + OPEN_PACKS
        )
        self._futures: set[Future[None]] = set()
        self._upload_error: BaseException | None = None
        self._locks = LockManager(storage, keys.encryption)

    # --- lifecycle --------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        storage: Storage,
        password: str,
        *,
        pack_target_bytes: int = DEFAULT_PACK_TARGET_BYTES,
        kdf_params: KdfParams | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
    ) -> Repository:
        """Create a new repository in empty storage; RepositoryExistsError if one is there."""
        if not password:
            raise UsageError("the repository password is empty")
        if not (1 * MiB <= pack_target_bytes <= 512 * MiB):
            raise UsageError("the pack size must be between 1 and 512 MiB")
        if storage.exists(CONFIG_NAME) or any(True for _ in storage.list(KEYS_PREFIX)):
            raise RepositoryExistsError(f"a repository already exists at {storage.location}")
        keys = MasterKeys.generate()
        config = RepositoryConfig(
            version=REPOSITORY_VERSION,
            id=secrets.token_hex(16),
            cdc_min_bytes=DEFAULT_CDC_MIN_BYTES,
            cdc_avg_bytes=DEFAULT_CDC_AVG_BYTES,
            cdc_max_bytes=DEFAULT_CDC_MAX_BYTES,
            block_size=block_size,
            pack_target_bytes=pack_target_bytes,
        )
        # The create-only config put decides between concurrent inits; only the winner adds its key.
        try:
            storage.put(
                CONFIG_NAME, seal(keys.encryption, json.dumps(asdict(config)).encode(), CONFIG_AAD), overwrite=False
            )
        except ObjectExistsError as e:
            raise RepositoryExistsError(f"a repository already exists at {storage.location}") from e
        add_key(storage, keys, password, kdf_params or KdfParams())
        return cls(storage, keys, config)

    @classmethod
    def open(cls, storage: Storage, password: str, *, upload_parallel: int = 2) -> Repository:
        """Open an existing repository (keys, config, index)."""
        if not password:
            raise UsageError("the repository password is empty")
        if not storage.exists(CONFIG_NAME):
            if any(True for _ in storage.list(KEYS_PREFIX)) or any(True for _ in storage.list(DATA_PREFIX)):
                raise IntegrityError(
                    f"the repository at {storage.location} has keys and data but its config object "
                    f"{CONFIG_NAME!r} is missing: the repository is damaged"
                )
            raise RepositoryNotFoundError(
                f"no repository at {storage.location} (run `snapmover repo init` to create one)"
            )
        failure: IntegrityError | None = None
        for keys, _key_name in open_keys(storage, password):
            try:
                config = read_config(storage, keys)
                break
            except IntegrityError as e:
                failure = e  # a key that opens but belongs to no config (e.g. a lost concurrent init)
        else:
            assert failure is not None
            raise failure
        repo = cls(storage, keys, config, upload_parallel=upload_parallel)
        repo.reload_index()
        return repo

    def close(self) -> None:
        """Release locks and stop the upload pool (does not flush)."""
        self._locks.close()
        self._uploader.shutdown(wait=True)
        with self._lock:
            readers, self._readers = list(self._readers.values()), {}
        for pool in readers:
            pool.shutdown(wait=True)
        self._buffers.close()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- chunks ---------------------------------------------------------------------------------

    def chunk_id(self, data: BlobData) -> str:
        """Keyed BLAKE3 of the chunk, as 64 hex characters. Thread safe."""
        return blake3.blake3(data, key=self._keys.chunk_id).hexdigest()

    def has_blob(self, chunk_id: str) -> bool:
        """True when the blob is indexed or was added in this session. Thread safe."""
        cid = bytes.fromhex(chunk_id)
        return cid in self._index or cid in self._pending

    def blob_size(self, chunk_id: str) -> int | None:
        """Plaintext length of an indexed blob, or None."""
        loc = self._index.get(bytes.fromhex(chunk_id))
        return None if loc is None else loc.raw_length

    def add_blob(self, kind: str, chunk_id: str, data: bytes | memoryview) -> int:
        """Store one chunk unless known; returns the bytes it adds to the repository (0 when deduplicated)."""
        self._raise_upload_error()
        cid = bytes.fromhex(chunk_id)
        with self._lock:
            if cid in self._index or cid in self._pending:
                return 0
            self._pending.add(cid)
        code = KIND_CODES[kind]
        flag, payload = compress_chunk(data, self._compress_scratch(len(data)))
        length = sealed_blob_length(payload)
        pack, out = self._reserve(PackEntry(cid, code, 0, length, len(data), flag == FLAG_SNAPPY))
        ok = False
        try:
            seal_blob_into(self._keys.encryption, code, cid, flag, payload, out)
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
        """Append an already sealed blob (prune's repacking); uploaded by the next ``flush_packs``,
        which returns its entry (no index file lists it before: prune supersedes every old one)."""
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
                    if pack.size + pack_trailer_length(len(pack.entries)) >= self.config.pack_target_bytes:
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
            trailer = encode_pack_trailer(self._keys.encryption, pack.entries)
            end = pack.size + len(trailer)
            pack.buffer.view[pack.size : end] = trailer  # _reserve keeps room for it
            self.storage.put_aligned(pack.name, pack.buffer, end)
        finally:
            self._buffers.give(pack.buffer)
        with self._lock:
            for e in pack.entries:
                self._index.add(e.chunk_id, Location(pack.name, e.kind, e.offset, e.length, e.raw_length, e.compressed))
                self._pending.discard(e.chunk_id)
            self._unindexed.extend(
                (e.chunk_id, Location(pack.name, e.kind, e.offset, e.length, e.raw_length, e.compressed))
                for e in pack.entries
            )
            self._unindexed_packs += 1
            entries = self._take_unindexed(force=False)
        if entries:
            self.write_index(entries, supersedes=[])  # its packs are all uploaded: write order holds

    def _take_unindexed(self, *, force: bool) -> list[tuple[bytes, Location]]:
        """Under the lock: the uploaded entries due for an index file now (FORMAT.md §7), or none.

        Due when ``force`` or when the entries, packs or seconds since the last one reach their
        bound; only uploaded packs are ever listed, so the write order of FORMAT.md §10 holds."""
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

    def flush(self) -> None:
        """Upload open packs, wait for every upload, then write one index file for them."""
        self._close_open_packs()
        self._wait_uploads()
        with self._lock:
            entries = self._take_unindexed(force=True)
        if entries:
            self.write_index(entries, supersedes=[])

    def record_snapshot(self, snapshot_id: str) -> None:
        """After its manifest is written: an index file recording that the snapshot exists, so a
        manifest deleted later is noticed by check (a crash before this leaves it unrecorded)."""
        self.write_index([], supersedes=[], snapshots=[snapshot_id])

    def write_index(
        self, entries: list[tuple[bytes, Location]], supersedes: list[str], snapshots: list[str] | None = None
    ) -> str:
        """Write one index file (after its packs exist); returns its name."""
        name = INDEX_PREFIX + secrets.token_hex(16)
        sealed = encode_index(self._keys.encryption, name, entries, supersedes, snapshots)
        self.storage.put(name, sealed, overwrite=False)
        with self._lock:
            self.index_files.append(name)
            for sid in snapshots or []:
                self.recorded_snapshots[sid] = name
        return name

    def reload_index(self) -> None:
        """(Re)read every index file. A damaged one is skipped and remembered in ``damaged``.

        Files are kept as packed rows until added, and each is dropped once added, so the peak
        is about one packed copy of the index (no object per blob)."""
        names = sorted(o.name for o in self.storage.list(INDEX_PREFIX))
        files: dict[str, IndexRows] = {}
        damaged: list[str] = []

        def load(name: str) -> None:
            try:
                files[name] = decode_index_rows(self._keys.encryption, name, self.storage.get(name))
            except (IntegrityError, ObjectNotFoundError) as e:
                log.warning("skipping index file: %s", e)
                damaged.append(name)

        with ThreadPoolExecutor(max_workers=8) as pool:
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
            self._index = index
            self.recorded_snapshots = recorded
            self.index_files = kept
            self.damaged = [d for d in self.damaged if not d.startswith(INDEX_PREFIX)] + damaged

    @property
    def index(self) -> Index:
        """The in-memory index (read-only use)."""
        return self._index

    @property
    def keys(self) -> MasterKeys:
        """The master keys (for maintenance code in this package only)."""
        return self._keys

    # --- reading --------------------------------------------------------------------------------

    def _location(self, cid: bytes) -> Location:
        loc = self._index.get(cid)
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
            sealed = self.storage.get(loc.pack, loc.offset, loc.length)
        except ObjectNotFoundError as e:
            raise IntegrityError(f"pack {loc.pack} holding blob {chunk_id[:16]} is missing or truncated") from e
        return self._verify(cid, open_blob(self._keys.encryption, loc.kind, cid, sealed, loc.pack), loc.pack)

    def load_blobs(self, chunk_ids: Iterable[str], *, parallel: int = 4) -> Iterator[tuple[str, BlobData]]:
        """Read many blobs with merged, parallel ranged reads; yields each requested id once, any order."""
        by_pack: dict[str, list[tuple[bytes, Location]]] = defaultdict(list)
        seen: set[bytes] = set()
        for chunk_id in chunk_ids:
            cid = bytes.fromhex(chunk_id)
            if cid in seen:
                continue
            seen.add(cid)
            loc = self._location(cid)
            by_pack[loc.pack].append((cid, loc))
        ranges = [r for entries in by_pack.values() for r in _merge_ranges(entries)]
        if not ranges:
            return
        pool = self._reader_pool(max(1, parallel))
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

    def _reader_pool(self, parallel: int) -> ThreadPoolExecutor:
        """The long-lived pool of ``parallel`` reading threads (created on first use)."""
        with self._lock:
            pool = self._readers.get(parallel)
            if pool is None:
                pool = self._readers[parallel] = ThreadPoolExecutor(
                    max_workers=parallel, thread_name_prefix=f"blob-read{parallel}"
                )
            return pool

    def _read_range(self, entries: list[tuple[bytes, Location]]) -> list[tuple[str, BlobData]]:
        pack = entries[0][1].pack
        start = entries[0][1].offset
        end = entries[-1][1].offset + entries[-1][1].length
        # One read buffer per loading thread, reused range after range: the opened blobs never
        # point into it (decryption copies), so it is free again when this returns.
        buffer: bytearray | None = getattr(self._read_buffers, "buffer", None)
        if buffer is None or len(buffer) < end - start:
            buffer = self._read_buffers.buffer = bytearray(max(end - start, READ_MAX_RANGE_BYTES))
        try:
            data = self.storage.get_into(pack, start, memoryview(buffer)[: end - start])
        except ObjectNotFoundError as e:
            raise IntegrityError(f"pack {pack} is missing or truncated") from e
        out = []
        for cid, loc in entries:
            sealed = data[loc.offset - start : loc.offset - start + loc.length]
            plain = open_blob(self._keys.encryption, loc.kind, cid, sealed, pack)
            out.append((cid.hex(), self._verify(cid, plain, pack)))
        return out

    # --- snapshots ------------------------------------------------------------------------------

    def save_snapshot(self, manifest: SnapshotManifest) -> str:
        """Write the manifest (after ``flush``), then record it; returns the new snapshot id."""
        manifest.id = secrets.token_hex(32)
        if not manifest.time:
            manifest.time = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if not manifest.hostname:
            manifest.hostname = socket.gethostname()
        self.storage.put(SNAPSHOTS_PREFIX + manifest.id, manifest.encode(self._keys.encryption), overwrite=False)
        self.record_snapshot(manifest.id)
        return manifest.id

    def load_snapshot(self, snapshot_id: str) -> SnapshotManifest:
        """Load one manifest by its full id."""
        try:
            sealed = self.storage.get(SNAPSHOTS_PREFIX + snapshot_id)
        except ObjectNotFoundError as e:
            raise SnapshotNotFoundError(f"no snapshot {snapshot_id} in {self.storage.location}") from e
        return SnapshotManifest.decode(self._keys.encryption, snapshot_id, sealed)

    def snapshot_ids(self) -> list[str]:
        """Ids of every stored manifest."""
        return [o.name[len(SNAPSHOTS_PREFIX) :] for o in self.storage.list(SNAPSHOTS_PREFIX)]

    def list_snapshots(self) -> list[SnapshotManifest]:
        """Every readable snapshot, oldest first; damaged manifests are skipped and remembered."""
        ids = self.snapshot_ids()
        result: list[SnapshotManifest] = []
        damaged: list[str] = []

        def load(sid: str) -> None:
            try:
                result.append(self.load_snapshot(sid))
            except IntegrityError as e:
                log.warning("skipping snapshot: %s", e)
                damaged.append(SNAPSHOTS_PREFIX + sid)
            except SnapshotNotFoundError:
                pass  # forgotten while listing

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(load, ids))
        with self._lock:
            self.damaged = [d for d in self.damaged if not d.startswith(SNAPSHOTS_PREFIX)] + damaged
        return sorted(result, key=lambda s: (s.time, s.id))

    def find_snapshot(self, id_or_prefix: str) -> SnapshotManifest:
        """The snapshot with this id or unique id prefix."""
        wanted = id_or_prefix.strip().lower()
        if not wanted or any(c not in "0123456789abcdef" for c in wanted):
            raise SnapshotNotFoundError(f"no snapshot {id_or_prefix!r}: snapshot ids are hexadecimal")
        matches = [sid for sid in self.snapshot_ids() if sid.startswith(wanted)]
        if not matches:
            raise SnapshotNotFoundError(f"no snapshot {id_or_prefix} in {self.storage.location}")
        if len(matches) > 1:
            raise UsageError(f"snapshot id prefix {id_or_prefix} is ambiguous ({len(matches)} matches)")
        return self.load_snapshot(matches[0])

    def forget(self, snapshot_ids: Iterable[str]) -> None:
        """Delete snapshot manifests (their data is freed by ``prune``).

        A tombstone ``forgotten/<id>`` is written first: it tells check that the manifest is gone
        on purpose (a manifest deleted any other way is reported); prune removes it later."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for sid in snapshot_ids:
            self.storage.put(FORGOTTEN_PREFIX + sid, encode_tombstone(self._keys.encryption, sid, now))
            self.storage.delete(SNAPSHOTS_PREFIX + sid)

    def forgotten_snapshots(self) -> tuple[set[str], list[str]]:
        """(ids with an authentic tombstone, names of tombstones that do not authenticate)."""
        ids: set[str] = set()
        damaged: list[str] = []
        for obj in self.storage.list(FORGOTTEN_PREFIX):
            sid = obj.name[len(FORGOTTEN_PREFIX) :]
            try:
                sealed = self.storage.get(obj.name)
            except ObjectNotFoundError:
                continue  # removed by a prune meanwhile
            if tombstone_is_authentic(self._keys.encryption, sid, sealed):
                ids.add(sid)
            else:
                damaged.append(obj.name)
        return ids, damaged

    # --- locks and maintenance ------------------------------------------------------------------

    def lock(self, *, exclusive: bool = False, wait_seconds: float = 60.0) -> AbstractContextManager[None]:
        """Hold a shared (backup) or exclusive (prune) repository lock."""
        return self._locks.hold(exclusive=exclusive, wait_seconds=wait_seconds)

    @property
    def lock_manager(self) -> LockManager:
        """The lock manager (for check and unlock)."""
        return self._locks

    def unlock(self, *, stale_only: bool = True) -> int:
        """Remove stale locks (every foreign lock with ``stale_only=False``); returns how many."""
        return self._locks.remove_stale(stale_only=stale_only)

    def prune(self) -> Any:
        """Free the space of forgotten snapshots; see :func:`jobs.repository.maintenance.prune`."""
        from jobs.repository.maintenance import prune

        return prune(self)

    def check(self, *, read_data: bool = False) -> Any:
        """Verify the repository; see :func:`jobs.repository.maintenance.check`."""
        from jobs.repository.maintenance import check

        return check(self, read_data=read_data)

    def stats(self) -> RepositoryStats:
        """Counts and sizes of what is stored."""
        packs = [o for o in self.storage.list(DATA_PREFIX)]
        return RepositoryStats(
            snapshots=len(self.snapshot_ids()),
            packs=len(packs),
            blobs=len(self._index),
            index_files=len(self.index_files),
            stored_bytes=sum(o.size for o in self.storage.list()),
        )

    def add_password(self, password: str, kdf_params: KdfParams | None = None) -> str:
        """Add another key file opening this repository with ``password``; returns its name."""
        if not password:
            raise UsageError("the new password is empty")
        return add_key(self.storage, self._keys, password, kdf_params or KdfParams())

    def flush_packs(self) -> list[tuple[bytes, Location]]:
        """Upload open packs and return their entries without writing an index (prune writes its own)."""
        self._close_open_packs()
        self._wait_uploads()
        with self._lock:
            entries = self._take_unindexed(force=True)
            self._repacking = False
        return entries


def read_config(storage: Storage, keys: MasterKeys) -> RepositoryConfig:
    """Load and authenticate the ``config`` object."""
    try:
        sealed = storage.get(CONFIG_NAME)
    except ObjectNotFoundError as e:
        raise RepositoryNotFoundError(f"no repository config at {storage.location}") from e
    plain = open_sealed(keys.encryption, sealed, CONFIG_AAD, f"repository config object {CONFIG_NAME!r}")
    try:
        config = RepositoryConfig(**json.loads(plain))
    except (ValueError, TypeError) as e:
        raise IntegrityError(f"repository config object {CONFIG_NAME!r} is malformed") from e
    if config.version not in SUPPORTED_VERSIONS:
        raise IntegrityError(
            f"repository format version {config.version} is not supported by this snapmover "
            f"(supports {sorted(SUPPORTED_VERSIONS)}); upgrade snapmover"
        )
    return config


def _merge_ranges(entries: list[tuple[bytes, Location]]) -> Iterator[list[tuple[bytes, Location]]]:
    entries.sort(key=lambda e: e[1].offset)
    group: list[tuple[bytes, Location]] = []
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
