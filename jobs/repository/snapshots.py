"""Snapshot manifests (``snapshots/<id>``): the root of one backup (FORMAT.md §8).

A manifest is sealed JSON bound to its id. It is written after every pack and index it
depends on, so a snapshot that exists is always complete; an index file written right after
records its id, so a manifest deleted later is noticed (FORMAT.md §7).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from jobs.errors import IntegrityError
from jobs.repository.crypto import open_sealed, seal

SNAPSHOTS_PREFIX: Final = "snapshots/"
SNAPSHOT_VERSION: Final = 1  # tombstones, and manifests of backups that excluded nothing
SNAPSHOT_VERSION_EXCLUDES: Final = 2  # a manifest with an ``excludes`` list (FORMAT.md §8)
SUPPORTED_SNAPSHOT_VERSIONS: Final = frozenset({SNAPSHOT_VERSION, SNAPSHOT_VERSION_EXCLUDES})
FORGOTTEN_PREFIX: Final = "forgotten/"  # tombstones: snapshots removed on purpose (FORMAT.md §8)


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
