"""The compact in-memory index: lookups, replacement, growth, and its memory per blob."""

from __future__ import annotations

import hashlib
import os
import tracemalloc

from jobs.repository.index import Index, Location

ENTRIES = 200_000
# The previous dict-of-tuples index took ~250 bytes per blob (~48 MiB for these entries), the
# 50-byte records with full ids 58-66 bytes per blob (over 12 MB here).
MAX_TRACED_BYTES = 9 * 1024 * 1024


def _cid(i: int) -> bytes:
    return hashlib.blake2b(i.to_bytes(8, "little"), digest_size=32).digest()


def _loc(i: int) -> Location:
    return Location(f"data/{i % 7:02x}/pack{i // 1000}", i % 3, i * 4096, 1000 + i % 50, 2000 + i, bool(i % 2))


def test_index_finds_every_blob_after_growing_and_misses_unknown_ids() -> None:
    index = Index()
    for i in range(5000):
        index.add(_cid(i), _loc(i))
    assert len(index) == 5000
    assert all(index.get(_cid(i)) == _loc(i) for i in range(5000))
    assert all(_cid(i) in index for i in range(0, 5000, 7))
    assert not any(_cid(i) in index for i in range(5000, 6000))
    assert index.get(_cid(5000)) is None
    assert b"short" not in index
    assert dict(index.items()) == {_cid(i): _loc(i) for i in range(5000)}
    assert index.packs() == {_loc(i).pack for i in range(5000)}


def test_a_later_entry_replaces_the_earlier_one() -> None:
    index = Index()
    index.add(_cid(1), _loc(1))
    index.add(_cid(1), _loc(2))
    assert len(index) == 1
    assert index.get(_cid(1)) == _loc(2)
    assert index.packs() == {_loc(2).pack}


def test_index_memory_per_blob_is_bounded() -> None:
    ids = [_cid(i) for i in range(ENTRIES)]
    loc = _loc(3)
    tracemalloc.start()
    try:
        index = Index()
        for cid in ids:
            index.add(cid, loc)
        traced, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(index) == ENTRIES
    assert index.bytes_per_blob() <= 40
    assert traced <= MAX_TRACED_BYTES, traced


def test_records_by_pack_groups_every_record_number_once() -> None:
    index = Index()
    for i in range(3000):
        index.add(_cid(i), _loc(i))
    index.add(_cid(5), _loc(2999))  # moved to another pack: counted there only
    groups = index.records_by_pack()
    assert sorted(r for g in groups.values() for r in g) == list(range(3000))
    for pack, records in groups.items():
        assert all(index.entry(r)[1].pack == pack for r in records)
    assert index.number(_cid(5)) in groups[_loc(2999).pack]
    assert index.entry(index.number(_cid(7)) or 0) == (_cid(7), _loc(7))
    assert index.number(_cid(99999)) is None


def test_a_lookup_is_exact_though_only_id_prefixes_are_in_memory() -> None:
    index = Index()
    for i in range(10_000):  # past several scratch-file writes of id tails
        index.add(_cid(i), _loc(i))
    twin = _cid(3)[:12] + bytes(20)  # the same bytes in memory, another id
    assert twin not in index
    assert index.get(twin) is None
    assert index.number(twin) is None
    assert index.get_for_read(twin) == _loc(3)  # a reader's check of the blob against its id rejects it
    assert index.entry(index.number(_cid(3)) or 0) == (_cid(3), _loc(3))
    assert index.entry(index.number(_cid(9999)) or 0) == (_cid(9999), _loc(9999))  # tail not yet written
    wanted = [0, 1, 2, 4000, 4001, 9998, 9999, 5]
    assert list(index.entries(wanted)) == [(_cid(i), _loc(i)) for i in wanted]


def _ids(tag: bytes) -> list[bytes]:
    return [hashlib.sha256(tag + b"%d" % i).digest() for i in range(20_000)]  # past the in-memory tail buffer


def _add(index: Index, ids: list[bytes], pack: str) -> None:
    for i, cid in enumerate(ids):
        index.add(cid, Location(pack, 0, i, 10, 10, False))


def _finds(index: Index, ids: list[bytes], pack: str) -> bool:
    return all(index.get(cid) == Location(pack, 0, i, 10, 10, False) for i, cid in enumerate(ids))


def test_a_forked_child_and_the_parent_add_records_without_clobbering_each_others_id_tails() -> None:
    """The id tails live in a scratch file inherited across fork: what each process adds after
    the fork must go to a file of its own (both would write the same offsets of the shared one).
    The child adds, the parent adds, then the child looks its records up again."""
    index = Index()
    before, theirs, ours = _ids(b"old"), _ids(b"child"), _ids(b"parent")
    _add(index, before, "p-old")
    added_r, added_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        ok = False
        try:
            index.after_fork()
            _add(index, theirs, "p-child")
            os.write(added_w, b"x")
            os.read(go_r, 1)  # the parent has added its records meanwhile
            ok = _finds(index, before, "p-old") and _finds(index, theirs, "p-child")
        finally:
            os._exit(0 if ok else 1)
    os.read(added_r, 1)
    _add(index, ours, "p-parent")
    os.write(go_w, b"x")
    _, status = os.waitpid(pid, 0)
    for fd in (added_r, added_w, go_r, go_w):
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, "the child's records were clobbered"
    assert _finds(index, before, "p-old") and _finds(index, ours, "p-parent")
    assert [cid for cid, _ in index.items()] == before + ours
