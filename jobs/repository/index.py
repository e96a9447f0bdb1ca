"""Index files (``index/<random>``) and the in-memory index built from them (FORMAT.md §7).

An index file lists, for packs that were completely uploaded, every blob's pack, offset and
lengths. It is written only after its packs exist (write ordering), and names the index files
it supersedes (written by prune) so readers can ignore those if a crash left them behind.

Plaintext layout, snappy-compressed then sealed with AAD ``"snapmover-index:" ‖ name``::

    magic "SMIX" | version u8 | JSON-header length u32 | JSON header {"packs": [...], "supersedes": [...]}
    entries: chunk id (32) | pack number u32 | kind u8 | flags u8 | offset u32 | length u32 | raw length u32

The in-memory :class:`Index` holds no Python object per blob: fixed-width records in one
bytearray, an open-addressing table of record numbers, and the ids' second halves in a scratch
file (see :class:`Index` for the bytes per blob).
"""

from __future__ import annotations

import json
import logging
import os
import struct
import tempfile
import threading
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Final, NamedTuple

import snappy

from jobs.errors import IntegrityError
from jobs.repository.crypto import open_sealed, seal

INDEX_PREFIX: Final = "index/"
INDEX_MAGIC: Final = b"SMIX"
INDEX_VERSION: Final = 1
INDEX_HEAD: Final = struct.Struct("<4sBI")
INDEX_ENTRY: Final = struct.Struct("<32sIBBIII")
SPAN_RECORDS: Final = 4096  # Index.entries reads the id tails of up to this many neighbouring records at once

log = logging.getLogger(__name__)


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
    rows = bytearray()  # no object per entry
    for cid, loc in entries:
        number = packs.setdefault(loc.pack, len(packs))
        rows += INDEX_ENTRY.pack(cid, number, loc.kind, int(loc.compressed), loc.offset, loc.length, loc.raw_length)
    head: dict[str, Any] = {"packs": list(packs), "supersedes": supersedes}
    if snapshots:
        head["snapshots"] = sorted(snapshots)
    header = json.dumps(head, separators=(",", ":")).encode()
    plain = INDEX_HEAD.pack(INDEX_MAGIC, INDEX_VERSION, len(header)) + header + rows
    return seal(key, snappy.compress(plain), index_aad(name))


@dataclass
class IndexRows:
    """One index file's header and its undecoded entry table (``INDEX_ENTRY`` rows)."""

    packs: list[str]
    supersedes: list[str]
    snapshots: list[str]
    body: bytes | memoryview


def decode_index_rows(key: bytes, name: str, sealed: bytes) -> IndexRows:
    """Authenticate one index file and split header from entry table; IntegrityError naming it.

    The rows stay packed (50 bytes a blob) so opening a repository holds no object per blob."""
    compressed = open_sealed(key, sealed, index_aad(name), f"index file {name}")
    try:
        plain = snappy.decompress(compressed)
        del compressed
        magic, version, hlen = INDEX_HEAD.unpack_from(plain, 0)
        if magic != INDEX_MAGIC or version != INDEX_VERSION:
            raise ValueError(f"unsupported index version {version}")
        header = json.loads(plain[INDEX_HEAD.size : INDEX_HEAD.size + hlen])
        packs = [str(p) for p in header["packs"]]
        body = memoryview(plain)[INDEX_HEAD.size + hlen :]  # no copy of the entry table
        if len(body) % INDEX_ENTRY.size:
            raise ValueError("truncated entry table")
        if any(n >= len(packs) or kind > MAX_KIND for _, n, kind, *_ in INDEX_ENTRY.iter_unpack(body)):
            raise ValueError("an entry names a pack the header does not list, or an unknown kind")
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


