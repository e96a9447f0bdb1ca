"""Repository maintenance: ``check`` (verify) and ``prune`` (free the space of forgotten snapshots).

Both walk the trees of every snapshot through :func:`jobs.repository.tree.referenced_ids`.

Prune holds the **exclusive** lock (backups hold shared locks), so no writer can be adding packs
that are not indexed yet while it decides what is unused. Its steps are ordered so a crash at any
point loses nothing (FORMAT.md §10): (1) repack the still-used blobs of partly used packs into new
packs, (2) write one new index that supersedes every old index file, (3) delete the old index
files, (4) delete unused and repacked packs. After a crash between steps the repository holds
extra data, never missing data; the next prune removes it. Prune refuses to run when any snapshot
or index cannot be read, because it then cannot know what is still referenced.

Check never raises on corruption: it returns every problem as a line naming the object.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain, islice
from typing import Final

from jobs.errors import IntegrityError, MoverError, ObjectNotFoundError
from jobs.repository.config import DATA_PREFIX, read_config
from jobs.repository.index import INDEX_PREFIX, Index, Location, decode_index_rows
from jobs.repository.keys import KEYS_PREFIX, parse_key_file, verify_key_mac
from jobs.repository.locks import LOCKS_PREFIX
from jobs.repository.packs import KIND_TREE, BlobData, decode_pack_header, open_blob
from jobs.repository.repository import Repository
from jobs.repository.snapshots import FORGOTTEN_PREFIX, SNAPSHOTS_PREFIX, SnapshotManifest
from jobs.repository.tree import decode_tree, referenced_ids

log = logging.getLogger(__name__)

# Trees asked for in one bulk load by walk_trees (a tree of 1,000 small files is ~150 KB).
TREE_BATCH: Final = 64
# Their reading threads: each holds a read buffer and up to two merged ranges of decrypted trees
# (up to 8 MiB each) in flight; 2 keep both cores busy decoding.
TREE_LOAD_PARALLEL: Final = 2
# Packs verified at once by check --read-data: each holds its whole pack (16 MiB by default) and
# its header's entries, ~25 MiB at 1M small files; 2 keep two cores busy (decryption and
# hashing release the GIL) within the memory budget.
READ_DATA_PARALLEL: Final = 2
# Prune writes its index in files of this many entries (a backup writes 65,536 at most): each
# is encoded in memory (~4 MB at this count) before it is stored.
INDEX_ENTRIES_PER_FILE: Final = 65_536
# Prune leaves partly used packs alone while their unused bytes are at most this share of the
# used bytes (restic's --max-unused default is 5 % too): repacking copies whole packs to free little.
DEFAULT_MAX_UNUSED: Final = 0.05


@dataclass
class CheckReport:
    """Result of ``check``: problems (errors), oddities that lose nothing (warnings), counts."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    snapshots: int = 0
    packs: int = 0
    blobs: int = 0
    bytes_read: int = 0

    @property
    def ok(self) -> bool:
        """True when no error was found."""
        return not self.errors


@dataclass
class PruneStats:
    """What prune did."""

    snapshots: int = 0
    packs_deleted: int = 0
    packs_repacked: int = 0
    packs_kept: int = 0
    blobs_removed: int = 0
    bytes_freed: int = 0
    index_files_replaced: int = 0


