"""Snapshot manifests (``snapshots/<id>``): the root of one backup (FORMAT.md §8).

A manifest is sealed JSON bound to its id. It is written after every pack and index it
depends on, so a snapshot that exists is always complete; an index file written right after
records its id, so a manifest deleted later is noticed (FORMAT.md §7). :class:`SnapshotStore`
reads and writes them, and the tombstones of forgotten snapshots, for the repository facade.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from jobs.errors import IntegrityError, ObjectNotFoundError, SnapshotNotFoundError, UsageError
from jobs.repository.crypto import open_sealed, seal
from jobs.storage.base import Storage

log = logging.getLogger(__name__)

SNAPSHOTS_PREFIX: Final = "snapshots/"
SNAPSHOT_VERSION: Final = 1  # tombstones, and manifests of backups that excluded nothing
SNAPSHOT_VERSION_EXCLUDES: Final = 2  # a manifest with an ``excludes`` list (FORMAT.md §8)
SUPPORTED_SNAPSHOT_VERSIONS: Final = frozenset({SNAPSHOT_VERSION, SNAPSHOT_VERSION_EXCLUDES})
FORGOTTEN_PREFIX: Final = "forgotten/"  # tombstones: snapshots removed on purpose (FORMAT.md §8)
LIST_PARALLEL: Final = 8  # manifests read at once by SnapshotStore.load_all


def forgotten_aad(snapshot_id: str) -> bytes:
    """Associated data binding a tombstone to the snapshot id it names."""
    return b"snapmover-forgotten:" + snapshot_id.encode()


def encode_tombstone(key: bytes, snapshot_id: str, time: str) -> bytes:
    """The sealed record that ``snapshot_id`` was forgotten on purpose."""
    return seal(key, json.dumps({"v": SNAPSHOT_VERSION, "time": time}).encode(), forgotten_aad(snapshot_id))


def tombstone_is_authentic(key: bytes, snapshot_id: str, sealed: bytes) -> bool:
    """Whether a tombstone was written with the repository key for this very id."""
    try:
        open_sealed(key, sealed, forgotten_aad(snapshot_id), f"{FORGOTTEN_PREFIX}{snapshot_id}")
    except IntegrityError:
        return False
    return True


def snapshot_aad(snapshot_id: str) -> bytes:
    """Associated data binding a manifest to its id."""
    return b"snapmover-snapshot:" + snapshot_id.encode()


@dataclass
class SnapshotManifest:
    """What one backup produced: where its tree starts, where it came from, its figures."""

    id: str = ""
    time: str = ""  # RFC 3339, UTC
    hostname: str = ""
    source: str = ""  # the source path, or "<namespace>/<pvc>"
    mode: str = "filesystem"  # "filesystem" | "block"
    tags: dict[str, str] = field(default_factory=dict)
    root: str = ""  # chunk id of the root tree blob
    parent: str | None = None
    summary: dict[str, int | float] = field(default_factory=dict)
    excludes: list[str] = field(default_factory=list)  # the exclude patterns the backup ran with

    def encode(self, key: bytes) -> bytes:
        """Seal the manifest (its id must be set).

        Without excludes the manifest is written as version 1, so snapmover releases that
        predate excludes still read it; with them as version 2 (older readers refuse it)."""
        body = {k: v for k, v in asdict(self).items() if k != "id"}
        body["v"] = SNAPSHOT_VERSION_EXCLUDES if self.excludes else SNAPSHOT_VERSION
        if not self.excludes:
            del body["excludes"]
        return seal(key, json.dumps(body, sort_keys=True).encode(), snapshot_aad(self.id))

    @classmethod
    def decode(cls, key: bytes, snapshot_id: str, sealed: bytes) -> SnapshotManifest:
        """Authenticate and parse a manifest; IntegrityError naming it."""
        name = SNAPSHOTS_PREFIX + snapshot_id
        plain = open_sealed(key, sealed, snapshot_aad(snapshot_id), f"snapshot {name}")
        try:
            body: dict[str, Any] = json.loads(plain)
            version = body.pop("v", None)
            if version not in SUPPORTED_SNAPSHOT_VERSIONS:
                raise ValueError(f"unsupported snapshot version {version!r} (a newer snapmover wrote it?)")
            if version == SNAPSHOT_VERSION and "excludes" in body:
                raise ValueError("a version 1 manifest has no excludes")
            return cls(id=snapshot_id, **body)
        except (ValueError, TypeError) as e:
            raise IntegrityError(f"snapshot {name} is malformed: {e}") from e


class SnapshotStore:
    """The snapshot manifests and tombstones of one repository (``snapshots/``, ``forgotten/``).

    Owned by the facade (:class:`jobs.repository.repository.Repository`), which records each saved
    snapshot in an index file and remembers the damaged manifests ``load_all`` reports."""

    def __init__(self, storage: Storage, key: bytes) -> None:
        self._storage = storage
        self._key = key

    def save(self, manifest: SnapshotManifest) -> str:
        """Give ``manifest`` a new id (and its time and host when unset) and write it; returns the id."""
        manifest.id = secrets.token_hex(32)
        if not manifest.time:
            manifest.time = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if not manifest.hostname:
            manifest.hostname = socket.gethostname()
        self._storage.put(SNAPSHOTS_PREFIX + manifest.id, manifest.encode(self._key), overwrite=False)
        return manifest.id

    def load(self, snapshot_id: str) -> SnapshotManifest:
        """Load one manifest by its full id."""
        try:
            sealed = self._storage.get(SNAPSHOTS_PREFIX + snapshot_id)
        except ObjectNotFoundError as e:
            raise SnapshotNotFoundError(f"no snapshot {snapshot_id} in {self._storage.location}") from e
        return SnapshotManifest.decode(self._key, snapshot_id, sealed)

    def ids(self) -> list[str]:
        """Ids of every stored manifest."""
        return [o.name[len(SNAPSHOTS_PREFIX) :] for o in self._storage.list(SNAPSHOTS_PREFIX)]

    def load_all(self) -> tuple[list[SnapshotManifest], list[str]]:
        """(every readable snapshot, oldest first; the names of the damaged manifests, skipped)."""
        ids = self.ids()
        result: list[SnapshotManifest] = []
        damaged: list[str] = []

        def load(sid: str) -> None:
            try:
                result.append(self.load(sid))
            except IntegrityError as e:
                log.warning("skipping snapshot: %s", e)
                damaged.append(SNAPSHOTS_PREFIX + sid)
            except SnapshotNotFoundError:
                pass  # forgotten while listing

        with ThreadPoolExecutor(max_workers=LIST_PARALLEL) as pool:
            list(pool.map(load, ids))
        return sorted(result, key=lambda s: (s.time, s.id)), damaged

    def find(self, id_or_prefix: str) -> SnapshotManifest:
        """The snapshot with this id or unique id prefix."""
        wanted = id_or_prefix.strip().lower()
        if not wanted or any(c not in "0123456789abcdef" for c in wanted):
            raise SnapshotNotFoundError(f"no snapshot {id_or_prefix!r}: snapshot ids are hexadecimal")
        matches = [sid for sid in self.ids() if sid.startswith(wanted)]
        if not matches:
            raise SnapshotNotFoundError(f"no snapshot {id_or_prefix} in {self._storage.location}")
        if len(matches) > 1:
            raise UsageError(f"snapshot id prefix {id_or_prefix} is ambiguous ({len(matches)} matches)")
        return self.load(matches[0])

    def forget(self, snapshot_ids: Iterable[str]) -> None:
        """Delete snapshot manifests (their data is freed by ``prune``).

        A tombstone ``forgotten/<id>`` is written first: it tells check that the manifest is gone
        on purpose (a manifest deleted any other way is reported); prune removes it later."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for sid in snapshot_ids:
            self._storage.put(FORGOTTEN_PREFIX + sid, encode_tombstone(self._key, sid, now))
            self._storage.delete(SNAPSHOTS_PREFIX + sid)

    def forgotten(self) -> tuple[set[str], list[str]]:
        """(ids with an authentic tombstone, names of tombstones that do not authenticate)."""
        ids: set[str] = set()
        damaged: list[str] = []
        for obj in self._storage.list(FORGOTTEN_PREFIX):
            sid = obj.name[len(FORGOTTEN_PREFIX) :]
            try:
                sealed = self._storage.get(obj.name)
            except ObjectNotFoundError:
                continue  # removed by a prune meanwhile
            if tombstone_is_authentic(self._key, sid, sealed):
                ids.add(sid)
            else:
                damaged.append(obj.name)
        return ids, damaged
