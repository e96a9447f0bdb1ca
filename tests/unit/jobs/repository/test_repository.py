"""Repository engine: round trips, dedup, encryption at rest, tamper detection, prune, locks."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from jobs.errors import (
    IntegrityError,
    LockHeldError,
    RepositoryExistsError,
    RepositoryNotFoundError,
    WrongPasswordError,
)
from jobs.repository.config import MiB
from jobs.repository.crypto import KdfParams
from jobs.repository.maintenance import check, prune
from jobs.repository.packs import (
    FLAG_RAW,
    FLAG_SNAPPY,
    KIND_DATA,
    compress_bound,
    compress_chunk,
    open_blob,
    seal_blob_into,
    sealed_blob_length,
)
from jobs.repository.repository import Repository
from jobs.repository.snapshots import SnapshotManifest
from jobs.repository.tree import NODE_DIR, NODE_FILE, Node, decode_tree, encode_tree
from jobs.repository.writer import OPEN_PACKS, PACKS_IN_FLIGHT
from jobs.storage.base import AlignedBuffer
from jobs.storage.file import FileStorage

FAST_KDF = KdfParams(n=1 << 10, r=8, p=1)
PASSWORD = "correct horse battery staple"
MARKER = b"SNAPMOVER-MARKER-7f3a"


def new_repo(tmp_path: Path, **kw: object) -> tuple[FileStorage, Repository]:
    storage = FileStorage(tmp_path / "repo")
    return storage, Repository.init(storage, PASSWORD, kdf_params=FAST_KDF, **kw)  # type: ignore[arg-type]


def store(repo: Repository, kind: str, data: bytes) -> str:
    cid = repo.chunk_id(data)
    repo.add_blob(kind, cid, data)
    return cid


def snapshot_of(repo: Repository, files: dict[str, bytes], tags: dict[str, str] | None = None) -> str:
    nodes = []
    for name, data in files.items():
        cid = store(repo, "data", data)
        nodes.append(Node(name=name, type=NODE_FILE, size=len(data), content=[(cid, len(data))]))
    root_tree = encode_tree(nodes)
    root = store(repo, "tree", root_tree)
    top = encode_tree([Node(name=".", type=NODE_DIR, subtree=root)])
    top_id = store(repo, "tree", top)
    repo.flush()
    return repo.save_snapshot(SnapshotManifest(source="/src", tags=tags or {}, root=top_id))


def test_init_open_and_wrong_password(tmp_path: Path) -> None:
    storage, repo = new_repo(tmp_path)
    with pytest.raises(RepositoryExistsError):
        Repository.init(storage, PASSWORD, kdf_params=FAST_KDF)
    reopened = Repository.open(storage, PASSWORD)
    assert reopened.id == repo.id and reopened.config.cdc_seed == repo.config.cdc_seed
    with pytest.raises(WrongPasswordError, match="wrong password") as info:
        Repository.open(storage, "not the password")
    assert "not the password" not in str(info.value)
    with pytest.raises(RepositoryNotFoundError):
        Repository.open(FileStorage(tmp_path / "elsewhere"), PASSWORD)


def test_second_password_opens_the_same_repository(tmp_path: Path) -> None:
    storage, repo = new_repo(tmp_path)
    repo.add_password("second", FAST_KDF)
    assert Repository.open(storage, "second").id == repo.id


def test_concurrent_add_flush_and_reload(tmp_path: Path) -> None:
    storage, repo = new_repo(tmp_path, pack_target_bytes=1 * MiB)
    chunks = [os.urandom(100_000) for _ in range(40)] + [b"text line %d\n" % i * 5000 for i in range(20)]
    ids: list[str] = [""] * len(chunks)

    def work(i: int) -> None:
        ids[i] = store(repo, "data", chunks[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(chunks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    repo.flush()
    assert repo.add_blob("data", ids[0], chunks[0]) == 0  # dedup
    reopened = Repository.open(storage, PASSWORD)
    got = dict(reopened.load_blobs(ids, parallel=3))
    assert got == {cid: data for cid, data in zip(ids, chunks, strict=True)}
    assert reopened.load_blob(ids[-1]) == chunks[-1]
    assert len(list(storage.list("data/"))) >= 3  # several packs at 1 MiB target
    assert check(reopened, read_data=True).errors == []


def test_packs_hold_tiny_oversized_and_torn_blobs_correctly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blobs are sealed into reused pack buffers: many tiny blobs (the trailer's room), a blob
    larger than a whole buffer (a buffer of its own) and a writer that fails (its pack is dropped,
    never stored with a torn blob) all end in packs that check and read back."""
    storage, repo = new_repo(tmp_path, pack_target_bytes=1 * MiB)
    tiny = [b"%06d" % i for i in range(30_000)]
    tiny_ids = [store(repo, "data", t) for t in tiny]
    huge = os.urandom(12 * MiB)  # > pack target + largest chunk: an oversized buffer
    huge_id = store(repo, "data", huge)
    repo.flush()
    sizes = [o.size for o in storage.list("data/")]
    # the tiny blobs are split at about the target (a pack closes at the first blob reaching it)
    assert max(sizes) > 12 * MiB and sum(1 for s in sizes if s <= MiB + 1024) >= 3

    import jobs.repository.writer as module

    def torn(*_args: object) -> None:
        raise OSError("simulated failure while sealing")

    monkeypatch.setattr(module, "seal_blob_into", torn)
    lost = os.urandom(1000)
    with pytest.raises(OSError, match="simulated"):
        store(repo, "data", lost)
    monkeypatch.undo()
    repo.flush()
    assert not repo.has_blob(repo.chunk_id(lost))  # not indexed, not pending: a later backup stores it
    assert store(repo, "data", lost) and repo.flush() is None

    reopened = Repository.open(storage, PASSWORD)
    assert dict(reopened.load_blobs([*tiny_ids[::997], huge_id], parallel=2)) == {
        **{cid: tiny[i * 997] for i, cid in enumerate(tiny_ids[::997])},
        huge_id: huge,
    }
    assert reopened.load_blob(repo.chunk_id(lost)) == lost
    assert check(reopened, read_data=True).errors == []