class IdSet:
    """A set of blob ids kept as one bit per record of an :class:`Index` (no object per blob);
    only ids outside the index (missing blobs, so few) are kept as bytes in :attr:`outside`."""

    def __init__(self, index: Index) -> None:
        self._index = index
        self._bits = bytearray((len(index) + 7) // 8)
        self.outside: set[bytes] = set()

    def add(self, cid: bytes) -> bool:
        """Add ``cid``; False when it was already in."""
        r = self._index.number(cid)
        if r is None or r >= len(self._bits) * 8:
            if cid in self.outside:
                return False
            self.outside.add(cid)
            return True
        at, bit = r >> 3, 1 << (r & 7)
        if self._bits[at] & bit:
            return False
        self._bits[at] |= bit
        return True

    def has_record(self, r: int) -> bool:
        """Whether index record number ``r`` is in the set."""
        return r < len(self._bits) * 8 and bool(self._bits[r >> 3] & (1 << (r & 7)))


def walk_trees(
    repo: Repository, roots: Iterable[str], on_error: Callable[[str, str], None] | None = None
) -> tuple[IdSet, IdSet]:
    """Every (tree ids, data ids) reachable from ``roots``, as bitmaps over ``repo.index``.

    Damaged or missing trees call ``on_error(tree_id, message)`` when given, else raise.
    """
    trees = IdSet(repo.index)
    data = IdSet(repo.index)
    queue = [r for r in dict.fromkeys(roots) if r]
    for r in queue:
        trees.add(bytes.fromhex(r))
    while queue:
        batch, queue = queue[:TREE_BATCH], queue[TREE_BATCH:]
        for _tid, raw in _load_trees(repo, batch, on_error):
            for kind, cid_hex in referenced_ids(decode_tree(raw)):
                cid = bytes.fromhex(cid_hex)
                if kind == "tree":
                    if trees.add(cid):
                        queue.append(cid_hex)
                else:
                    data.add(cid)
    return trees, data


def _load_trees(
    repo: Repository, batch: list[str], on_error: Callable[[str, str], None] | None
) -> Iterator[tuple[str, BlobData]]:
    """The trees of ``batch`` as they arrive from one bulk load (none held beyond what is in
    flight); when that fails and ``on_error`` is given, the rest one by one, each damaged or
    missing tree reported to it and left out."""
    done: set[str] = set()
    try:
        for tid, raw in repo.load_blobs(batch, parallel=TREE_LOAD_PARALLEL):
            done.add(tid)
            yield tid, raw
        return
    except MoverError:
        if on_error is None:
            raise
    for tid in batch:
        if tid in done:
            continue
        try:
            raw = repo.load_blob(tid)
        except MoverError as e:
            on_error(tid, str(e))
            continue
        yield tid, raw


def _chunks(entries: Iterable[tuple[bytes, Location]], size: int) -> Iterator[Iterator[tuple[bytes, Location]]]:
    """``entries`` in runs of ``size``, each consumed before the next is asked for (no list of
    them is held); always at least one run (empty when there is nothing)."""
    it = iter(entries)
    first = next(it, None)
    yield chain([] if first is None else [first], islice(it, size - 1))
    while (first := next(it, None)) is not None:
        yield chain([first], islice(it, size - 1))


def prune(repo: Repository, *, max_unused: float = DEFAULT_MAX_UNUSED) -> PruneStats:
    """Delete everything no snapshot references; repack partly used packs while the unused
    bytes left in kept packs exceed ``max_unused`` of the used bytes (see :func:`_plan_prune`;
    0 repacks every partly used pack). Exclusive lock."""
    if not max_unused >= 0:  # NaN too
        raise ValueError("max_unused is a fraction >= 0")
    stats = PruneStats()
    with repo.lock(exclusive=True, wait_seconds=120):
        repo.reload_index()
        snapshots = repo.list_snapshots()
        if repo.damaged:
            raise IntegrityError(
                f"prune refused: damaged objects ({', '.join(repo.damaged)}); run `snapmover repo check` first"
            )
        stats.snapshots = len(snapshots)
        stored = {o.name: o.size for o in repo.storage.list(DATA_PREFIX)}
        plan = _plan_live(repo, snapshots, stored, stats, max_unused)
        _repack(repo, plan.repack)
        stats.packs_repacked = len(plan.repack)
        stats.index_files_replaced = _replace_index(repo, {s.id for s in snapshots}, plan.indexed())
        for name in plan.delete + [p for p, _ in plan.repack]:
            stats.bytes_freed += stored.get(name, 0)
            repo.storage.delete(name)
        stats.packs_deleted = len(plan.delete)
        repo.reload_index()
    return stats


def _plan_live(
    repo: Repository, snapshots: list[SnapshotManifest], stored: dict[str, int], stats: PruneStats, max_unused: float
) -> _PrunePlan:
    """The prune plan for what ``snapshots`` reach. The reachability bitmaps hold the index and
    go when this returns, so prune's final reload never keeps the old index beside the new one."""
    trees, data = walk_trees(repo, (s.root for s in snapshots))
    return _plan_prune(repo.index, stored, lambda r: trees.has_record(r) or data.has_record(r), stats, max_unused)


@dataclass
class _PrunePlan:
    """What prune does with each pack: keep it whole, repack its live blobs, or delete it."""

    keep: array[int] = field(default_factory=lambda: array("I"))  # record numbers of kept packs' blobs
    delete: list[str] = field(default_factory=list)
    repack: list[tuple[str, array[int]]] = field(default_factory=list)  # (pack, its live records)

    def indexed(self) -> Iterator[int]:
        """The records the new index lists: every blob of a kept pack (a partly used pack kept
        whole keeps its unused blobs too: they are still stored, the next prune may free them),
        then the repacked live blobs (their records name their new packs once repacked)."""
        yield from self.keep
        for _pack, live in self.repack:
            yield from live


def _plan_prune(
    index: Index, stored: dict[str, int], live: Callable[[int], bool], stats: PruneStats, max_unused: float
) -> _PrunePlan:
    """Sort the ``stored`` packs by how many of their blobs (index records) are ``live``.

    Unused packs are deleted. Of the partly used ones, those with the largest share of unused
    bytes are repacked first, until the unused bytes left in kept packs are at most
    ``max_unused`` times the used bytes: freeing the last few percent would copy nearly every
    pack (a 1 % change of 1M small files leaves unused blobs in almost every pack)."""
    by_pack = index.records_by_pack()
    plan = _PrunePlan(delete=[name for name in stored if name not in by_pack])  # orphans of crashed uploads
    partly: list[tuple[float, str, array[int], array[int], int]] = []  # (unused share, pack, live, all, unused)
    used_bytes = unused_bytes = 0
    for pack, records in by_pack.items():
        used = array("I", (r for r in records if live(r)))
        if not used:
            plan.delete.append(pack)
            stats.blobs_removed += len(records)
            continue
        live_bytes = sum(index.stored_length(r) for r in used)
        used_bytes += live_bytes
        if len(used) == len(records):
            plan.keep.extend(records)
            stats.packs_kept += 1
            continue
        dead = sum(index.stored_length(r) for r in records) - live_bytes
        unused_bytes += dead
        partly.append((dead / max(1, dead + live_bytes), pack, used, records, dead))
    partly.sort(key=lambda p: p[0], reverse=True)
    for _share, pack, used, records, dead in partly:
        if unused_bytes > max_unused * used_bytes:
            plan.repack.append((pack, used))
            unused_bytes -= dead
            stats.blobs_removed += len(records) - len(used)
        else:
            plan.keep.extend(records)
            stats.packs_kept += 1
    return plan


def _repack(repo: Repository, repack: list[tuple[str, array[int]]]) -> None:
    """Copy the live blobs of the ``repack`` packs into new packs.

    No entry per repacked blob is held: the in-memory index replaces a repacked blob's record in
    place when its new pack is uploaded, so the records (``_PrunePlan.indexed``) are the new index."""
    index = repo.index
    for pack, live in repack:
        raw = repo.storage.get(pack)
        view = memoryview(raw)
        for cid, loc in index.entries(live):
            sealed = view[loc.offset : loc.offset + loc.length]
            open_blob(repo.keys.encryption, loc.kind, cid, sealed, pack)  # never copy a damaged blob
            repo.append_sealed(cid, loc.kind, sealed, loc.raw_length, loc.compressed)
        del view, raw
    leftover = repo.flush_packs()
    if leftover:
        raise IntegrityError(f"internal error: {len(leftover)} blobs written during prune outside its index")


def _replace_index(repo: Repository, present: set[str], records: Iterable[int]) -> int:
    """Write the new index files (the index's ``records``) superseding every old one, then
    delete the old ones and the dropped snapshots' tombstones; returns how many index files
    were in use before.

    The new index keeps recording every snapshot but the forgotten ones (manifest gone and a
    tombstone says so); a manifest that vanished without a tombstone stays recorded, so check
    keeps reporting it (so does a tombstone that does not authenticate: it drops nothing).
    Tombstones of dropped ids go once the new index is written."""
    index = repo.index
    forgotten, _damaged = repo.forgotten_snapshots()
    dropped = forgotten - present
    carried = sorted(sid for sid in repo.recorded_snapshots if sid not in dropped)
    in_use = len(repo.index_files)
    all_old = sorted({o.name for o in repo.storage.list(INDEX_PREFIX)})
    for n, chunk in enumerate(_chunks(index.entries(records), INDEX_ENTRIES_PER_FILE)):
        repo.write_index(chunk, supersedes=all_old, snapshots=carried if n == 0 else None)
    for name in all_old:
        repo.storage.delete(name)
    for sid in sorted(dropped):
        repo.storage.delete(FORGOTTEN_PREFIX + sid)
    return in_use


def _check_recorded_snapshots(repo: Repository, report: CheckReport) -> None:
    """Every snapshot an index file records must have its manifest, or a tombstone saying it was
    forgotten: a manifest deleted behind the repository's back is damage."""
    forgotten, damaged = repo.forgotten_snapshots()
    report.errors.extend(f"{name} is damaged (not a tombstone written with this repository's key)" for name in damaged)
    present = set(repo.snapshot_ids())
    missing = sorted((sid, f) for sid, f in repo.recorded_snapshots.items() if sid not in present | forgotten)
    report.errors.extend(
        f"snapshot {SNAPSHOTS_PREFIX}{sid} is missing: index file {index_file} records it and it was "
        "never forgotten (deleted or lost)"
        for sid, index_file in missing
    )


def check(repo: Repository, *, read_data: bool = False) -> CheckReport:
    """Verify structure (and with ``read_data`` every byte); returns the problems found."""
    report = CheckReport()
    _check_config_keys_and_locks(repo, report)
    stored, records_by_pack = _check_index(repo, report)
    _check_snapshots(repo, report)
    _check_recorded_snapshots(repo, report)
    _check_unindexed_packs([pack for pack in stored if pack not in records_by_pack], report)
    if read_data:
        _read_all_packs(repo, stored, records_by_pack, report)
    return report


def _check_config_keys_and_locks(repo: Repository, report: CheckReport) -> None:
    storage = repo.storage
    try:
        read_config(storage, repo.keys)
    except MoverError as e:
        report.errors.append(str(e))
    for obj in storage.list(KEYS_PREFIX):
        try:
            verify_key_mac(obj.name, parse_key_file(obj.name, storage.get(obj.name)), repo.keys)
        except MoverError as e:
            report.errors.append(str(e))
    for obj in storage.list(LOCKS_PREFIX):
        try:
            repo.lock_manager.read(obj.name)
        except ObjectNotFoundError:
            continue
        except MoverError as e:
            report.errors.append(str(e))


def _check_index(repo: Repository, report: CheckReport) -> tuple[dict[str, int], dict[str, array[int]]]:
    """Index files, then every index entry against the packs that exist; returns (stored pack ->
    size, pack -> its index records)."""
    storage = repo.storage
    for obj in storage.list(INDEX_PREFIX):
        try:
            decode_index_rows(repo.keys.encryption, obj.name, storage.get(obj.name))
        except MoverError as e:
            report.errors.append(str(e))
    repo.reload_index()
    index = repo.index
    records_by_pack = index.records_by_pack()
    report.blobs = len(repo.index)
    stored = {o.name: o.size for o in storage.list(DATA_PREFIX)}
    report.packs = len(stored)
    for pack, records in records_by_pack.items():
        size = stored.get(pack)
        if size is None:
            report.errors.append(f"pack {pack} is listed in the index but missing ({len(records)} blobs lost)")
            continue
        end = max(loc.offset + loc.length for loc in map(index.location, records))
        if end > size:
            report.errors.append(f"pack {pack} is truncated ({size} bytes, the index needs {end})")
    return stored, records_by_pack


def _check_snapshots(repo: Repository, report: CheckReport) -> None:
    """Every snapshot's manifest and trees, and that its data blobs are indexed."""
    snapshots = repo.list_snapshots()
    report.snapshots = len(snapshots)
    report.errors.extend(
        f"{name} is damaged and was skipped" for name in repo.damaged if name.startswith(SNAPSHOTS_PREFIX)
    )
    index = repo.index
    if _all_reachable_indexed(repo, [snap.root for snap in snapshots]):
        return
    for snap in snapshots:  # something is wrong: walk each snapshot alone to say which
        problems: list[str] = []

        def note(tid: str, msg: str, problems: list[str] = problems) -> None:
            problems.append(f"tree {tid[:16]}: {msg}")

        try:
            _trees, data = walk_trees(repo, [snap.root], note)
        except MoverError as e:
            problems.append(str(e))
            data = IdSet(index)
        missing = [cid for cid in data.outside if cid not in index]
        if missing:
            problems.append(f"{len(missing)} data blobs are in no index (e.g. {missing[0].hex()[:16]})")
        report.errors.extend(f"snapshot {snap.id[:16]}: {p}" for p in problems)


def _all_reachable_indexed(repo: Repository, roots: list[str]) -> bool:
    """One walk of every snapshot's trees at once (snapshots share most of them: a tree is
    loaded once, not once per snapshot); True when every tree loaded and every blob is indexed."""
    damaged: list[str] = []
    try:
        _trees, data = walk_trees(repo, roots, lambda tid, msg: damaged.append(tid))
    except MoverError:
        return False
    return not damaged and not any(cid not in repo.index for cid in data.outside)


def _check_unindexed_packs(unindexed: list[str], report: CheckReport) -> None:
    """Unindexed packs are normal after an interrupted upload, but a damage when snapshots miss blobs."""
    blobs_missing = any("in no index" in e for e in report.errors)
    for pack in unindexed:
        if blobs_missing:
            report.errors.append(f"pack {pack} is in no index file: an index file was lost (snapshots miss blobs)")
        else:
            report.warnings.append(f"pack {pack} is not referenced by any index (left by an interrupted upload)")


def _read_all_packs(
    repo: Repository,
    stored: dict[str, int],
    records_by_pack: dict[str, array[int]],
    report: CheckReport,
) -> None:
    key = repo.keys.encryption

    def verify(pack: str) -> tuple[int, list[str]]:
        errors: list[str] = []
        try:
            raw = repo.storage.get(pack)
            header = decode_pack_header(key, raw, pack)
        except MoverError as e:
            return 0, [str(e)]
        view = memoryview(raw)
        in_header = {e.chunk_id: e for e in header}
        for entry in header:
            try:
                plain = open_blob(
                    key, entry.kind, entry.chunk_id, view[entry.offset : entry.offset + entry.length], pack
                )
                if repo.chunk_id(plain) != entry.chunk_id.hex():
                    errors.append(f"pack {pack}: blob {entry.chunk_id.hex()[:16]} does not match its id")
                elif entry.kind == KIND_TREE:
                    decode_tree(plain)
            except MoverError as e:
                errors.append(str(e))
        for cid, loc in repo.index.entries(records_by_pack.get(pack, array("I"))):
            h = in_header.get(cid)
            if h is None or h.offset != loc.offset or h.length != loc.length:
                errors.append(f"pack {pack}: blob {cid.hex()[:16]} is not where the index says")
        return len(raw), errors

    with ThreadPoolExecutor(max_workers=READ_DATA_PARALLEL) as pool:
        for size, errors in pool.map(verify, sorted(stored)):
            report.bytes_read += size
            report.errors.extend(errors)
