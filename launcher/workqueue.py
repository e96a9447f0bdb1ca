"""The launcher's work queue: each CR key at most once in the queue, delayed requeues, backoff.

Watches and timers put ``(kind, name)`` keys here; one worker takes them (``get``) and reconciles.
A key already queued is not queued twice; a delayed ``add`` keeps the earliest due time. A key
whose reconcile failed is retried after a per-key exponential backoff (``failed``:
``BASE_BACKOFF_SECONDS`` doubling up to ``MAX_BACKOFF_SECONDS``), reset by the first success
(``succeeded``), so an API outage is not hammered while other CRs keep being served.
Thread-safe. Used by ``launcher.controller``; tested in ``tests/unit/launcher/test_workqueue.py``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

Key = tuple[str, str]

BASE_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 60.0


class WorkQueue:
    """Deduplicating queue of CR keys with delayed adds and per-key failure backoff."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.ready: queue.Queue[Key] = queue.Queue()
        self.queued: set[Key] = set()
        self.timers: dict[Key, float] = {}
        self.failures: dict[Key, int] = {}
        self.lock = threading.Lock()

    def add(self, key: Key, delay: float = 0.0) -> None:
        """Queue ``key`` now, or after ``delay`` seconds (the earliest of several delays wins)."""
        with self.lock:
            if delay > 0:
                due = self.clock() + delay
                if key not in self.timers or self.timers[key] > due:
                    self.timers[key] = due
                return
            if key in self.queued:
                return
            self.queued.add(key)
        self.ready.put(key)

    def due(self) -> list[Key]:
        """Move every delayed key whose time has come into the queue; returns them."""
        now = self.clock()
        with self.lock:
            keys = [k for k, t in self.timers.items() if t <= now]
            for k in keys:
                del self.timers[k]
        for k in keys:
            self.add(k)
        return keys

    def get(self, timeout: float) -> Key | None:
        """The next key (None after ``timeout`` seconds without one); it may be queued again at once."""
        try:
            key = self.ready.get(timeout=timeout)
        except queue.Empty:
            return None
        with self.lock:
            self.queued.discard(key)
        return key

    def failed(self, key: Key) -> float:
        """Requeue ``key`` after its backoff (doubling per consecutive failure); returns the delay."""
        with self.lock:
            count = self.failures.get(key, 0)
            self.failures[key] = count + 1
        delay = float(min(MAX_BACKOFF_SECONDS, BASE_BACKOFF_SECONDS * 2.0**count))
        self.add(key, delay)
        return delay

    def succeeded(self, key: Key) -> None:
        """Forget ``key``'s failures: its next failure backs off from the start again."""
        with self.lock:
            self.failures.pop(key, None)

    def depth(self) -> int:
        """Keys waiting in the queue now (delayed ones not counted)."""
        return self.ready.qsize()
