"""Maintenance scheduling: one prune Job per repository in use, every ``maintenanceInterval``.

A repository is a (storage location, source namespace) pair with at least one Completed
DataUpload of ours. :func:`plan` is the pure decision over that repository's maintenance Jobs
(report finished ones once, delete all but the newest ``maintenanceJobsKept`` finished, start a
new one when none runs, no mover Job uses the repository and the newest is older than the
interval); :class:`Maintainer` observes and acts on it.

Prune holds the repository's exclusive lock, and a mover waits only 60 s for its shared one, so
prune and movers never overlap (issue #16 item 2): a prune starts only while no mover Job of its
repository runs, and while one runs (:meth:`Maintainer.running_prune`) the controller starts no
mover Job for that repository; ``Maintainer.gate`` makes the two checks and creations atomic.

Started by ``launcher.controller``'s maintenance thread (leader only); tested in
``tests/unit/launcher/test_maintenance.py``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client

from jobs.contract import Phase
from launcher import api, metrics
from launcher.config import LauncherConfig, StorageLocation
from launcher.informer import Informer
from launcher.jobspec import MAINTENANCE_LABEL, build_maintenance_job, maintenance_key
from launcher.phases import age, true_conditions

log = logging.getLogger("snapmover.launcher")

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class Plan:
    """What to do about one repository's maintenance now."""

    succeeded: tuple[str, ...] = ()  # finished Jobs to count, not counted before
    failed: tuple[str, ...] = ()
    delete: tuple[str, ...] = ()  # finished Jobs beyond the kept ones, oldest first
    start: bool = False


def repositories(uploads: Sequence[Obj], datamover: str) -> list[tuple[str, str]]:
    """(storage location, source namespace) of every repository a Completed DataUpload of ours wrote."""
    found = {
        (
            str((d.get("spec") or {}).get("backupStorageLocation", "")),
            str((d.get("spec") or {}).get("sourceNamespace", "")),
        )
        for d in uploads
        if (d.get("spec") or {}).get("datamover") == datamover
        and (d.get("status") or {}).get("phase") == Phase.COMPLETED
    }
    return sorted(found)


def plan(
    jobs: Sequence[Obj], *, now: float, interval: float, kept: int, reported: frozenset[str], movers: int = 0
) -> Plan:
    """The decision for one repository's maintenance Jobs (``creationTimestamp`` order need not hold);
    ``movers`` mover Jobs of the repository are running (a prune then waits for them to end)."""
    ordered = sorted(jobs, key=lambda j: age(j["metadata"].get("creationTimestamp"), now), reverse=True)
    finished = [j for j in ordered if true_conditions(j).keys() & {"Complete", "Failed"}]
    succeeded: list[str] = []
    failed: list[str] = []
    for job in finished:
        name = job["metadata"]["name"]
        if name in reported:
            continue
        (failed if "Failed" in true_conditions(job) else succeeded).append(name)
    delete = tuple(j["metadata"]["name"] for j in finished[: max(0, len(finished) - kept)])
    running = len(ordered) > len(finished)
    newest = ordered[-1]["metadata"].get("creationTimestamp") if ordered else None
    start = not running and not movers and (newest is None or age(newest, now) >= interval)
    return Plan(tuple(succeeded), tuple(failed), delete, start)


@dataclass
class Maintainer:
    """Observes the maintenance Jobs of every repository in use and carries out their plans."""

    batch: client.BatchV1Api
    jobs: Informer
    config: LauncherConfig
    location_of: Callable[[str], StorageLocation]  # LocationError when it cannot be used
    job_event: Callable[[Obj, str, str, str], None]
    to_dict: Callable[[Any], dict[str, Any]]
    movers_of: Callable[[str, str], int] = lambda bsl, source_ns: 0  # running mover Jobs of a repository
    gate: threading.Lock = field(default_factory=threading.Lock)  # held to start a prune or a mover Job

    def __post_init__(self) -> None:
        self.reported: set[str] = set()  # maintenance Jobs whose result is already counted

    def maintain(self, uploads: Sequence[Obj]) -> None:
        """One pass over the repositories the given DataUploads use."""
        for bsl, source_ns in repositories(uploads, self.config.datamover_name):
            try:
                location = self.location_of(bsl)
            except Exception as e:  # noqa: BLE001 - one unusable location must not stop the others
                log.warning("maintenance of %s/%s skipped: %s", bsl, source_ns, e)
                continue
            self.maintain_one(location, bsl, source_ns)

    def running_prune(self, bsl: str, source_ns: str) -> str:
        """The prune Job running on the repository (storage location, source namespace), '' when none."""
        try:
            key = maintenance_key(self.location_of(bsl).name, source_ns)
        except Exception:  # noqa: BLE001 - an unusable location has no prune; the mover Job reports it
            return ""
        for job in self.jobs.items({MAINTENANCE_LABEL: key}):
            obj = self.to_dict(job)
            if not true_conditions(obj).keys() & {"Complete", "Failed"}:
                return str(obj["metadata"]["name"])
        return ""

    def maintain_one(self, location: StorageLocation, bsl: str, source_ns: str) -> None:
        with self.gate:
            self._maintain_one(location, bsl, source_ns)

    def _maintain_one(self, location: StorageLocation, bsl: str, source_ns: str) -> None:
        key = maintenance_key(location.name, source_ns)
        jobs = [self.to_dict(j) for j in self.jobs.items({MAINTENANCE_LABEL: key})]
        by_name = {j["metadata"]["name"]: j for j in jobs}
        todo = plan(
            jobs,
            now=time.time(),
            interval=self.config.maintenance_interval_seconds,
            kept=self.config.maintenance_jobs_kept,
            reported=frozenset(self.reported),
            movers=self.movers_of(bsl, source_ns),
        )
        for name in todo.succeeded:
            self.reported.add(name)
            metrics.MAINTENANCE.labels("succeeded").inc()
        for name in todo.failed:
            self.reported.add(name)
            metrics.MAINTENANCE.labels("failed").inc()
            message = f"prune of {bsl}/{source_ns} failed; see kubectl logs job/{name}"
            self.job_event(by_name[name], "Warning", "MaintenanceFailed", message)
        ns = self.config.namespace
        for name in todo.delete:
            api.delete_if_present(
                f"Job {ns}/{name}", self.batch.delete_namespaced_job, name, ns, propagation_policy="Background"
            )
            self.jobs.forget(name, ns)
        if todo.start:
            body = build_maintenance_job(
                self.config, location=location, source_namespace=source_ns, suffix=f"{int(time.time()):x}"
            )
            created = api.create_if_absent(
                f"Job {ns}/{body['metadata']['name']}", self.batch.create_namespaced_job, ns, body
            )
            if created is not None:
                self.jobs.put(created)
                self.job_event(
                    self.to_dict(created), "Normal", "MaintenanceStarted", f"pruning repository {bsl}/{source_ns}"
                )
