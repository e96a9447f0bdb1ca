"""launcher.maintenance.plan: when a prune Job starts, which finished ones are reported and deleted."""

from __future__ import annotations

from typing import Any

from launcher.maintenance import plan, repositories
from launcher.phases import rfc3339

NOW = 1_800_000_000.0


def job(name: str, age: float, condition: str | None = None) -> dict[str, Any]:
    conditions = [{"type": condition, "status": "True"}] if condition else []
    return {"metadata": {"name": name, "creationTimestamp": rfc3339(NOW - age)}, "status": {"conditions": conditions}}


def test_no_job_yet_starts_one() -> None:
    assert plan([], now=NOW, interval=60, kept=2, reported=frozenset()).start


def test_a_running_job_blocks_a_new_one() -> None:
    assert not plan([job("a", 600)], now=NOW, interval=60, kept=2, reported=frozenset()).start


def test_the_newest_finished_job_younger_than_the_interval_blocks_a_new_one() -> None:
    jobs = [job("old", 600, "Complete"), job("new", 30, "Complete")]
    assert not plan(jobs, now=NOW, interval=60, kept=2, reported=frozenset()).start
    assert plan(jobs, now=NOW, interval=20, kept=2, reported=frozenset()).start


def test_results_are_reported_once_and_old_jobs_deleted_oldest_first() -> None:
    jobs = [job("c", 10, "Failed"), job("a", 300, "Complete"), job("b", 200, "Complete")]
    first = plan(jobs, now=NOW, interval=60, kept=1, reported=frozenset())
    assert (first.succeeded, first.failed, first.delete) == (("a", "b"), ("c",), ("a", "b"))
    again = plan(jobs, now=NOW, interval=60, kept=1, reported=frozenset({"a", "b", "c"}))
    assert again.succeeded == () and again.failed == ()


def test_repositories_are_those_of_our_completed_uploads() -> None:
    def du(phase: str, mover: str = "snapmover", ns: str = "app") -> dict[str, Any]:
        spec = {"datamover": mover, "backupStorageLocation": "default", "sourceNamespace": ns}
        return {"spec": spec, "status": {"phase": phase}}

    uploads = [du("Completed"), du("Completed"), du("Failed", ns="x"), du("Completed", mover="velero", ns="y")]
    assert repositories(uploads, "snapmover") == [("default", "app")]


def test_a_running_mover_of_the_repository_holds_the_prune_back() -> None:
    # prune takes the exclusive lock a mover waits only 60 s for: it starts once no mover runs
    assert not plan([], now=NOW, interval=60, kept=2, reported=frozenset(), movers=1).start
    assert plan([], now=NOW, interval=60, kept=2, reported=frozenset(), movers=0).start