# In-memory record: chunk id prefix (12) | pack number u32 | kind u8 (bit 7: compressed) |
# offset u32 | length u32 | raw length u32 = 29 bytes; the ids' other 20 bytes go to a scratch
# file (:class:`_Tails`). With the slot table (u32 record numbers, 50-70 % full) a blob costs
# 29 + 5.7..8 bytes (:meth:`Index.bytes_per_blob`).
RECORD: Final = struct.Struct("<12sIBIII")
ID_BYTES: Final = 32
PREFIX_BYTES: Final = 12
TAIL_BYTES: Final = ID_BYTES - PREFIX_BYTES
MAX_KIND: Final = 0x7F
COMPRESSED_BIT: Final = 0x80
PACK_NUMBER: Final = struct.Struct("<I")
LENGTH: Final = struct.Struct("<I")  # a record's stored length, read alone
LENGTH_AT: Final = PREFIX_BYTES + 4 + 1  # ... at this offset in the record
EMPTY_SLOT: Final = 0xFFFFFFFF
MIN_SLOTS: Final = 1024
# The slot table grows to twice the records when more than 70 % of it is used (so it is 50-70 %
# full: short probes for misses too), and is sized for 60 % when the count is known (reload).
MAX_LOAD: Final = 0.7
GROWN_LOAD: Final = 0.5
RESERVED_LOAD: Final = 0.6
TAIL_FLUSH_BYTES: Final = 64 * 1024


