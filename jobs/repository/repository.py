"""The repository: an encrypted, deduplicating store of chunks, trees and snapshots.

:class:`Repository` is the API the engine (``jobs.engine``), the CLI and maintenance use:
:meth:`Repository.init` / :meth:`Repository.open`, then ``chunk_id`` / ``has_blob`` / ``add_blob``
from many worker threads, ``flush`` to make the added blobs durable and indexed, ``save_snapshot``
last. Reading: ``load_blob`` / ``load_blobs`` verify every blob. The format is specified in
``jobs/FORMAT.md``.

It is a facade over the parts that do the work, each in its own module:

* :mod:`jobs.repository.writer` — :class:`~jobs.repository.writer.PackWriter`: pack assembly,
  upload, and when index files are written (its threading contract is the one ``add_blob`` has);
* :mod:`jobs.repository.reader` — :class:`~jobs.repository.reader.BlobReader`: range reads,
  decryption and verification, reading threads and buffers;
* :mod:`jobs.repository.index_files` — the index files and the in-memory index both share;
* :mod:`jobs.repository.snapshots` — :class:`~jobs.repository.snapshots.SnapshotStore`: the
  snapshot manifests and the tombstones of forgotten ones;
* :mod:`jobs.repository.config`, :mod:`jobs.repository.keys`, :mod:`jobs.repository.locks` — the
  config object, key files and locks.

Here is what joins them: creating and opening a repository, recording each saved snapshot in an
index file, which objects were found damaged, and the counts of ``repo info``. Maintenance
(``check``, ``prune``) sits above this, in :mod:`jobs.repository.maintenance`, and takes a
:class:`Repository`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Final

import blake3

from jobs.errors import (
    IntegrityError,
    RepositoryExistsError,
    RepositoryNotFoundError,
    UsageError,
)
from jobs.repository.config import (
    CONFIG_NAME,
    DATA_PREFIX,
    DEFAULT_BLOCK_SIZE,
    DEFAULT_CDC_AVG_BYTES,
    DEFAULT_CDC_MAX_BYTES,
    DEFAULT_CDC_MIN_BYTES,
    DEFAULT_PACK_TARGET_BYTES,
    REPOSITORY_VERSION,
    MiB,
    RepositoryConfig,
    read_config,
    write_config,
)
from jobs.repository.crypto import KdfParams, MasterKeys
from jobs.repository.index import INDEX_PREFIX, Index, Location
from jobs.repository.index_files import IndexFiles
from jobs.repository.keys import KEYS_PREFIX, add_key, open_keys
from jobs.repository.locks import LockManager
from jobs.repository.packs import BlobData
from jobs.repository.reader import BlobReader
from jobs.repository.snapshots import SNAPSHOTS_PREFIX, SnapshotManifest, SnapshotStore
from jobs.repository.writer import PackWriter
from jobs.storage.base import Storage

MIN_PACK_TARGET_BYTES: Final = 1 * MiB
MAX_PACK_TARGET_BYTES: Final = 512 * MiB


@dataclass(frozen=True)
class RepositoryStats:
    """Sizes and counts, for ``repo info``."""

    snapshots: int
    packs: int
    blobs: int
    index_files: int
    stored_bytes: int


class Repository:
    """An opened repository. See the module docstring for what it is made of."""

    def __init__(
        self,
        storage: Storage,
        keys: MasterKeys,
        config: RepositoryConfig,
        *,
        upload_parallel: int = 2,
        packs_in_flight: int | None = None,
    ) -> None:
        self.storage = storage
        self._keys = keys
        self.config = config.with_seed(keys.cdc_seed)
        self.id = config.id
        self.damaged: list[str] = []  # objects found corrupted while opening (reported by check)
        self._indexes = IndexFiles(storage, keys.encryption)
        self._writer = PackWriter(
            storage,
            keys.encryption,
            config,
            self._indexes,
            upload_parallel=upload_parallel,
            packs_in_flight=packs_in_flight,
        )
        self._reader = BlobReader(storage, keys, self._indexes)
        self._snapshots = SnapshotStore(storage, keys.encryption)
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
        if not (MIN_PACK_TARGET_BYTES <= pack_target_bytes <= MAX_PACK_TARGET_BYTES):
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
        write_config(storage, keys, config)  # decides between concurrent inits; only the winner adds its key
        add_key(storage, keys, password, kdf_params or KdfParams())
        return cls(storage, keys, config)

    @classmethod
    def open(cls, storage: Storage, password: str, *, upload_parallel: int = 2, load_index: bool = True) -> Repository:
        """Open an existing repository (keys, config, and the index unless ``load_index`` is off:
        its memory grows with the blob count, and forgetting snapshots needs none)."""
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
        if load_index:
            repo.reload_index()
        return repo

    def worker_copy(self, *, upload_parallel: int, packs_in_flight: int) -> Repository | None:
        """A repository object for a worker process about to be forked from this one (made in
        the parent, so nothing in it was ever used by a thread here): storage connections and a
        pack writer of its own, the same keys and config, and this repository's index, which the
        child shares copy-on-write and must claim with :meth:`after_fork` before anything else.
        ``packs_in_flight`` bounds its pack buffers being uploaded (the workers' add up).

        Blobs it adds go to its own packs and index files (FORMAT.md §7: a blob also added by
        another writer is a harmless duplicate). None when the storage cannot be reopened."""
        storage = self.storage.reopened()
        if storage is None:
            return None
        copy = Repository(
            storage, self._keys, self.config, upload_parallel=upload_parallel, packs_in_flight=packs_in_flight
        )
        copy._indexes.index = self._indexes.index
        copy._indexes.names = list(self._indexes.names)
        return copy

    def adopt_index_files(self, names: list[str]) -> None:
        """Index files a worker process of this backup wrote (:meth:`IndexFiles.adopt`)."""
        self._indexes.adopt(names)

    def after_fork(self) -> None:
        """In the forked child, first thing: take the inherited index over (:meth:`Index.after_fork`)."""
        self._indexes.index.after_fork()

    def close(self) -> None:
        """Release locks and stop the upload and reading threads (does not flush)."""
        self._locks.close()
        self._writer.close()
        self._reader.close()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- chunks: written by the pack writer, read by the blob reader -------------------------

    def chunk_id(self, data: BlobData) -> str:
        """Keyed BLAKE3 of the chunk, as 64 hex characters. Thread safe."""
        return blake3.blake3(data, key=self._keys.chunk_id).hexdigest()

    def has_blob(self, chunk_id: str) -> bool:
        """True when the blob is indexed or was added in this session. Thread safe."""
        return self._writer.is_known(bytes.fromhex(chunk_id))

    def blob_size(self, chunk_id: str) -> int | None:
        """Plaintext length of an indexed blob, or None."""
        loc = self._indexes.index.get(bytes.fromhex(chunk_id))
        return None if loc is None else loc.raw_length

    def add_blob(self, kind: str, chunk_id: str, data: bytes | memoryview) -> int:
        """Store one chunk unless known; returns the bytes it adds to the repository (0 when
        deduplicated). Thread safe; raises a failed pack upload's error."""
        return self._writer.add_blob(kind, bytes.fromhex(chunk_id), data)

    def append_sealed(self, chunk_id: bytes, kind: int, sealed: memoryview, raw_length: int, compressed: bool) -> None:
        """Append an already sealed blob (prune's repacking); uploaded by the next ``flush_packs``."""
        self._writer.append_sealed(chunk_id, kind, sealed, raw_length, compressed)

    def flush(self) -> None:
        """Upload open packs, wait for every upload, then write one index file for them."""
        self._writer.flush()

    def flush_packs(self) -> list[tuple[bytes, Location]]:
        """Upload open packs and return their entries without writing an index (prune writes its own)."""
        return self._writer.flush_packs()

    def load_blob(self, chunk_id: str) -> BlobData:
        """Read, decrypt and verify one blob; IntegrityError (naming the pack) when it is damaged."""
        return self._reader.load_blob(chunk_id)

    def load_blobs(self, chunk_ids: Iterable[str], *, parallel: int = 4) -> Iterator[tuple[str, BlobData]]:
        """Read many blobs with merged, parallel ranged reads; yields each requested id once, any order."""
        return self._reader.load_blobs(chunk_ids, parallel=parallel)

    # --- index files -----------------------------------------------------------------------------

    def write_index(
        self, entries: Iterable[tuple[bytes, Location]], supersedes: list[str], snapshots: list[str] | None = None
    ) -> str:
        """Write one index file (after its packs exist); returns its name."""
        return self._indexes.write(entries, supersedes, snapshots)

    def reload_index(self) -> None:
        """(Re)read every index file. A damaged one is skipped and remembered in ``damaged``."""
        damaged = self._indexes.reload()
        self.damaged = [d for d in self.damaged if not d.startswith(INDEX_PREFIX)] + damaged

    @property
    def index(self) -> Index:
        """The in-memory index (read-only use)."""
        return self._indexes.index

    @property
    def index_files(self) -> list[str]:
        """The index files in use (superseded ones left out)."""
        return self._indexes.names

    @property
    def recorded_snapshots(self) -> dict[str, str]:
        """Snapshot id -> the index file recording that the snapshot exists."""
        return self._indexes.recorded_snapshots

    @property
    def keys(self) -> MasterKeys:
        """The master keys (for maintenance code in this package only)."""
        return self._keys

    # --- snapshots ------------------------------------------------------------------------------

    def save_snapshot(self, manifest: SnapshotManifest) -> str:
        """Write the manifest (after ``flush``), then record it; returns the new snapshot id."""
        snapshot_id = self._snapshots.save(manifest)
        self.record_snapshot(snapshot_id)
        return snapshot_id

    def record_snapshot(self, snapshot_id: str) -> None:
        """After its manifest is written: an index file recording that the snapshot exists, so a
        manifest deleted later is noticed by check (a crash before this leaves it unrecorded)."""
        self.write_index([], supersedes=[], snapshots=[snapshot_id])

    def load_snapshot(self, snapshot_id: str) -> SnapshotManifest:
        """Load one manifest by its full id."""
        return self._snapshots.load(snapshot_id)

    def snapshot_ids(self) -> list[str]:
        """Ids of every stored manifest."""
        return self._snapshots.ids()

    def list_snapshots(self) -> list[SnapshotManifest]:
        """Every readable snapshot, oldest first; damaged manifests are skipped and remembered."""
        snapshots, damaged = self._snapshots.load_all()
        self.damaged = [d for d in self.damaged if not d.startswith(SNAPSHOTS_PREFIX)] + damaged
        return snapshots

    def find_snapshot(self, id_or_prefix: str) -> SnapshotManifest:
        """The snapshot with this id or unique id prefix."""
        return self._snapshots.find(id_or_prefix)

    def forget(self, snapshot_ids: Iterable[str]) -> None:
        """Delete snapshot manifests, each after its tombstone (their data is freed by ``prune``)."""
        self._snapshots.forget(snapshot_ids)

    def forgotten_snapshots(self) -> tuple[set[str], list[str]]:
        """(ids with an authentic tombstone, names of tombstones that do not authenticate)."""
        return self._snapshots.forgotten()

    # --- locks and counts ----------------------------------------------------------------------

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

    def stats(self) -> RepositoryStats:
        """Counts and sizes of what is stored."""
        packs = [o for o in self.storage.list(DATA_PREFIX)]
        return RepositoryStats(
            snapshots=len(self.snapshot_ids()),
            packs=len(packs),
            blobs=len(self.index),
            index_files=len(self.index_files),
            stored_bytes=sum(o.size for o in self.storage.list()),
        )

    def add_password(self, password: str, kdf_params: KdfParams | None = None) -> str:
        """Add another key file opening this repository with ``password``; returns its name."""
        if not password:
            raise UsageError("the new password is empty")
        return add_key(self.storage, self._keys, password, kdf_params or KdfParams())
