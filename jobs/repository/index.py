"""Index files (``index/<random>``) and the in-memory index built from them (FORMAT.md §7).

An index file lists, for packs that were completely uploaded, every blob's pack, offset and
lengths. It is written only after its packs exist (write ordering), and names the index files
it supersedes (written by prune) so readers can ignore those if a crash left them behind.

Plaintext layout, snappy-compressed then sealed with AAD ``"snapmover-index:" ‖ name``::

    magic "SMIX" | version u8 | JSON-header length u32 | JSON header {"packs": [...], "supersedes": [...]}
    entries: chunk id (32) | pack number u32 | kind u8 | flags u8 | offset u32 | length u32 | raw length u32

The in-memory :class:`Index` keeps one small tuple per blob, keyed by the 32-byte id.
"""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import snappy

from jobs.errors import IntegrityError
from jobs.repository.crypto import open_sealed, seal

INDEX_PREFIX: Final = "index/"
INDEX_MAGIC: Final = b"SMIX"
INDEX_VERSION: Final = 1
INDEX_HEAD: Final = struct.Struct("<4sBI")
INDEX_ENTRY: Final = struct.Struct("<32sIBBIII")


def index_aad(name: str) -> bytes:
    """Associated data binding an index file to its name."""
    return b"snapmover-index:" + name.encode()


class Location(NamedTuple):
    """Where one blob is stored."""

    pack: str
    kind: int
    offset: int
    length: int
    raw_length: int
    compressed: bool


@dataclass
class IndexFile:
    """The decoded content of one index file."""

    entries: list[tuple[bytes, Location]] = field(default_factory=list)
    supersedes: list[str] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)  # snapshot ids this file records (FORMAT.md §7)


def encode_index(
    key: bytes,
    name: str,
    entries: Iterable[tuple[bytes, Location]],
    supersedes: list[str],
    snapshots: list[str] | None = None,
) -> bytes:
    """Serialize and seal one index file (``snapshots``: the ids of the snapshots it records)."""
    packs: dict[str, int] = {}
    rows = []
    for cid, loc in entries:
        number = packs.setdefault(loc.pack, len(packs))
        rows.append(
            INDEX_ENTRY.pack(cid, number, loc.kind, int(loc.compressed), loc.offset, loc.length, loc.raw_length)
        )
    head: dict[str, Any] = {"packs": list(packs), "supersedes": supersedes}
    if snapshots:
        head["snapshots"] = sorted(snapshots)
    header = json.dumps(head, separators=(",", ":")).encode()
    plain = INDEX_HEAD.pack(INDEX_MAGIC, INDEX_VERSION, len(header)) + header + b"".join(rows)
    return seal(key, snappy.compress(plain), index_aad(name))


def decode_index(key: bytes, name: str, sealed: bytes) -> IndexFile:
    """Authenticate and parse one index file; IntegrityError naming it."""
    compressed = open_sealed(key, sealed, index_aad(name), f"index file {name}")
    try:
        plain = snappy.decompress(compressed)
        magic, version, hlen = INDEX_HEAD.unpack_from(plain, 0)
        if magic != INDEX_MAGIC or version != INDEX_VERSION:
            raise ValueError(f"unsupported index version {version}")
        header = json.loads(plain[INDEX_HEAD.size : INDEX_HEAD.size + hlen])
        packs: list[str] = header["packs"]
        body = memoryview(plain)[INDEX_HEAD.size + hlen :]
        if len(body) % INDEX_ENTRY.size:
            raise ValueError("truncated entry table")
        entries = [
            (cid, Location(packs[n], kind, offset, length, raw, bool(flags & 1)))
            for cid, n, kind, flags, offset, length, raw in INDEX_ENTRY.iter_unpack(body)
        ]
        return IndexFile(entries, list(header.get("supersedes", [])), [str(s) for s in header.get("snapshots", [])])
    except (ValueError, KeyError, IndexError, struct.error) as e:
        raise IntegrityError(f"index file {name} is malformed: {e}") from e
    except Exception as e:
        raise IntegrityError(f"index file {name} is malformed: {type(e).__name__}") from e


class Index:
    """Chunk id → location for every indexed blob; thread safe.

    Pack names are interned as small integers so an entry costs one short tuple.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._packs: list[str] = []
        self._pack_numbers: dict[str, int] = {}
        self._entries: dict[bytes, tuple[int, int, int, int, int, bool]] = {}

    def add(self, cid: bytes, loc: Location) -> None:
        """Record a blob (a later entry for the same id replaces the earlier one)."""
        with self._lock:
            number = self._pack_numbers.get(loc.pack)
            if number is None:
                number = self._pack_numbers[loc.pack] = len(self._packs)
                self._packs.append(loc.pack)
            self._entries[cid] = (number, loc.kind, loc.offset, loc.length, loc.raw_length, loc.compressed)

    def get(self, cid: bytes) -> Location | None:
        """The blob's location, or None."""
        entry = self._entries.get(cid)
        if entry is None:
            return None
        number, kind, offset, length, raw, compressed = entry
        return Location(self._packs[number], kind, offset, length, raw, compressed)

    def __contains__(self, cid: object) -> bool:
        return cid in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> Iterator[tuple[bytes, Location]]:
        """Every (id, location); a snapshot copy, safe while others add."""
        with self._lock:
            snapshot = list(self._entries.items())
            packs = list(self._packs)
        for cid, (number, kind, offset, length, raw, compressed) in snapshot:
            yield cid, Location(packs[number], kind, offset, length, raw, compressed)

    def packs(self) -> set[str]:
        """Names of every pack that holds at least one indexed blob."""
        with self._lock:
            used = {n for n, *_ in self._entries.values()}
            return {self._packs[n] for n in used}