def test_load_blobs_results_stay_intact_while_read_buffers_are_reused(tmp_path: Path) -> None:
    """Each loading thread reads range after range into one buffer: every blob handed out, stored
    or compressed, must own its bytes (checked only after all ranges were read)."""
    _, repo = new_repo(tmp_path, pack_target_bytes=1 * MiB)
    blobs = {}
    for i in range(40):
        data = os.urandom(300_000) if i % 2 else b"line %d of a compressible log\n" % i * 9000
        blobs[store(repo, "data", data)] = data
    repo.flush()
    loaded = list(Repository.open(repo.storage, PASSWORD).load_blobs(list(blobs), parallel=2))
    assert len(loaded) == len(blobs)
    assert all(bytes(data) == blobs[cid] for cid, data in loaded)


def test_compressing_into_a_reused_scratch_buffer_gives_the_same_payloads() -> None:
    scratch = bytearray(compress_bound(64 * 1024))
    for data in (b"x" * 100, os.urandom(64 * 1024), b"a compressible log line\n" * 2700, b"y" * 300):
        flag, payload = compress_chunk(data, scratch)
        assert (flag, bytes(payload)) == tuple(map(bytes, compress_chunk(data)))
    assert compress_chunk(b"z" * 5000, scratch)[0] == FLAG_SNAPPY


def test_an_authentic_blob_that_does_not_decompress_is_an_integrity_error() -> None:
    key, cid = os.urandom(32), os.urandom(32)
    payload = b"\xff\xff\xff\xff\x0f" + os.urandom(100)  # not a snappy stream
    out = bytearray(sealed_blob_length(payload))
    seal_blob_into(key, KIND_DATA, cid, FLAG_SNAPPY, payload, memoryview(out))
    with pytest.raises(IntegrityError, match="does not decompress"):
        open_blob(key, KIND_DATA, cid, bytes(out), "pack-x")
    stored = bytearray(sealed_blob_length(b"plain"))
    seal_blob_into(key, KIND_DATA, cid, FLAG_RAW, b"plain", memoryview(stored))
    assert open_blob(key, KIND_DATA, cid, bytes(stored), "pack-x") == b"plain"


