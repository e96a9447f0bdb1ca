"""launcher.workqueue: deduplication, delayed adds, per-key exponential backoff (a fake clock)."""

from __future__ import annotations

from launcher.workqueue import MAX_BACKOFF_SECONDS, WorkQueue


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_queued_key_is_queued_once() -> None:
    q = WorkQueue()
    q.add(("DataUpload", "a"))
    q.add(("DataUpload", "a"))
    assert q.depth() == 1 and q.get(0.01) == ("DataUpload", "a") and q.get(0.01) is None


def test_delayed_adds_keep_the_earliest_due_time() -> None:
    clock = Clock()
    q = WorkQueue(clock)
    q.add(("k", "a"), delay=10)
    q.add(("k", "a"), delay=2)
    clock.now = 1
    assert q.due() == []
    clock.now = 2
    assert q.due() == [("k", "a")] and q.get(0.01) == ("k", "a")


def test_failures_back_off_exponentially_per_key_and_reset_on_success() -> None:
    q = WorkQueue(Clock())
    delays = [q.failed(("k", "a")) for _ in range(8)]
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0] and delays[-1] == MAX_BACKOFF_SECONDS
    assert q.failed(("k", "b")) == 1.0  # another key is not slowed down
    q.succeeded(("k", "a"))
    assert q.failed(("k", "a")) == 1.0
