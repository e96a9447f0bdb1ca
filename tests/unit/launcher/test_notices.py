"""launcher.notices: the Events for phases the mover writes and for waits, once each."""

from __future__ import annotations

from typing import Any

import pytest

from jobs.contract import Phase
from launcher.notices import FRESH_SECONDS, Notice, Notices, mover_phase_event
from launcher.phases import rfc3339

NOW = 1_800_000_000.0


def cr(phase: str, kind: str = "DataUpload", since: float = 3, **status: Any) -> dict[str, Any]:
    stamp = "startTimestamp" if phase == Phase.IN_PROGRESS else "completionTimestamp"
    return {"kind": kind, "status": {"phase": phase, stamp: rfc3339(NOW - since), **status}}


@pytest.mark.parametrize(
    ("phase", "kind", "reason", "words"),
    [
        (Phase.IN_PROGRESS, "DataUpload", "MoverStarted", "started the backup on node n1"),
        (Phase.COMPLETED, "DataUpload", "Completed", "snapshot s1 (7 bytes new)"),
        (Phase.COMPLETED, "DataDownload", "Completed", "restore completed: 9 bytes"),
        (Phase.FAILED, "DataDownload", "MoverFailed", "restore failed: disk full"),
        (Phase.CANCELED, "DataUpload", "Canceled", "backup canceled"),
    ],
)
def test_each_phase_the_mover_writes_has_its_event(phase: str, kind: str, reason: str, words: str) -> None:
    status = {"node": "n1", "snapshotID": "s1", "incrementalBytes": 7, "message": "disk full"}
    if kind == "DataDownload":
        status = {"message": "disk full", "progress": {"totalBytes": 9}}
    notice = mover_phase_event(cr(phase, kind, **status), NOW)
    assert notice is not None and notice.reason == reason and words in notice.message, notice
    assert notice.type == ("Warning" if phase == Phase.FAILED else "Normal")


def test_launcher_phases_and_old_phases_get_none() -> None:
    assert mover_phase_event(cr(Phase.ACCEPTED), NOW) is None  # the launcher writes (and tells) these
    assert mover_phase_event(cr(Phase.COMPLETED, since=FRESH_SECONDS + 1), NOW) is None  # seen after a restart
    assert mover_phase_event({"kind": "DataUpload", "status": {"phase": Phase.FAILED}}, NOW) is None


def test_notices_are_told_once_per_cr_and_what_and_memory_is_bounded() -> None:
    seen = Notices(remembered=2)
    assert seen.first("u1", "waiting for x") and not seen.first("u1", "waiting for x")
    assert seen.first("u1", "waiting for y") and seen.first("u2", "waiting for x")
    assert seen.first("u1", "waiting for x")  # the oldest was forgotten past the bound
    assert Notice("Normal", "Waiting", "m") == Notice("Normal", "Waiting", "m")