def test_pack_buffers_in_use_stay_bounded_while_uploads_are_slow(tmp_path: Path) -> None:
    """Packs waiting for an upload slot hold their buffers too: with slow uploads and many
    storing threads, no more than uploads-in-flight + open packs buffers exist at once."""

    class SlowStorage(FileStorage):
        def put_aligned(self, name: str, buffer: AlignedBuffer, length: int, *, overwrite: bool = True) -> None:
            time.sleep(0.03)
            super().put_aligned(name, buffer, length, overwrite=overwrite)

    storage = SlowStorage(tmp_path / "repo")
    Repository.init(storage, PASSWORD, kdf_params=FAST_KDF, pack_target_bytes=1 * MiB)
    repo = Repository.open(storage, PASSWORD, upload_parallel=2)
    pool = repo._writer._buffers  # the bound under test
    in_use, peak, lock = [0], [0], threading.Lock()
    take, give = pool.try_take, pool.give

    def counted_take(needed: int) -> AlignedBuffer | None:
        buffer = take(needed)
        if buffer is not None:
            with lock:
                in_use[0] += 1
                peak[0] = max(peak[0], in_use[0])
        return buffer

    def counted_give(buffer: AlignedBuffer) -> None:
        with lock:
            in_use[0] -= 1
        give(buffer)

    pool.try_take, pool.give = counted_take, counted_give  # type: ignore[method-assign]
    chunks = [os.urandom(200_000) for _ in range(120)]  # ~24 packs of 1 MiB

    def add(part: list[bytes]) -> None:
        for data in part:
            store(repo, "data", data)

    threads = [threading.Thread(target=add, args=(chunks[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    repo.flush()
    assert peak[0] <= PACKS_IN_FLIGHT + OPEN_PACKS
    assert all(bytes(repo.load_blob(repo.chunk_id(c))) == c for c in chunks[::7])


def test_compressible_data_is_stored_smaller(tmp_path: Path) -> None:
    _, repo = new_repo(tmp_path)
    text = b"2026-11-24 INFO request served in 12ms path=/api/v1/things\n" * 20_000
    assert repo.add_blob("data", repo.chunk_id(text), text) < len(text) // 3


def test_ids_are_keyed_per_repository(tmp_path: Path) -> None:
    _, a = new_repo(tmp_path / "a")
    _, b = new_repo(tmp_path / "b")
    assert a.chunk_id(b"same") != b.chunk_id(b"same")


def test_marker_appears_in_no_stored_object(tmp_path: Path) -> None:
    storage, repo = new_repo(tmp_path)
    snapshot_of(repo, {MARKER.decode() + ".txt": MARKER * 1000})
    for obj in storage.list():
        assert MARKER not in storage.get(obj.name), obj.name
        assert MARKER.decode() not in obj.name


def test_flipping_a_byte_in_any_object_is_detected_and_named(tmp_path: Path) -> None:
    storage, repo = new_repo(tmp_path)
    data = os.urandom(50_000)
    snapshot_of(repo, {"f": data})
    names = [o.name for o in storage.list()]
    assert {n.split("/")[0] for n in names} >= {"config", "keys", "data", "index", "snapshots"}
    for name in names:
        original = storage.get(name)
        for position in (0, len(original) // 2, len(original) - 1):
            damaged = bytearray(original)
            damaged[position] ^= 0x01
            storage.put(name, bytes(damaged))
            try:
                opened = Repository.open(storage, PASSWORD)
            except (IntegrityError, WrongPasswordError) as e:
                assert name in str(e) or name.startswith("keys/"), (name, str(e))
            else:
                errors = check(opened, read_data=True).errors
                assert any(name in err for err in errors), (name, position, errors)
            storage.put(name, original)
    assert check(Repository.open(storage, PASSWORD), read_data=True).errors == []


def test_load_blob_refuses_corrupt_data(tmp_path: Path) -> None:
    storage, repo = new_repo(tmp_path)
    data = os.urandom(10_000)
    cid = store(repo, "data", data)
    repo.flush()
    (pack,) = [o.name for o in storage.list("data/")]
    raw = bytearray(storage.get(pack))
    raw[100] ^= 0xFF
    storage.put(pack, bytes(raw))
    with pytest.raises(IntegrityError, match=pack):
        Repository.open(storage, PASSWORD).load_blob(cid)


def test_forget_and_prune_free_space(tmp_path: Path) -> None:
    storage, repo = new_repo(tmp_path, pack_target_bytes=1 * MiB)
    contents = [{f"file{i}": os.urandom(700_000) for i in range(3)} for _ in range(4)]
    snaps = [snapshot_of(repo, files) for files in contents]
    keep = snaps[-1]
    one_snapshot_bytes = 3 * 700_000
    repo.forget(snaps[:-1])
    stats = prune(repo)
    assert stats.packs_deleted + stats.packs_repacked > 0
    total = sum(o.size for o in storage.list())
    assert total <= 1.1 * one_snapshot_bytes, total
    reopened = Repository.open(storage, PASSWORD)
    assert [s.id for s in reopened.list_snapshots()] == [keep]
    assert check(reopened, read_data=True).errors == []
    (top,) = decode_tree(reopened.load_blob(reopened.find_snapshot(keep).root))
    assert top.subtree is not None
    restored = {
        n.name: b"".join(reopened.load_blob(cid) for cid, _ in n.content if cid)
        for n in decode_tree(reopened.load_blob(top.subtree))
    }
    assert restored == contents[-1]


def test_a_deleted_manifest_is_reported_a_forgotten_one_is_not(tmp_path: Path) -> None:
    storage, repo = new_repo(tmp_path)
    old, kept, lost = (snapshot_of(repo, {"f": os.urandom(50_000)}) for _ in range(3))
    repo.forget([old])
    assert storage.exists(f"forgotten/{old}") and check(repo).errors == []
    storage.delete(f"snapshots/{lost}")  # behind the repository's back
    (error,) = check(repo).errors
    assert f"snapshots/{lost}" in error and "never forgotten" in error
    prune(repo)  # drops the forgotten snapshot's record and tombstone, keeps the lost one's record
    assert not storage.exists(f"forgotten/{old}")
    reopened = Repository.open(storage, PASSWORD)
    assert set(reopened.recorded_snapshots) == {kept, lost}
    (error,) = check(reopened).errors
    assert f"snapshots/{lost}" in error


def test_a_forged_or_damaged_tombstone_is_damage(tmp_path: Path) -> None:
    storage, repo = new_repo(tmp_path)
    sid = snapshot_of(repo, {"f": b"x" * 5000})
    other = snapshot_of(repo, {"g": b"y" * 5000})
    repo.forget([other])
    storage.put(f"forgotten/{sid}", storage.get(f"forgotten/{other}"))  # a tombstone moved to another id
    storage.delete(f"snapshots/{sid}")
    for _ in range(2):  # a prune in between must not take the moved tombstone for a real one
        errors = check(repo).errors
        assert any(f"forgotten/{sid} is damaged" in e for e in errors)
        assert any(f"snapshots/{sid} is missing" in e for e in errors)
        prune(repo)


def test_prune_keeps_shared_blobs(tmp_path: Path) -> None:
    storage, repo = new_repo(tmp_path)
    shared = os.urandom(200_000)
    first = snapshot_of(repo, {"a": shared, "b": os.urandom(200_000)})
    second = snapshot_of(repo, {"a": shared})
    repo.forget([first])
    prune(repo)
    reopened = Repository.open(storage, PASSWORD)
    assert reopened.find_snapshot(second[:8]).id == second
    assert reopened.load_blob(reopened.chunk_id(shared)) == shared
    assert check(reopened, read_data=True).errors == []


def test_exclusive_lock_conflicts_with_shared(tmp_path: Path) -> None:
    storage, repo = new_repo(tmp_path)
    other = Repository.open(storage, PASSWORD)
    with repo.lock(exclusive=False), pytest.raises(LockHeldError, match="shared lock held by pid"):
        with other.lock(exclusive=True, wait_seconds=0.5):
            pass
    with other.lock(exclusive=True, wait_seconds=1):
        with pytest.raises(LockHeldError):
            with repo.lock(exclusive=False, wait_seconds=0.5):
                pass
    assert list(storage.list("locks/")) == []


def test_concurrent_inits_leave_one_working_repository(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path / "repo")
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def init() -> None:
        barrier.wait()
        try:
            Repository.init(storage, PASSWORD, kdf_params=FAST_KDF)
            outcomes.append("created")
        except RepositoryExistsError:
            outcomes.append("exists")

    threads = [threading.Thread(target=init) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("created") == 1
    repo = Repository.open(storage, PASSWORD)
    snapshot_of(repo, {"f": b"data after a racy init"})
    assert check(Repository.open(storage, PASSWORD), read_data=True).errors == []


def test_a_stray_key_for_another_config_is_skipped(tmp_path: Path) -> None:
    storage, repo = new_repo(tmp_path)
    from jobs.repository.crypto import MasterKeys
    from jobs.repository.keys import add_key

    add_key(storage, MasterKeys.generate(), PASSWORD, FAST_KDF)  # what a lost init race used to leave
    assert Repository.open(storage, PASSWORD).id == repo.id


def test_uploaded_blobs_are_indexed_in_bounded_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Entries waiting for an index file are bounded: with a 1 MiB pack target and a limit of 20
    # entries, index files appear before the flush, and a reopened repository finds every blob.
    monkeypatch.setattr("jobs.repository.writer.UNINDEXED_MAX_ENTRIES", 20)
    storage, repo = new_repo(tmp_path, pack_target_bytes=1 * MiB)
    chunks = [os.urandom(30_000) for _ in range(200)]
    ids = [store(repo, "data", c) for c in chunks]
    repo._writer._wait_uploads()  # the packs filled so far are uploaded (their index files with them)
    written_before_flush = len(list(storage.list("index/")))
    repo.flush()
    assert written_before_flush >= 2
    reopened = Repository.open(storage, PASSWORD)
    assert len(reopened.index) == len(chunks)
    assert dict(reopened.load_blobs(ids, parallel=2)) == dict(zip(ids, chunks, strict=True))
    assert check(reopened, read_data=True).errors == []


def test_uploaded_packs_become_findable_every_few_packs_and_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A backup killed midway leaves its uploaded data findable (FORMAT.md §7): an index file is
    # written once UNINDEXED_MAX_PACKS packs wait for one, and once UNINDEXED_MAX_SECONDS passed
    # with any pack waiting, long before the entry bound; a repository opened without any flush
    # (the next run after a SIGKILL) knows those blobs and does not store them again.
    storage, repo = new_repo(tmp_path, pack_target_bytes=1 * MiB)
    by_packs = [os.urandom(300_000) for _ in range(4 * 8 + 2)]  # > 8 packs of ~3 blobs each
    for c in by_packs:
        store(repo, "data", c)
    repo._writer._wait_uploads()
    indexed = Repository.open(storage, PASSWORD)
    known = sum(indexed.has_blob(indexed.chunk_id(c)) for c in by_packs)
    assert known >= 8 * 3 - 3, known  # at least the first eight packs' blobs
    monkeypatch.setattr("jobs.repository.writer.UNINDEXED_MAX_SECONDS", 0.0)
    by_time = [os.urandom(300_000) for _ in range(4)]  # one more full pack: due by time alone
    for c in by_time:
        store(repo, "data", c)
    repo._writer._wait_uploads()
    again = Repository.open(storage, PASSWORD)
    assert again.has_blob(again.chunk_id(by_time[0]))
    assert again.add_blob("data", again.chunk_id(by_packs[0]), by_packs[0]) == 0  # deduplicated
    repo.flush()
    assert check(Repository.open(storage, PASSWORD), read_data=True).errors == []


def test_prune_repacking_many_packs_keeps_every_live_blob(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Repacking writes more packs than trigger an interim index file during a backup; prune's
    # consolidated index must still list every repacked blob (an interim index file would be
    # superseded and deleted with the old ones, losing them).
    monkeypatch.setattr("jobs.repository.writer.UNINDEXED_MAX_SECONDS", 0.0)
    storage, repo = new_repo(tmp_path, pack_target_bytes=1 * MiB)
    kept = {f"k{i}": os.urandom(300_000) for i in range(30)}
    dropped = {f"d{i}": os.urandom(300_000) for i in range(30)}
    first = snapshot_of(repo, {**{k: v for pair in zip(kept.items(), dropped.items(), strict=True) for k, v in pair}})
    second = snapshot_of(repo, kept)
    repo.forget([first])
    stats = prune(repo)
    assert stats.packs_repacked >= 8, stats
    reopened = Repository.open(storage, PASSWORD)
    assert reopened.find_snapshot(second).id == second
    assert all(reopened.load_blob(reopened.chunk_id(v)) == v for v in kept.values())
    assert check(reopened, read_data=True).errors == []


def test_prune_leaves_packs_with_little_unused_data_alone(tmp_path: Path) -> None:
    # One file of 60 forgotten: 1.7 % of the data unused, below the 5 % prune tolerates by
    # default, so no pack is copied (the previous prune repacked the pack holding it); with
    # max_unused=0 that pack is repacked and the blob is gone.
    storage, repo = new_repo(tmp_path, pack_target_bytes=1 * MiB)
    files = {f"f{i:02d}": os.urandom(100_000) for i in range(60)}
    first = snapshot_of(repo, files)
    second = snapshot_of(repo, {k: v for k, v in files.items() if k != "f30"})
    packs_before = {o.name for o in storage.list("data/")}
    repo.forget([first])
    stats = prune(repo)
    assert stats.packs_repacked == 0 and stats.packs_deleted == 1 and stats.blobs_removed == 2, stats  # its 2 trees
    assert {o.name for o in storage.list("data/")} < packs_before  # only packs left wholly unused went
    reopened = Repository.open(storage, PASSWORD)
    gone = reopened.chunk_id(files["f30"])
    assert reopened.load_blob(gone) == files["f30"]  # still stored and indexed: its pack was kept whole
    assert check(reopened, read_data=True).errors == []
    stats = prune(reopened, max_unused=0)
    assert stats.packs_repacked == 1 and stats.blobs_removed == 1, stats
    final = Repository.open(storage, PASSWORD)
    assert not final.has_blob(gone)
    assert [s.id for s in final.list_snapshots()] == [second]
    assert all(final.load_blob(final.chunk_id(v)) == v for k, v in files.items() if k != "f30")
    assert check(final, read_data=True).errors == []


def test_check_loads_shared_trees_once_and_still_names_the_damaged_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three snapshots of the same files share all their trees: check walks them in one pass
    # (the previous check loaded every tree once per snapshot). A snapshot referencing a blob
    # in no index is still named alone.
    storage, repo = new_repo(tmp_path)
    files = {f"f{i}": os.urandom(2_000) for i in range(5)}
    same = [snapshot_of(repo, files) for _ in range(3)]
    loads: list[str] = []
    real = Repository.load_blobs

    def counted(self: Repository, chunk_ids: object, *, parallel: int = 4) -> object:
        ids = list(chunk_ids)  # type: ignore[call-overload]
        loads.extend(ids)
        return real(self, ids, parallel=parallel)

    monkeypatch.setattr(Repository, "load_blobs", counted)
    reopened = Repository.open(storage, PASSWORD)
    assert check(reopened).errors == []
    assert len(loads) == len(set(loads)) == 2, loads  # the top tree and the directory's, once each
    lost = os.urandom(32).hex()
    tree = encode_tree([Node(name="gone", type=NODE_FILE, size=1, content=[(lost, 1)])])
    top = encode_tree([Node(name=".", type=NODE_DIR, subtree=store(repo, "tree", tree))])
    top_id = store(repo, "tree", top)
    repo.flush()
    damaged = repo.save_snapshot(SnapshotManifest(source="/src", root=top_id))
    (error,) = check(Repository.open(storage, PASSWORD)).errors
    assert error.startswith(f"snapshot {damaged[:16]}: 1 data blobs are in no index"), error
    assert not any(sid[:16] in error for sid in same)
