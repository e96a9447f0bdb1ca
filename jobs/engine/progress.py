"""Progress accounting shared by the backup and restore pipelines.

Worker threads add bytes and files as they finish them; :class:`ProgressTracker` turns that into
:class:`Progress` snapshots for the caller's callback, at most once per
``interval_seconds`` and once more at the end (the CLI prints them, the Job runner patches the CR).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

PROGRESS_CALLBACK_INTERVAL_SECONDS: Final = 1.0


@dataclass(frozen=True)
class Progress:
    """Counters of a running backup or restore (bytes are logical volume bytes)."""

    total_bytes: int
    bytes_done: int
    files_total: int
    files_done: int
    new_bytes: int


ProgressCallback = Callable[[Progress], None]


class ProgressTracker:
    """Thread-safe counters with a throttled callback."""

    def __init__(
        self,
        callback: ProgressCallback | None,
        *,
        interval_seconds: float = PROGRESS_CALLBACK_INTERVAL_SECONDS,
    ) -> None:
        self._callback = callback
        self._interval = interval_seconds
        self._lock = threading.Lock()
        self._next_report = time.monotonic() + interval_seconds
        self.total_bytes = 0
        self.bytes_done = 0
        self.files_total = 0
        self.files_done = 0
        self.new_bytes = 0

    def add(
        self,
        *,
        total_bytes: int = 0,
        bytes_done: int = 0,
        files_total: int = 0,
        files_done: int = 0,
        new_bytes: int = 0,
    ) -> None:
        """Add to the counters; calls the callback if the interval has passed."""
        report = None
        with self._lock:
            self.total_bytes += total_bytes
            self.bytes_done += bytes_done
            self.files_total += files_total
            self.files_done += files_done
            self.new_bytes += new_bytes
            now = time.monotonic()
            if self._callback is not None and now >= self._next_report:
                self._next_report = now + self._interval
                report = self._snapshot()
        if report is not None and self._callback is not None:
            self._callback(report)

    def finish(self) -> Progress:
        """Report the final counters (always calls the callback) and return them."""
        with self._lock:
            report = self._snapshot()
        if self._callback is not None:
            self._callback(report)
        return report

    def _snapshot(self) -> Progress:
        return Progress(self.total_bytes, self.bytes_done, self.files_total, self.files_done, self.new_bytes)
