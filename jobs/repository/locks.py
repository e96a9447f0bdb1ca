"""Repository locks (``locks/<random>``): shared for backups, exclusive for prune (FORMAT.md §9).

Protocol (create, then re-check): write our own lock object, then list every lock; if a
conflicting live lock exists (any lock for an exclusive request, an exclusive one for a shared
request), remove ours, wait with jitter and try again until ``wait_seconds`` runs out, then raise
:class:`~jobs.errors.LockHeldError` naming the holder. A background thread rewrites held locks
every ``REFRESH_SECONDS``; a lock not refreshed for ``STALE_SECONDS`` (or whose process is gone
on this same host) is stale: it never blocks anyone and ``unlock`` removes it. Lock objects are
sealed like everything else, so tampering is detected by ``check``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Final

from jobs.errors import IntegrityError, LockHeldError, ObjectNotFoundError
from jobs.repository.crypto import open_sealed, seal
from jobs.storage.base import Storage

log = logging.getLogger(__name__)

LOCKS_PREFIX: Final = "locks/"
REFRESH_SECONDS: Final = 60.0
STALE_SECONDS: Final = 300.0


def lock_aad(name: str) -> bytes:
    """Associated data binding a lock object to its name."""
    return b"snapmover-lock:" + name.encode()


@dataclass(frozen=True)
class LockInfo:
    """Who holds a lock, and since when."""

    exclusive: bool
    hostname: str
    pid: int
    created: float
    refreshed: float

    def is_stale(self, now: float) -> bool:
        """True when the holder stopped refreshing or is a dead process on this host."""
        if now - self.refreshed > STALE_SECONDS:
            return True
        if self.hostname == socket.gethostname() and self.pid != os.getpid():
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
        return False

    def describe(self) -> str:
        """One phrase naming the holder."""
        kind = "exclusive" if self.exclusive else "shared"
        age = time.time() - self.created
        return f"{kind} lock held by pid {self.pid} on {self.hostname} for {age:.0f}s"


class LockManager:
    """Creates, refreshes and removes this process's locks in one repository."""

    def __init__(self, storage: Storage, key: bytes) -> None:
        self._storage = storage
        self._key = key
        self._held: dict[str, LockInfo] = {}
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    def read(self, name: str) -> LockInfo:
        """Load and authenticate one lock object."""
        sealed = self._storage.get(name)
        try:
            return LockInfo(**json.loads(open_sealed(self._key, sealed, lock_aad(name), f"lock {name}")))
        except (ValueError, TypeError) as e:
            raise IntegrityError(f"lock {name} is malformed") from e

    def _write(self, name: str, info: LockInfo, *, create: bool) -> None:
        data = seal(self._key, json.dumps(asdict(info)).encode(), lock_aad(name))
        self._storage.put(name, data, overwrite=not create)

    def others(self) -> Iterator[tuple[str, LockInfo | None]]:
        """Every lock not held by us; None for unreadable ones (treated as live until stale)."""
        for obj in self._storage.list(LOCKS_PREFIX):
            if obj.name in self._held:
                continue
            try:
                yield obj.name, self.read(obj.name)
            except ObjectNotFoundError:
                continue
            except IntegrityError:
                yield obj.name, None

    @contextmanager
    def hold(self, *, exclusive: bool, wait_seconds: float = 60.0) -> Iterator[None]:
        """Hold a lock for the duration of the ``with`` block."""
        name = self.acquire(exclusive=exclusive, wait_seconds=wait_seconds)
        try:
            yield
        finally:
            self.release(name)

    def acquire(self, *, exclusive: bool, wait_seconds: float = 60.0) -> str:
        """Take a lock; LockHeldError naming the holder when it cannot within ``wait_seconds``."""
        deadline = time.monotonic() + wait_seconds
        delay = 0.2
        while True:
            now = time.time()
            info = LockInfo(exclusive, socket.gethostname(), os.getpid(), now, now)
            name = LOCKS_PREFIX + secrets.token_hex(16)
            self._write(name, info, create=True)
            with self._mutex:
                self._held[name] = info
            conflict = self._conflict(exclusive)
            if conflict is None:
                self._start_refresher()
                return name
            self.release(name)
            if time.monotonic() + delay > deadline:
                raise LockHeldError(
                    f"the repository at {self._storage.location} is locked: {conflict}; "
                    "wait for it to finish, or run `snapmover repo unlock` if that process is gone"
                )
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)

    def _conflict(self, exclusive: bool) -> str | None:
        now = time.time()
        for name, other in self.others():
            if other is None:
                return f"an unreadable lock object {name}"
            if other.is_stale(now):
                continue
            if exclusive or other.exclusive:
                return other.describe()
        return None

    def release(self, name: str) -> None:
        """Remove one of our locks."""
        with self._mutex:
            self._held.pop(name, None)
        try:
            self._storage.delete(name)
        except Exception as e:  # noqa: BLE001 - a leftover lock goes stale; never fail the caller for it
            log.warning("could not remove lock %s: %s", name, e)

    def remove_stale(self, *, stale_only: bool = True) -> int:
        """Remove stale locks (or every lock not ours); returns how many."""
        removed = 0
        now = time.time()
        for name, info in list(self.others()):
            if not stale_only or info is None or info.is_stale(now):
                self._storage.delete(name)
                removed += 1
        return removed

    def _start_refresher(self) -> None:
        with self._mutex:
            if self._refresher is not None and self._refresher.is_alive():
                return
            self._stop.clear()
            self._refresher = threading.Thread(target=self._refresh_loop, name="lock-refresh", daemon=True)
            self._refresher.start()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(REFRESH_SECONDS):
            with self._mutex:
                held = dict(self._held)
            for name, info in held.items():
                with self._mutex:
                    if name not in self._held:
                        continue
                fresh = LockInfo(info.exclusive, info.hostname, info.pid, info.created, time.time())
                try:
                    self._write(name, fresh, create=False)
                except Exception as e:  # noqa: BLE001 - retried at the next refresh
                    log.warning("could not refresh lock %s: %s", name, e)

    def close(self) -> None:
        """Release every lock and stop refreshing."""
        self._stop.set()
        with self._mutex:
            names = list(self._held)
        for name in names:
            self.release(name)
