"""Throttled progress of a mover Job: a CR patch and one log line per PROGRESS_INTERVAL_SECONDS.

Used by ``jobs.kube.runner`` as the data path's ``on_progress`` callback.
"""

from __future__ import annotations

import logging
import threading
import time

from jobs.contract import PROGRESS_INTERVAL_SECONDS
from jobs.engine.api import Progress
from jobs.kube.status import CRStatus

log = logging.getLogger("snapmover.job")


class ProgressReporter:
    """Throttled progress: CR patch + one log line per interval, and on demand at the end."""

    def __init__(self, cr: CRStatus) -> None:
        self._cr = cr
        self._last = 0.0
        self._start = time.monotonic()
        self._lock = threading.Lock()
        self.latest: Progress | None = None
        self.stopped = False

    def __call__(self, p: Progress) -> None:
        with self._lock:
            self.latest = p
            now = time.monotonic()
            if self.stopped or now - self._last < PROGRESS_INTERVAL_SECONDS:
                return
            self._last = now
        self.emit(p)

    def emit(self, p: Progress) -> None:
        elapsed = max(time.monotonic() - self._start, 1e-6)
        rate = p.bytes_done / elapsed
        percent = 100.0 * p.bytes_done / p.total_bytes if p.total_bytes else 100.0
        eta = (p.total_bytes - p.bytes_done) / rate if rate > 0 and p.total_bytes else 0.0
        log.info(
            "progress %.1f%% %s/%s bytes, %d/%d files, %.1f MB/s, ETA %.0fs",
            percent,
            p.bytes_done,
            p.total_bytes,
            p.files_done,
            p.files_total,
            rate / 1e6,
            eta,
        )
        if time.monotonic() - self._start >= PROGRESS_INTERVAL_SECONDS:  # short runs: the final status says it all
            self._cr.patch_progress(p.total_bytes, p.bytes_done)
