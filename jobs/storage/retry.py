"""A storage decorator that retries transient failures, and only those.

Every backend raises :class:`~jobs.errors.StorageUnavailableError` (``retryable = True``) for
failures that may pass (connection resets, 5xx, throttling, a body cut off mid-stream); this
wrapper retries them with exponential backoff and jitter for at most ``max_attempts`` tries and
``max_elapsed_seconds``, then re-raises the last error, so a persistent outage ends the run with
exit code 4 in bounded time. Missing objects, permission and integrity errors are never retried.
botocore's own retries are kept low (see :mod:`jobs.storage.s3`) so the two do not multiply.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from jobs.direct_io import AlignedBuffer
from jobs.errors import MoverError, StorageUnavailableError
from jobs.storage.base import ObjectInfo, Storage

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How long transient storage errors are retried."""

    max_attempts: int = 8
    initial_delay_seconds: float = 0.2
    max_delay_seconds: float = 10.0
    max_elapsed_seconds: float = 60.0


class RetryingStorage(Storage):
    """Wraps a storage and retries its retryable errors according to a :class:`RetryPolicy`."""

    def __init__(
        self, inner: Storage, policy: RetryPolicy | None = None, *, sleep: Callable[[float], None] = time.sleep
    ):
        self._inner = inner
        self._policy = policy or RetryPolicy()
        self._sleep = sleep

    @property
    def inner(self) -> Storage:
        """The wrapped backend."""
        return self._inner

    @property
    def location(self) -> str:
        return self._inner.location

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        policy = self._policy
        start = time.monotonic()
        delay = policy.initial_delay_seconds
        attempt = 1
        while True:
            try:
                return fn()
            except MoverError as e:
                elapsed = time.monotonic() - start
                if not e.retryable or attempt >= policy.max_attempts or elapsed + delay > policy.max_elapsed_seconds:
                    if e.retryable:
                        raise StorageUnavailableError(
                            f"{e} (gave up on {what} after {attempt} attempts in {elapsed:.0f}s; "
                            f"check that {self.location} is reachable)"
                        ) from e
                    raise
                log.warning("storage: %s failed (%s); retry %d in %.1fs", what, e, attempt, delay)
                self._sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, policy.max_delay_seconds)
                attempt += 1

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._call(f"get {name}", lambda: self._inner.get(name, offset, length))

    def get_into(self, name: str, offset: int, buffer: memoryview) -> memoryview:
        return self._call(f"get {name}", lambda: self._inner.get_into(name, offset, buffer))

    def put(self, name: str, data: bytes | memoryview, *, overwrite: bool = True) -> None:
        self._call(f"put {name}", lambda: self._inner.put(name, data, overwrite=overwrite))

    def put_aligned(self, name: str, buffer: AlignedBuffer, length: int, *, overwrite: bool = True) -> None:
        self._call(f"put {name}", lambda: self._inner.put_aligned(name, buffer, length, overwrite=overwrite))

    def delete(self, name: str) -> None:
        self._call(f"delete {name}", lambda: self._inner.delete(name))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Listing restarts from scratch on a transient error, so yield only a complete result.
        return iter(self._call(f"list {prefix or '/'}", lambda: list(self._inner.list(prefix))))

    def stat(self, name: str) -> ObjectInfo:
        return self._call(f"stat {name}", lambda: self._inner.stat(name))

    def reopened(self) -> Storage | None:
        inner = self._inner.reopened()
        return None if inner is None else RetryingStorage(inner, self._policy, sleep=self._sleep)

    def close(self) -> None:
        self._inner.close()
