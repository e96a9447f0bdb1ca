"""Index files (``index/<random>``) and the in-memory index built from them (FORMAT.md §7).

An index file lists, for packs that were completely uploaded, every blob's pack, offset and
lengths. It is written only after its packs exist (write ordering), and names the index files
it supersedes (written by prune) so readers can ignore those if a crash left them behind.

Plaintext layout, snappy-compressed then sealed with AAD ``"snapmover-index:" ‖ name``::

    magic "SMIX" | version u8 | JSON-header length u32 | JSON header {"packs": [...], "supersedes": [...]}
    entries: chunk id (32) | pack number u32 | kind u8 | flags u8 | offset u32 | length u32 | raw length u32

The in-memory :class:`Index` holds no Python object per blob: fixed-width records in one
bytearray and an open-addressing table of record numbers (see :class:`Index` for the bytes per blob).
"""

from __future__ import annotations

import json
import struct
import threading
from array import array
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


@dataclass
class IndexRows:
    """One index file's header and its undecoded entry table (``INDEX_ENTRY`` rows)."""

    packs: list[str]
    supersedes: list[str]
    snapshots: list[str]
    body: bytes


def decode_index_rows(key: bytes, name: str, sealed: bytes) -> IndexRows:
    """Authenticate one index file and split header from entry table; IntegrityError naming it.

    The rows stay packed (50 bytes a blob) so opening a repository holds no object per blob."""
    compressed = open_sealed(key, sealed, index_aad(name), f"index file {name}")
    try:
        plain = snappy.decompress(compressed)
        magic, version, hlen = INDEX_HEAD.unpack_from(plain, 0)
        if magic != INDEX_MAGIC or version != INDEX_VERSION:
            raise ValueError(f"unsupported index version {version}")
        header = json.loads(plain[INDEX_HEAD.size : INDEX_HEAD.size + hlen])
        packs = [str(p) for p in header["packs"]]
        body = plain[INDEX_HEAD.size + hlen :]
        if len(body) % INDEX_ENTRY.size:
            raise ValueError("truncated entry table")
        if any(n >= len(packs) for _, n, *_ in INDEX_ENTRY.iter_unpack(body)):
            raise ValueError("an entry names a pack the header does not list")
        supersedes = [str(s) for s in header.get("supersedes", [])]
        return IndexRows(packs, supersedes, [str(s) for s in header.get("snapshots", [])], body)
    except (ValueError, KeyError, IndexError, TypeError, struct.error) as e:
        raise IntegrityError(f"index file {name} is malformed: {e}") from e
    except Exception as e:
        raise IntegrityError(f"index file {name} is malformed: {type(e).__name__}") from e


def decode_index(key: bytes, name: str, sealed: bytes) -> IndexFile:
    """Authenticate and parse one index file; IntegrityError naming it."""
    rows = decode_index_rows(key, name, sealed)
    entries = [
        (cid, Location(rows.packs[n], kind, offset, length, raw, bool(flags & 1)))
        for cid, n, kind, flags, offset, length, raw in INDEX_ENTRY.iter_unpack(rows.body)
    ]
    return IndexFile(entries, rows.supersedes, rows.snapshots)


# In-memory record: chunk id (32) | pack number u32 | kind u8 | compressed u8 | offset u32 |
# length u32 | raw length u32 = 50 bytes.
RECORD: Final = struct.Struct("<32sIBBIII")
ID_BYTES: Final = 32
PACK_NUMBER: Final = struct.Struct("<I")
EMPTY_SLOT: Final = 0xFFFFFFFF
MIN_SLOTS: Final = 1024
# Slots are u32 record numbers kept at most half full: 50 + 2 * 4..4 * 4 = 58-66 bytes per blob
# (doubling moves a table from 2 to 4 slots per blob), and probes stay short for misses too.
MAX_LOAD_NUMERATOR: Final = 1
MAX_LOAD_DENOMINATOR: Final = 2


