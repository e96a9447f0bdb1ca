"""Snapshot manifests (``snapshots/<id>``): the root of one backup (FORMAT.md §8).

A manifest is sealed JSON bound to its id. It is written last, after every pack and index it
depends on, so a snapshot that exists is always complete.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from jobs.errors import IntegrityError
from jobs.repository.crypto import open_sealed, seal

SNAPSHOTS_PREFIX: Final = "snapshots/"
SNAPSHOT_VERSION: Final = 1


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
