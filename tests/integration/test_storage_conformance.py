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
from jobs.storage.base import Storage
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