class Index:
    """Chunk id → location for every indexed blob; thread safe (one writer lock, lock-free reads).

    No Python object per blob: each blob is a 50-byte record appended to one bytearray, found
    through an open-addressing table of u32 record numbers (linear probing from the id's first
    8 bytes — ids are keyed hashes, so uniformly spread). :meth:`bytes_per_blob` reports the cost.
    Readers take no lock: a record is complete before its slot is published, and a grown table
    replaces the old one in a single assignment.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._packs: list[str] = []
        self._pack_numbers: dict[str, int] = {}
        self._records = bytearray()
        self._count = 0
        self._slots = array("I", [EMPTY_SLOT]) * MIN_SLOTS

    def _find(self, slots: array[int], cid: bytes) -> int:
        """The slot holding ``cid``, or the empty slot where it would go."""
        mask = len(slots) - 1
        i = int.from_bytes(cid[:8], "little") & mask
        records = self._records
        while True:
            r = slots[i]
            if r == EMPTY_SLOT:
                return i
            at = r * RECORD.size
            if records[at : at + ID_BYTES] == cid:
                return i
            i = (i + 1) & mask

    def add(self, cid: bytes, loc: Location) -> None:
        """Record a blob (a later entry for the same id replaces the earlier one)."""
        if len(cid) != ID_BYTES:
            raise ValueError("a chunk id is 32 bytes")
        with self._lock:
            number = self._pack_numbers.get(loc.pack)
            if number is None:
                number = self._pack_numbers[loc.pack] = len(self._packs)
                self._packs.append(loc.pack)
            record = RECORD.pack(cid, number, loc.kind, int(loc.compressed), loc.offset, loc.length, loc.raw_length)
            slots = self._slots
            i = self._find(slots, cid)
            r = slots[i]
            if r != EMPTY_SLOT:
                self._records[r * RECORD.size : (r + 1) * RECORD.size] = record
                return
            self._records += record
            slots[i] = self._count
            self._count += 1
            if self._count * MAX_LOAD_DENOMINATOR > len(slots) * MAX_LOAD_NUMERATOR:
                self._grow()

    def add_rows(self, packs: list[str], body: bytes) -> None:
        """Record every row of an index file's entry table (:class:`IndexRows`), in order."""
        for cid, n, kind, flags, offset, length, raw in INDEX_ENTRY.iter_unpack(body):
            self.add(cid, Location(packs[n], kind, offset, length, raw, bool(flags & 1)))

    def _grow(self) -> None:
        """Double the slot table (under the lock); readers keep using the old one until it is swapped."""
        slots = array("I", [EMPTY_SLOT]) * (len(self._slots) * 2)
        mask = len(slots) - 1
        records = self._records
        size = RECORD.size
        for r in range(self._count):
            at = r * size
            i = int.from_bytes(records[at : at + 8], "little") & mask
            while slots[i] != EMPTY_SLOT:
                i = (i + 1) & mask
            slots[i] = r
        self._slots = slots

    def _record(self, cid: bytes) -> int | None:
        slots = self._slots
        r = slots[self._find(slots, cid)]
        return None if r == EMPTY_SLOT else r

    def get(self, cid: bytes) -> Location | None:
        """The blob's location, or None."""
        r = self._record(cid)
        return None if r is None else self.entry(r)[1]

    def number(self, cid: bytes) -> int | None:
        """The record number of ``cid`` (stable, below ``len(self)``), or None when it is not indexed."""
        return self._record(cid) if len(cid) == ID_BYTES else None

    def entry(self, r: int) -> tuple[bytes, Location]:
        """The (id, location) of record number ``r``."""
        cid, number, kind, compressed, offset, length, raw = RECORD.unpack_from(self._records, r * RECORD.size)
        return cid, Location(self._packs[number], kind, offset, length, raw, bool(compressed))

    def records_by_pack(self) -> dict[str, array[int]]:
        """Record numbers of every indexed blob grouped by pack name: 4 bytes per blob, no object per blob."""
        with self._lock:
            count = self._count
            packs = list(self._packs)
        records = self._records
        groups: dict[int, array[int]] = {}
        for r in range(count):
            number = PACK_NUMBER.unpack_from(records, r * RECORD.size + ID_BYTES)[0]
            group = groups.get(number)
            if group is None:
                group = groups[number] = array("I")
            group.append(r)
        return {packs[n]: group for n, group in groups.items()}

    def __contains__(self, cid: object) -> bool:
        return isinstance(cid, bytes) and len(cid) == ID_BYTES and self._record(cid) is not None

    def __len__(self) -> int:
        return self._count

    def bytes_per_blob(self) -> float:
        """Memory the records and the slot table take per indexed blob (pack names not counted)."""
        used = len(self._records) + self._slots.itemsize * len(self._slots)
        return used / max(1, self._count)

    def items(self) -> Iterator[tuple[bytes, Location]]:
        """Every (id, location); a snapshot copy, safe while others add."""
        with self._lock:
            records = bytes(self._records)
            packs = list(self._packs)
        for cid, number, kind, compressed, offset, length, raw in RECORD.iter_unpack(records):
            yield cid, Location(packs[number], kind, offset, length, raw, bool(compressed))

    def packs(self) -> set[str]:
        """Names of every pack that holds at least one indexed blob."""
        with self._lock:
            records = bytes(self._records)
            packs = list(self._packs)
        used = {number for _, number, *_ in RECORD.iter_unpack(records)}
        return {packs[n] for n in used}
