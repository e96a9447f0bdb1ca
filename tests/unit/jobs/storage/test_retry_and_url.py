"""Unit tests: the retry decorator retries only transient errors, within its budget; URL parsing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.errors import ObjectNotFoundError, StoragePermissionError, StorageUnavailableError, UsageError
from jobs.storage.base import ObjectInfo, Storage
from jobs.storage.file import FileStorage
from jobs.storage.retry import RetryingStorage, RetryPolicy
from jobs.storage.url import open_backend, redact_url


class FlakyStorage(Storage):
    """Fails the first ``failures`` calls with the given error, then answers."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    @property
    def location(self) -> str:
        return "flaky://"

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        self._maybe_fail()
        return b"ok"

    def put(self, name: str, data: bytes | memoryview, *, overwrite: bool = True) -> None:
        self._maybe_fail()

    def delete(self, name: str) -> None:
        self._maybe_fail()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._maybe_fail()
        yield ObjectInfo("a", 1)

    def stat(self, name: str) -> ObjectInfo:
        self._maybe_fail()
        return ObjectInfo(name, 2)


def retrying(inner: Storage, attempts: int = 5) -> RetryingStorage:
    return RetryingStorage(inner, RetryPolicy(max_attempts=attempts, max_elapsed_seconds=30), sleep=lambda s: None)


def test_transient_errors_are_retried() -> None:
    inner = FlakyStorage(3, StorageUnavailableError("503"))
    assert retrying(inner).get("x") == b"ok"
    assert inner.calls == 4


def test_persistent_outage_gives_up_after_the_budget() -> None:
    inner = FlakyStorage(100, StorageUnavailableError("connection refused"))
    with pytest.raises(StorageUnavailableError, match="gave up"):
        retrying(inner, attempts=4).put("x", b"")
    assert inner.calls == 4


@pytest.mark.parametrize("error", [ObjectNotFoundError("gone"), StoragePermissionError("denied")])
def test_permanent_errors_are_not_retried(error: Exception) -> None:
    inner = FlakyStorage(1, error)
    with pytest.raises(type(error)):
        retrying(inner).stat("x")
    assert inner.calls == 1


def test_listing_is_retried_as_a_whole() -> None:
    inner = FlakyStorage(1, StorageUnavailableError("reset"))
    assert [o.name for o in retrying(inner).list()] == ["a"]


def test_file_url() -> None:
    s = open_backend("file:///tmp/somewhere")
    assert isinstance(s, FileStorage) and str(s.root) == "/tmp/somewhere"


@pytest.mark.parametrize(
    "url",
    [
        "",
        "file://relative/path",
        "ftp://host/x",
        "s3://",
        "s3://bucket/x?path_style=maybe",
        "s3://b/x?bogus=1",
        "s3://key:secret@bucket/x",
        "s3://b/x?endpoint=127.0.0.1:9000",
    ],
)
def test_malformed_urls_are_usage_errors(url: str) -> None:
    with pytest.raises(UsageError) as info:
        open_backend(url)
    assert "secret" not in str(info.value)


def test_redaction_drops_userinfo() -> None:
    assert "secret" not in redact_url("s3://key:secret@bucket/prefix?endpoint=http://h:1")
    assert redact_url("file:///a/b") == "file:///a/b"


def test_file_storage_reads_ranges_into_the_callers_buffer(tmp_path: Path) -> None:
    storage = RetryingStorage(FileStorage(tmp_path))
    storage.put("data/pack", bytes(range(256)) * 4)
    buffer = bytearray(64)
    got = storage.get_into("data/pack", 250, memoryview(buffer)[:10])
    assert got.obj is buffer and bytes(got) == bytes([250, 251, 252, 253, 254, 255, 0, 1, 2, 3])
