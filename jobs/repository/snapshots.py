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
SNAPSHOT_VERSION: Final = 1
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

    def encode(self, key: bytes) -> bytes:
        """Seal the manifest (its id must be set)."""
        body = {k: v for k, v in asdict(self).items() if k != "id"}
        body["v"] = SNAPSHOT_VERSION
        return seal(key, json.dumps(body, sort_keys=True).encode(), snapshot_aad(self.id))

    @classmethod
    def decode(cls, key: bytes, snapshot_id: str, sealed: bytes) -> SnapshotManifest:
        """Authenticate and parse a manifest; IntegrityError naming it."""
        name = SNAPSHOTS_PREFIX + snapshot_id
        plain = open_sealed(key, sealed, snapshot_aad(snapshot_id), f"snapshot {name}")
        try:
            body: dict[str, Any] = json.loads(plain)
            if body.pop("v", None) != SNAPSHOT_VERSION:
                raise ValueError("unsupported snapshot version")
            return cls(id=snapshot_id, **body)
        except (ValueError, TypeError) as e:
            raise IntegrityError(f"snapshot {name} is malformed: {e}") from e
