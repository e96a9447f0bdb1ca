"""One storage contract, two backends: every test runs against file:// and a real S3 server (moto)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from jobs.errors import ObjectExistsError, ObjectNotFoundError, UsageError
from jobs.storage.base import AlignedBuffer, Storage
from jobs.storage.file import FileStorage
from jobs.storage.url import open_storage

pytestmark = pytest.mark.integration


@pytest.fixture
def storage(storage_url: str) -> Storage:
    from jobs.storage.retry import RetryPolicy

    s = open_storage(storage_url, retry=RetryPolicy(max_attempts=2, max_elapsed_seconds=5))
    if storage_url.startswith("s3://"):
        s.inner.create_bucket_if_missing()  # type: ignore[attr-defined]
    return s


def test_put_get_roundtrip_and_ranges(storage: Storage) -> None:
    data = os.urandom(100_000)
    storage.put("data/ab/object", data)
    assert storage.get("data/ab/object") == data
    assert storage.get("data/ab/object", 10, 1000) == data[10:1010]
    assert storage.get("data/ab/object", 99_000) == data[99_000:]
    assert storage.stat("data/ab/object").size == len(data)
    assert storage.exists("data/ab/object")


def test_get_into_reads_the_range_into_the_callers_buffer_or_a_fresh_object(storage: Storage) -> None:
    data = os.urandom(100_000)
    storage.put("data/ab/object", data)
    buffer = bytearray(b"\xff" * 2000)
    got = storage.get_into("data/ab/object", 10, memoryview(buffer)[:1000])
    assert bytes(got) == data[10:1010]
    if got.obj is buffer:  # read in place: the rest of the buffer is untouched
        assert buffer[1000:] == b"\xff" * 1000
    with pytest.raises(ObjectNotFoundError, match=r"truncated|past its end"):
        storage.get_into("data/ab/object", 99_500, memoryview(buffer)[:1000])
    with pytest.raises(ObjectNotFoundError):
        storage.get_into("nope", 0, memoryview(buffer)[:10])


def test_overwrite_replaces_whole_object(storage: Storage) -> None:
    storage.put("config", b"a" * 1000)
    storage.put("config", b"b" * 10)
    assert storage.get("config") == b"b" * 10


def test_range_past_end_is_an_error_not_a_short_read(storage: Storage) -> None:
    storage.put("small", b"0123456789")
    with pytest.raises(ObjectNotFoundError, match=r"truncated|past its end"):
        storage.get("small", 5, 10)


def test_missing_object_errors(storage: Storage) -> None:
    with pytest.raises(ObjectNotFoundError):
        storage.get("nope")
    with pytest.raises(ObjectNotFoundError):
        storage.stat("nope")
    assert not storage.exists("nope")


def test_delete_is_idempotent(storage: Storage) -> None:
    storage.put("x/y", b"1")
    storage.delete("x/y")
    storage.delete("x/y")
    assert not storage.exists("x/y")


def test_create_only_put_has_exactly_one_winner(storage: Storage) -> None:
    winners: list[int] = []
    losers: list[int] = []
    barrier = threading.Barrier(8)

    def racer(i: int) -> None:
        barrier.wait()
        try:
            storage.put("locks/one", f"writer {i}".encode(), overwrite=False)
            winners.append(i)
        except ObjectExistsError:
            losers.append(i)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(winners) == 1 and len(losers) == 7
    assert storage.get("locks/one") == f"writer {winners[0]}".encode()


def test_listing_goes_past_one_thousand_objects(storage: Storage) -> None:
    names = {f"many/{i:05d}" for i in range(1100)}

    def put_range(part: list[str]) -> None:
        for n in part:
            storage.put(n, b"x")

    ordered = sorted(names)
    threads = [threading.Thread(target=put_range, args=(ordered[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    storage.put("other/thing", b"y")
    listed = {o.name for o in storage.list("many/")}
    assert listed == names
    assert {o.name for o in storage.list()} == names | {"other/thing"}


def test_large_object_roundtrip(storage: Storage) -> None:
    data = os.urandom(20 * 1024 * 1024)
    storage.put("packs/big", memoryview(data))
    assert storage.get("packs/big") == data
    assert storage.get("packs/big", 16 * 1024 * 1024, 4096) == data[16 * 1024 * 1024 : 16 * 1024 * 1024 + 4096]


@pytest.mark.parametrize("length", [0, 1, 4095, 4096, 4097, 3 * 1024 * 1024 + 17])
def test_aligned_put_stores_exactly_the_first_length_bytes(storage: Storage, length: int) -> None:
    buffer = AlignedBuffer(4 * 1024 * 1024)
    buffer.view[:] = b"\xee" * buffer.capacity  # bytes past `length` must never be stored
    payload = os.urandom(length)
    buffer.view[:length] = payload
    storage.put_aligned("data/ab/aligned", buffer, length)
    assert storage.get("data/ab/aligned") == payload
    storage.put_aligned("data/ab/aligned", buffer, length // 2)  # overwriting a longer object
    assert storage.get("data/ab/aligned") == payload[: length // 2]
    with pytest.raises(ObjectExistsError):
        storage.put_aligned("data/ab/aligned", buffer, length, overwrite=False)
    buffer.close()


def test_a_failed_aligned_put_keeps_no_view_of_the_buffer(storage: Storage) -> None:
    """A pack buffer is reused or unmapped after its upload, even when the failed attempt's
    exception (and the request frames in its traceback) is still alive, as a retry loop keeps it."""
    buffer = AlignedBuffer(64 * 1024)
    buffer.view[:5000] = os.urandom(5000)
    storage.put_aligned("data/ab/held", buffer, 5000)
    with pytest.raises(ObjectExistsError) as failed:
        storage.put_aligned("data/ab/held", buffer, 5000, overwrite=False)
    buffer.close()
    assert buffer.unmapped, "a view of the buffer outlived the request"
    assert failed.value.__traceback__ is not None  # the traceback really was still alive


def test_file_storage_without_direct_io_writes_the_same_bytes(tmp_path: Path) -> None:
    buffer = AlignedBuffer(64 * 1024)
    payload = os.urandom(40_000)
    buffer.view[: len(payload)] = payload
    for direct in (True, False):
        storage = FileStorage(tmp_path / f"direct-{direct}", direct_io=direct)
        storage.put_aligned("data/aa/p", buffer, len(payload))
        assert (tmp_path / f"direct-{direct}" / "data/aa/p").read_bytes() == payload
        assert not [p for p in (tmp_path / f"direct-{direct}" / "data/aa").iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.parametrize("name", ["", "/abs", "a/../b", "a//b", "./a"])
def test_bad_names_are_rejected(storage: Storage, name: str) -> None:
    with pytest.raises(UsageError):
        storage.put(name, b"x")


def test_killed_file_writer_leaves_no_partial_object(tmp_path: Path) -> None:
    """A writer killed mid-put leaves either nothing or the old object, never a torn one."""
    root = tmp_path / "repo"
    storage = open_storage(f"file://{root}")
    storage.put("obj", b"old" * 1000)
    script = (
        "import sys, os\n"
        "from jobs.storage.file import FileStorage\n"
        "import jobs.storage.file as f\n"
        "real_fsync = os.fsync\n"
        "def slow(fd):\n"
        "    sys.stdout.write('writing\\n'); sys.stdout.flush()\n"
        "    import time; time.sleep(60)\n"
        "os.fsync = slow\n"
        f"FileStorage({str(root)!r}).put('obj', b'new' * 10_000_000)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"writing\n"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert storage.get("obj") == b"old" * 1000
    assert [o.name for o in storage.list()] == ["obj"]