class _Tails:
    """The last 20 bytes of every record's id, by record number, in an unlinked scratch file
    (``TMPDIR``, the mover Job's ``/tmp`` emptyDir): its pages are page cache, which the kernel
    can drop, not the process's memory. Appended in 64 KiB writes; the unwritten rest stays in
    memory. When no scratch file can be made the tails simply stay in memory.

    Readers take no lock: ``_state`` (tails written, the unwritten buffer) is replaced whole
    after each write, and a buffer is never emptied in place."""

    def __init__(self) -> None:
        self._file: IO[bytes] | None = None
        self._in_memory = False
        self._state: tuple[int, bytearray] = (0, bytearray())
        # After a fork (:meth:`after_fork`): the tails of records below ``_base`` are read from
        # the file shared with the parent, which this process never writes; its own file
        # holds the tails from ``_base`` on.
        self._shared: IO[bytes] | None = None
        self._base = 0

    def after_fork(self) -> None:
        """In a forked child: later tails go to a scratch file of its own (the parent and other
        children go on writing theirs at the same offsets of the shared one)."""
        self._shared, self._file = self._file, None
        self._base = self._state[0]

    def append(self, tail: bytes) -> None:
        """Add the tail of the next record number (callers hold the index's lock)."""
        written, buffer = self._state
        buffer += tail
        if len(buffer) >= TAIL_FLUSH_BYTES and not self._in_memory:
            self._write(written, buffer)

    def _write(self, written: int, buffer: bytearray) -> None:
        try:
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="snapmover-index-")  # noqa: SIM115 - lives as long as the index
            os.pwrite(self._file.fileno(), buffer, (written - self._base) * TAIL_BYTES)
        except OSError as e:
            log.info("index id tails stay in memory (no scratch file: %s)", e)
            self._in_memory = True
            return
        self._state = (written + len(buffer) // TAIL_BYTES, bytearray())

    def get(self, r: int) -> bytes:
        """The tail of record ``r``."""
        written, buffer = self._state
        if r >= written:
            at = (r - written) * TAIL_BYTES
            return bytes(buffer[at : at + TAIL_BYTES])
        return os.pread(self._fd(r), TAIL_BYTES, self._offset(r))

    def _fd(self, r: int) -> int:
        """The descriptor of the scratch file holding the written tail of record ``r``."""
        file = self._shared if r < self._base else self._file
        assert file is not None
        return file.fileno()

    def _offset(self, r: int) -> int:
        return (r if r < self._base else r - self._base) * TAIL_BYTES

    def span(self, first: int, count: int) -> bytes:
        """The tails of records ``first`` .. ``first + count - 1``, in one read where possible."""
        written, buffer = self._state
        out = b""
        while first < written and count > 0:
            # one read per scratch file: the run may start in the parent's (shared) file
            end = self._base if first < self._base else written
            n = min(count, end - first)
            out += os.pread(self._fd(first), n * TAIL_BYTES, self._offset(first))
            first, count = first + n, count - n
        if count > 0:
            at = (first - written) * TAIL_BYTES
            out += bytes(buffer[at : at + count * TAIL_BYTES])
        return out

    def memory_bytes(self) -> int:
        """The bytes of tails held in memory (not yet written)."""
        return len(self._state[1])

    def close(self) -> None:
        for file in (self._file, self._shared):
            if file is not None:
                file.close()
        self._file = self._shared = None


class Index:
    """Chunk id → location for every indexed blob; thread safe (one writer lock, lock-free reads).

    No Python object per blob: each blob is a 29-byte record (the id's first 12 bytes and the
    location, narrowed) appended to one bytearray, found through an open-addressing table of u32
    record numbers (linear probing from the id's first 8 bytes — ids are keyed hashes, so
    uniformly spread); the ids' last 20 bytes live in a scratch file (:class:`_Tails`) and are
    read back to confirm every match, so a lookup is exact. :meth:`bytes_per_blob` reports the
    cost. Readers take no lock: a record (and its tail) is complete before its slot is
    published, and a grown table replaces the old one in a single assignment.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._packs: list[str] = []
        self._pack_numbers: dict[str, int] = {}
        self._records = bytearray()
        self._tails = _Tails()
        self._count = 0
        self._slots = array("I", [EMPTY_SLOT]) * MIN_SLOTS

    def close(self) -> None:
        """Drop the scratch file (it goes with the object too)."""
        self._tails.close()

    def after_fork(self) -> None:
        """In a forked child, before any other use: the index inherited from the parent (shared
        copy-on-write) becomes this process's own. Records added here from now on are this
        process's only; their id tails go to a scratch file of its own, and the lock is a
        fresh one (a parent thread may have held the old one at the fork)."""
        self._lock = threading.Lock()
        self._tails.after_fork()

    def _find(self, slots: array[int], cid: bytes, *, exact: bool = True) -> int:
        """The slot holding ``cid``, or the empty slot where it would go (``exact=False``: the
        first record whose id starts with ``cid``'s first 12 bytes)."""
        n = len(slots)
        i = int.from_bytes(cid[:8], "little") % n
        records = self._records
        prefix = cid[:PREFIX_BYTES]
        while True:
            r = slots[i]
            if r == EMPTY_SLOT:
                return i
            at = r * RECORD.size
            if records[at : at + PREFIX_BYTES] == prefix and (not exact or self._tails.get(r) == cid[PREFIX_BYTES:]):
                return i
            i += 1
            if i == n:
                i = 0

    def reserve(self, count: int) -> None:
        """Size the slot table for ``count`` blobs in all (reload knows about how many will come)."""
        with self._lock:
            want = int(count / RESERVED_LOAD)
            if want > len(self._slots) and count > self._count:
                self._rehash(want)

    def add(self, cid: bytes, loc: Location) -> None:
        """Record a blob (a later entry for the same id replaces the earlier one)."""
        if len(cid) != ID_BYTES:
            raise ValueError("a chunk id is 32 bytes")
        if not 0 <= loc.kind <= MAX_KIND:
            raise ValueError(f"blob kind {loc.kind} is out of range")
        with self._lock:
            self._add(
                cid, self._pack_number(loc.pack), loc.kind, loc.compressed, loc.offset, loc.length, loc.raw_length
            )

    def _pack_number(self, pack: str) -> int:
        number = self._pack_numbers.get(pack)
        if number is None:
            number = self._pack_numbers[pack] = len(self._packs)
            self._packs.append(pack)
        return number

    def _add(self, cid: bytes, number: int, kind: int, compressed: bool, offset: int, length: int, raw: int) -> None:
        """Add or replace one record (under the lock)."""
        record = RECORD.pack(
            cid[:PREFIX_BYTES], number, kind | (COMPRESSED_BIT if compressed else 0), offset, length, raw
        )
        slots = self._slots
        i = self._find(slots, cid)
        r = slots[i]
        if r != EMPTY_SLOT:
            self._records[r * RECORD.size : (r + 1) * RECORD.size] = record  # same id: same tail
            return
        self._records += record
        self._tails.append(cid[PREFIX_BYTES:])
        slots[i] = self._count
        self._count += 1
        if self._count > len(slots) * MAX_LOAD:
            self._rehash(int(self._count / GROWN_LOAD))

    def add_rows(self, packs: list[str], body: bytes | memoryview) -> None:
        """Record every row of an index file's entry table (:class:`IndexRows`), in order."""
        with self._lock:
            numbers = [self._pack_number(p) for p in packs]
            add = self._add
            for cid, n, kind, flags, offset, length, raw in INDEX_ENTRY.iter_unpack(body):
                add(cid, numbers[n], kind, bool(flags & 1), offset, length, raw)

    def _rehash(self, size: int) -> None:
        """Replace the slot table by one of ``size`` slots (under the lock); readers keep using
        the old one until it is swapped."""
        size = max(size, MIN_SLOTS)
        slots = array("I", [EMPTY_SLOT]) * size
        records = self._records
        step = RECORD.size
        for r in range(self._count):
            at = r * step
            i = int.from_bytes(records[at : at + 8], "little") % size
            while slots[i] != EMPTY_SLOT:
                i += 1
                if i == size:
                    i = 0
            slots[i] = r
        self._slots = slots

    def _record(self, cid: bytes, *, exact: bool = True) -> int | None:
        slots = self._slots
        r = slots[self._find(slots, cid, exact=exact)]
        return None if r == EMPTY_SLOT else r

    def get(self, cid: bytes) -> Location | None:
        """The blob's location, or None."""
        r = self._record(cid) if len(cid) == ID_BYTES else None
        return None if r is None else self.location(r)

    def get_for_read(self, cid: bytes) -> Location | None:
        """Like :meth:`get` without reading the id's tail back: for readers that verify the blob
        they load against ``cid`` (its keyed hash), so a blob whose id merely shares the first
        12 bytes (never seen: ids are 256-bit keyed hashes) fails that check instead of being
        used."""
        r = self._record(cid, exact=False) if len(cid) == ID_BYTES else None
        return None if r is None else self.location(r)

    def number(self, cid: bytes) -> int | None:
        """The record number of ``cid`` (stable, below ``len(self)``), or None when it is not indexed."""
        return self._record(cid) if len(cid) == ID_BYTES else None

    def location(self, r: int) -> Location:
        """The location of record number ``r``."""
        _prefix, number, kind, offset, length, raw = RECORD.unpack_from(self._records, r * RECORD.size)
        return Location(self._packs[number], kind & MAX_KIND, offset, length, raw, bool(kind & COMPRESSED_BIT))

    def stored_length(self, r: int) -> int:
        """The stored (sealed) length of record number ``r``'s blob, without making a :class:`Location`."""
        return int(LENGTH.unpack_from(self._records, r * RECORD.size + LENGTH_AT)[0])

    def entry(self, r: int) -> tuple[bytes, Location]:
        """The (id, location) of record number ``r``."""
        at = r * RECORD.size
        return bytes(self._records[at : at + PREFIX_BYTES]) + self._tails.get(r), self.location(r)

    def entries(self, records: Iterable[int]) -> Iterator[tuple[bytes, Location]]:
        """:meth:`entry` of each of ``records``, reading the id tails of runs of neighbouring
        record numbers (a pack's blobs) in one read each."""
        run: list[int] = []
        for r in records:
            if run and not (run[0] <= r < run[0] + SPAN_RECORDS):
                yield from self._entries_of(run)
                run = []
            run.append(r)
        if run:
            yield from self._entries_of(run)

    def _entries_of(self, run: list[int]) -> Iterator[tuple[bytes, Location]]:
        first = run[0]
        tails = self._tails.span(first, max(run) - first + 1)
        records = self._records
        for r in run:
            at, t = r * RECORD.size, (r - first) * TAIL_BYTES
            yield bytes(records[at : at + PREFIX_BYTES]) + tails[t : t + TAIL_BYTES], self.location(r)

    def records_by_pack(self) -> dict[str, array[int]]:
        """Record numbers of every indexed blob grouped by pack name: 4 bytes per blob, no object per blob."""
        with self._lock:
            count = self._count
            packs = list(self._packs)
        records = self._records
        groups: dict[int, array[int]] = {}
        for r in range(count):
            number = PACK_NUMBER.unpack_from(records, r * RECORD.size + PREFIX_BYTES)[0]
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
        """Memory the records, the slot table and the unwritten id tails take per indexed blob
        (pack names not counted)."""
        used = len(self._records) + self._slots.itemsize * len(self._slots) + self._tails.memory_bytes()
        return used / max(1, self._count)

    def items(self) -> Iterator[tuple[bytes, Location]]:
        """Every (id, location) of the records there were when called."""
        return self.entries(range(len(self)))

    def packs(self) -> set[str]:
        """Names of every pack that holds at least one indexed blob."""
        return set(self.records_by_pack())
