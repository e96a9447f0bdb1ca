"""Events about what the launcher observes rather than does: the phases the mover writes, and waits.

The mover writes InProgress, Canceling and its terminal phases to the CR itself, so no launcher
phase change posts their Event; ``launcher.controller`` asks :func:`mover_phase_event` for every
CR it reconciles and posts the answer once per CR and phase (:class:`Notices` remembers, bounded;
a phase the launcher wrote itself is marked when it writes it). A CR waiting in prepare gets one
Event per reason (``Requeue.announce``), not one per requeue. After a launcher restart only
phases reached within ``FRESH_SECONDS`` are announced, so old CRs do not flood the Events.
Pure apart from the memory; tested in ``tests/unit/launcher/test_notices.py``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from jobs.contract import DATAUPLOAD_KIND, Phase
from launcher.phases import age, phase_of

REMEMBERED: Final = 10_000  # (CR uid, what) pairs announced (bounded: CRs come and go)
FRESH_SECONDS: Final = 120.0  # a mover phase older than this when first seen is not announced
MOVER_PHASES: Final = (Phase.IN_PROGRESS, Phase.CANCELING, Phase.COMPLETED, Phase.FAILED, Phase.CANCELED)


@dataclass(frozen=True)
class Notice:
    """One Event to post on the CR."""

    type: str
    reason: str
    message: str


def mover_phase_event(cr: Mapping[str, Any], now: float) -> Notice | None:
    """The Event for the mover-written phase the CR is in (None: another phase, or an old one)."""
    status = cr.get("status") or {}
    phase = phase_of(cr)
    if phase not in MOVER_PHASES:
        return None
    since = status.get("startTimestamp") if phase == Phase.IN_PROGRESS else status.get("completionTimestamp")
    if phase != Phase.CANCELING and (not since or age(since, now) > FRESH_SECONDS):
        return None
    what = "backup" if cr.get("kind") == DATAUPLOAD_KIND else "restore"
    progress = status.get("progress") or {}
    if phase == Phase.IN_PROGRESS:
        return Notice("Normal", "MoverStarted", f"the mover started the {what} on node {status.get('node') or '?'}")
    if phase == Phase.COMPLETED:
        done = f"{what} completed: {progress.get('totalBytes', 0)} bytes"
        if status.get("snapshotID"):
            done += f", snapshot {status['snapshotID']} ({status.get('incrementalBytes', 0)} bytes new)"
        return Notice("Normal", "Completed", done)
    if phase == Phase.FAILED:
        return Notice("Warning", "MoverFailed", f"{what} failed: {status.get('message') or 'no message'}")
    verb = "canceling" if phase == Phase.CANCELING else "canceled"
    return Notice("Normal", "Canceled" if phase == Phase.CANCELED else "Canceling", f"{what} {verb}")


class Notices:
    """Which (CR uid, what) pairs were announced already; the oldest are forgotten past REMEMBERED."""

    def __init__(self, remembered: int = REMEMBERED) -> None:
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._remembered = remembered

    def first(self, uid: str, what: str) -> bool:
        """True the first time ``what`` is announced for the CR ``uid`` (and remembers it)."""
        key = (uid, what)
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > self._remembered:
            self._seen.popitem(last=False)
        return True
