"""The launcher's control loop: DataUpload/DataDownload → exposed volume → mover Job → cleanup.

Level-based: watches only enqueue keys; ``reconcile`` re-reads the CR and everything it owns
(from the watch-fed caches of ``launcher.informer``, so a waiting CR costs no API requests)
and takes the next step, so the same event twice is harmless and a restarted launcher adopts
running Jobs (it never recreates or cancels them). Only CRs whose ``spec.datamover`` is the
configured name are touched. Every phase change is resourceVersion-checked (409 → re-read).
Steps per phase are in DESIGN §3; this module is the only one that talks to the API server.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import queue
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from jobs.contract import (
    API_GROUP,
    API_VERSION,
    DATADOWNLOAD_KIND,
    DATADOWNLOAD_PLURAL,
    DATAUPLOAD_KIND,
    DATAUPLOAD_PLURAL,
    FINALIZER,
    LABEL_APP,
    LABEL_APP_VALUE,
    LABEL_OWNER_KIND,
    LABEL_OWNER_UID,
    LABEL_ROLE,
    TERMINAL_PHASES,
    VOLUME_MODE_FILESYSTEM,
    Phase,
    decode_termination_message,
)
from launcher import logfmt, metrics
from launcher.config import ConfigurationError, LauncherConfig, StorageLocation, decode_ca_cert, parse_duration
from launcher.informer import Informer, Recent, meta_of
from launcher.jobspec import (
    FORGET_RETRIES,
    MAINTENANCE_LABEL,
    PASSWORD_KEY,
    PASSWORD_SECRET,
    build_forget_job,
    build_job,
    build_maintenance_job,
    build_rbac,
    common_labels,
    forget_job_name,
    maintenance_key,
    object_name,
    owner_reference,
)

log = logging.getLogger("snapmover.launcher")

SNAP_GROUP, SNAP_VERSION = "snapshot.storage.k8s.io", "v1"
PLURALS = {DATAUPLOAD_KIND: DATAUPLOAD_PLURAL, DATADOWNLOAD_KIND: DATADOWNLOAD_PLURAL}
DYNAMIC_PV_RESTORE_LABEL = "velero.io/dynamic-pv-restore"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
ORIGINAL_RECLAIM = "snapmover.io/original-reclaim-policy"
DEFAULT_OPERATION_TIMEOUT_SECONDS = 600.0
POD_STATUS_GRACE_SECONDS = 15.0  # how long a finished Job waits for its pod's termination message
START_FAILURE_REASONS = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
}


class Wait(Exception):
    """Not ready yet: requeue after a short delay (the message says what we wait for)."""


class Fail(Exception):
    """A permanent problem: the CR becomes Failed with this message."""


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def age_seconds(timestamp: str | None) -> float:
    if not timestamp:
        return 0.0
    then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return (datetime.now(UTC) - then).total_seconds()


def quantity(q: str | None) -> str:
    return q or "1Gi"


class Controller:
    """Watches, queues and reconciles; ``run`` blocks until ``stop`` is set."""

    def __init__(self, api: client.ApiClient, config: LauncherConfig, identity: str) -> None:
        self.config = config
        self.ns = config.namespace
        self.identity = identity
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.rbac = client.RbacAuthorizationV1Api(api)
        self.storage_api = client.StorageV1Api(api)
        self.queue: queue.Queue[tuple[str, str]] = queue.Queue()
        self.queued: set[tuple[str, str]] = set()
        self.queued_lock = threading.Lock()
        self.stop = threading.Event()
        self.is_leader = threading.Event()
        self.timers: dict[tuple[str, str], float] = {}
        self.reported: set[str] = set()  # maintenance Jobs whose result is already counted
        self.rbac_ready: set[str] = set()  # CR uids whose mover ServiceAccount/Role/RoleBinding exist
        self.recent = Recent(ttl=15.0)  # reads without a watch: Secrets, storage locations, nodes
        owned: dict[str, Any] = {"label_selector": f"{LABEL_APP}={LABEL_APP_VALUE}", "on_change": self._owned_changed}
        self.crs = {
            kind: Informer(
                plural,
                self.custom.list_namespaced_custom_object,
                API_GROUP,
                API_VERSION,
                self.ns,
                plural,
                on_change=self._cr_changed(kind),
            )
            for kind, plural in PLURALS.items()
        }
        self.jobs = Informer("jobs", self.batch.list_namespaced_job, self.ns, **owned)
        self.pods = Informer("pods", self.core.list_namespaced_pod, self.ns, **owned)
        self.claims = Informer(
            "persistentvolumeclaims", self.core.list_namespaced_persistent_volume_claim, self.ns, **owned
        )
        self.snapshots = Informer(
            "volumesnapshots",
            self.custom.list_namespaced_custom_object,
            SNAP_GROUP,
            SNAP_VERSION,
            self.ns,
            "volumesnapshots",
            **owned,
        )
        self.informers = [*self.crs.values(), self.jobs, self.pods, self.claims, self.snapshots]

    # --- queue ----------------------------------------------------------------------------------

    def enqueue(self, kind: str, name: str, delay: float = 0.0) -> None:
        key = (kind, name)
        if delay > 0:
            with self.queued_lock:
                due = time.monotonic() + delay
                if key not in self.timers or self.timers[key] > due:
                    self.timers[key] = due
            return
        with self.queued_lock:
            if key in self.queued:
                return
            self.queued.add(key)
        self.queue.put(key)
        metrics.QUEUE_DEPTH.set(self.queue.qsize())

    def _timer_loop(self) -> None:
        while not self.stop.wait(0.5):
            now = time.monotonic()
            with self.queued_lock:
                due = [k for k, t in self.timers.items() if t <= now]
                for k in due:
                    del self.timers[k]
            for kind, name in due:
                self.enqueue(kind, name)

    def _worker(self) -> None:
        while not self.stop.is_set():
            try:
                key = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            with self.queued_lock:
                self.queued.discard(key)
            metrics.QUEUE_DEPTH.set(self.queue.qsize())
            if not self.is_leader.is_set():
                continue
            try:
                logfmt.reconciling(self.reconcile, self.ns, *key)
            except Exception as e:  # noqa: BLE001 - the launcher must keep serving other CRs
                metrics.API_ERRORS.inc()
                log.warning("reconcile %s/%s failed, retrying: %s", key[0], key[1], e)
                self.enqueue(*key, delay=2.0)

    # --- watches ------------------------------------------------------------------------------

    def owns(self, uid: str) -> bool:
        """Whether a Job, PVC or VolumeSnapshot we made for the CR with ``uid`` still exists (cache)."""
        return any(informer.items({LABEL_OWNER_UID: uid}) for informer in (self.jobs, self.claims, self.snapshots))

    def _cr_changed(self, kind: str) -> Callable[[Any], None]:
        return lambda obj: self.enqueue(kind, obj["metadata"]["name"])

    def _owned_changed(self, obj: Any) -> None:
        """A Job/pod/PVC/VolumeSnapshot of ours changed: reconcile the CR that owns it."""
        labels = meta_of(obj)[3]
        kind, uid = labels.get(LABEL_OWNER_KIND), labels.get(LABEL_OWNER_UID)
        if kind not in self.crs or not uid:
            return
        for cr in self.crs[kind].items():
            if cr["metadata"].get("uid") == uid:
                self.enqueue(kind, cr["metadata"]["name"])

    def _resync(self) -> None:
        while not self.stop.wait(self.config.resync_seconds):
            for kind in PLURALS:
                items = self.crs[kind].items()
                phases: dict[str, int] = {}
                for obj in items:
                    phase = (obj.get("status") or {}).get("phase") or Phase.NEW
                    if (obj.get("spec") or {}).get("datamover") == self.config.datamover_name:
                        phases[phase] = phases.get(phase, 0) + 1
                    meta = obj["metadata"]
                    held = FINALIZER in (meta.get("finalizers") or []) and not holds_snapshot(obj)
                    if phase not in TERMINAL_PHASES or held or meta.get("deletionTimestamp") or self.owns(meta["uid"]):
                        self.enqueue(kind, meta["name"])
                metrics.set_phase_counts(kind, phases)

    def _maintenance_loop(self) -> None:
        period = min(60.0, max(1.0, self.config.maintenance_interval_seconds / 4))
        while not self.stop.wait(period):
            if not self.is_leader.is_set() or self.config.maintenance_interval_seconds <= 0:
                continue
            try:
                self.maintain()
            except Exception as e:  # noqa: BLE001 - retried at the next period
                metrics.API_ERRORS.inc()
                log.warning("maintenance scheduling failed: %s", e)

    def maintain(self) -> None:
        """Start a prune Job per repository in use when its last one is older than the interval."""
        dus = self.crs[DATAUPLOAD_KIND].items()
        repos = {
            (
                str((d.get("spec") or {}).get("backupStorageLocation", "")),
                str((d.get("spec") or {}).get("sourceNamespace", "")),
            )
            for d in dus
            if (d.get("spec") or {}).get("datamover") == self.config.datamover_name
            and (d.get("status") or {}).get("phase") == Phase.COMPLETED
        }
        for bsl, source_ns in sorted(repos):
            try:
                location = self.storage_location({"spec": {"backupStorageLocation": bsl}})
            except Fail as f:
                log.warning("maintenance of %s/%s skipped: %s", bsl, source_ns, f)
                continue
            key = maintenance_key(location.name, source_ns)
            jobs = sorted(
                self.jobs.items({MAINTENANCE_LABEL: key}),
                key=lambda j: j.metadata.creation_timestamp,
            )
            finished = [
                j
                for j in jobs
                if any(c.status == "True" and c.type in ("Complete", "Failed") for c in (j.status.conditions or []))
            ]
            for job in finished:
                if (
                    any(c.type == "Failed" and c.status == "True" for c in job.status.conditions or [])
                    and job.metadata.name not in self.reported
                ):
                    self.reported.add(job.metadata.name)
                    metrics.MAINTENANCE.labels("failed").inc()
                    self.job_event(
                        job,
                        "Warning",
                        "MaintenanceFailed",
                        f"prune of {bsl}/{source_ns} failed; see kubectl logs job/{job.metadata.name}",
                    )
                elif job.metadata.name not in self.reported:
                    self.reported.add(job.metadata.name)
                    metrics.MAINTENANCE.labels("succeeded").inc()
            for job in finished[: max(0, len(finished) - self.config.maintenance_jobs_kept)]:
                with contextlib.suppress(ApiException):
                    self.batch.delete_namespaced_job(job.metadata.name, self.ns, propagation_policy="Background")
                    self.jobs.forget(job.metadata.name, self.ns)
            if len(jobs) > len(finished):
                continue  # one is running
            newest = jobs[-1].metadata.creation_timestamp.strftime("%Y-%m-%dT%H:%M:%SZ") if jobs else None
            if newest and age_seconds(newest) < self.config.maintenance_interval_seconds:
                continue
            body = build_maintenance_job(
                self.config, location=location, source_namespace=source_ns, suffix=f"{int(time.time()):x}"
            )
            with contextlib.suppress(ApiException):
                created = self.batch.create_namespaced_job(self.ns, body)
                self.jobs.put(created)
                self.job_event(created, "Normal", "MaintenanceStarted", f"pruning repository {bsl}/{source_ns}")

    def job_event(self, job: Any, kind: str, reason: str, message: str) -> None:
        """An Event on one of our Jobs (maintenance results)."""
        self.post_event(
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": job.metadata.name,
                "namespace": self.ns,
                "uid": job.metadata.uid,
            },
            kind,
            reason,
            message,
        )

    def run(self) -> None:
        self.ensure_password_secret()
        for informer in self.informers:
            threading.Thread(target=informer.run, args=(self.stop,), name=f"watch-{informer.name}", daemon=True).start()
        for informer in self.informers:  # reconciling from a half-filled cache would misjudge
            while not informer.synced.wait(1.0):
                if self.stop.is_set():
                    return
        threads = [
            threading.Thread(target=self._worker, name="worker", daemon=True),
            threading.Thread(target=self._timer_loop, name="timers", daemon=True),
            threading.Thread(target=self._resync, name="resync", daemon=True),
            threading.Thread(target=self._maintenance_loop, name="maintenance", daemon=True),
        ]
        for t in threads:
            t.start()
        self.stop.wait()

    # --- setup --------------------------------------------------------------------------------

    def ensure_password_secret(self) -> None:
        """Create the repository password Secret with a random password when it does not exist."""
        try:
            self.core.read_namespaced_secret(PASSWORD_SECRET, self.ns)
            return
        except ApiException as e:
            if e.status != 404:
                raise
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": PASSWORD_SECRET, "namespace": self.ns},
            "type": "Opaque",
            "stringData": {PASSWORD_KEY: secrets.token_urlsafe(32)},
        }
        try:
            self.core.create_namespaced_secret(self.ns, body)
            log.warning(
                "created Secret %s/%s with a random repository password: back it up — without it the "
                "backups cannot be restored",
                self.ns,
                PASSWORD_SECRET,
            )
        except ApiException as e:
            if e.status != 409:
                raise

    # --- CR helpers ---------------------------------------------------------------------------

    def get_cr(self, kind: str, name: str) -> dict[str, Any] | None:
        """The CR from the watch cache (a copy: reconcile edits it before writing it back)."""
        cached = self.crs[kind].get(name, self.ns)
        return copy.deepcopy(cached) if cached is not None else None

    def replace_cr(self, cr: dict[str, Any]) -> dict[str, Any] | None:
        """rv-guarded replace; None on conflict (the caller re-reads via requeue)."""
        try:
            obj: dict[str, Any] = self.custom.replace_namespaced_custom_object(
                API_GROUP, API_VERSION, self.ns, PLURALS[cr["kind"]], cr["metadata"]["name"], cr
            )
            self.crs[cr["kind"]].put(obj)
            return copy.deepcopy(obj)
        except ApiException as e:
            if e.status in (409, 404):
                self.enqueue(cr["kind"], cr["metadata"]["name"], delay=0.2)
                return None
            raise

    def set_phase(
        self, cr: dict[str, Any], phase: str, reason: str, message: str = "", *, note: str = "", **fields: Any
    ) -> dict[str, Any] | None:
        """rv-guarded phase change + its Event (``message`` goes into the status, ``note`` only
        into the Event); None when the CR is terminal already or changed meanwhile."""
        status = dict(cr.get("status") or {})
        old = status.get("phase") or Phase.NEW
        if old in TERMINAL_PHASES:
            return None
        status.update(fields)
        status["phase"] = phase
        if message or phase in (Phase.FAILED, Phase.CANCELED):
            status["message"] = message
        if phase in TERMINAL_PHASES and not status.get("completionTimestamp"):
            status["completionTimestamp"] = now_rfc3339()
        cr = {**cr, "status": status}
        updated = self.replace_cr(cr)
        if updated is not None:
            metrics.TRANSITIONS.labels(cr["kind"], phase).inc()
            if old != phase:
                # time in the phase left: since the mover started, else since the CR was accepted
                since = status.get("startTimestamp") if old == Phase.IN_PROGRESS else status.get("acceptedTimestamp")
                metrics.observe_phase(cr["kind"], old, age_seconds(since))
            self.event(
                cr,
                "Warning" if phase == Phase.FAILED else "Normal",
                reason,
                message or f"{old} -> {phase}" + (f": {note}" if note else ""),
            )
            log.info("%s %s: %s -> %s %s", cr["kind"], cr["metadata"]["name"], old, phase, message)
        return updated

    def event(self, cr: dict[str, Any], kind: str, reason: str, message: str) -> None:
        """An Event on a CR (`kubectl describe` tells its story)."""
        self.post_event(
            {
                "apiVersion": f"{API_GROUP}/{API_VERSION}",
                "kind": cr["kind"],
                "name": cr["metadata"]["name"],
                "namespace": self.ns,
                "uid": cr["metadata"]["uid"],
            },
            kind,
            reason,
            message,
        )

    def post_event(self, involved: dict[str, str], kind: str, reason: str, message: str) -> None:
        """Create one core/v1 Event about ``involved``; a failure is counted, never raised."""
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{involved['name'][:200]}.", "namespace": self.ns},
            "involvedObject": involved,
            "reason": reason,
            "message": message[:1000],
            "type": kind,
            "source": {"component": "snapmover-launcher"},
            "firstTimestamp": now_rfc3339(),
            "lastTimestamp": now_rfc3339(),
            "count": 1,
        }
        try:
            self.core.create_namespaced_event(self.ns, body)
        except ApiException:
            metrics.API_ERRORS.inc()

    # --- reconcile ----------------------------------------------------------------------------

    def reconcile(self, kind: str, name: str) -> None:
        cr = self.get_cr(kind, name)
        if cr is None:
            return
        spec = cr.get("spec") or {}
        if spec.get("datamover") != self.config.datamover_name:
            return  # another mover's CR: never touched
        status = cr.get("status") or {}
        phase = status.get("phase") or Phase.NEW
        finalizers = cr["metadata"].get("finalizers") or []
        if cr["metadata"].get("deletionTimestamp"):
            if FINALIZER in finalizers and self.forget_on_delete(cr):
                return
            self.cleanup(cr, keep_job=False)
            if FINALIZER in finalizers:
                self.remove_finalizer(cr)
            return
        if phase in TERMINAL_PHASES:
            self.finish(cr)
            return
        try:
            if spec.get("cancel") is True and self.cancel_directly(cr, phase):
                return
            if phase == Phase.NEW:
                self.accept(cr)
            elif phase == Phase.ACCEPTED:
                self.prepare(cr)
            else:
                self.supervise(cr)
        except Wait as w:
            self.check_prepare_timeout(cr, str(w))
            self.enqueue(kind, name, delay=1.0)
        except Fail as f:
            self.set_phase(cr, Phase.FAILED, "Failed", str(f))

    def check_prepare_timeout(self, cr: dict[str, Any], waiting_for: str) -> None:
        status = cr.get("status") or {}
        if (status.get("phase") or Phase.NEW) not in (Phase.NEW, Phase.ACCEPTED):
            return  # prepared already: only operationTimeout and the Job's deadline apply now
        accepted = status.get("acceptedTimestamp")
        if accepted and age_seconds(accepted) > self.config.prepare_timeout_seconds:
            self.set_phase(
                cr,
                Phase.FAILED,
                "PrepareTimeout",
                f"timed out after {self.config.prepare_timeout_seconds:.0f}s preparing: {waiting_for}",
            )

    def operation_timeout(self, cr: dict[str, Any]) -> float:
        value = (cr.get("spec") or {}).get("operationTimeout")
        if not value:
            return DEFAULT_OPERATION_TIMEOUT_SECONDS
        try:
            return parse_duration(str(value), "spec.operationTimeout")
        except ConfigurationError as e:
            raise Fail(f"{e}") from e

    def waited_too_long(self, cr: dict[str, Any]) -> bool:
        return age_seconds((cr.get("status") or {}).get("acceptedTimestamp")) > self.operation_timeout(cr)

    # New -> Accepted --------------------------------------------------------------------------

    def active_jobs(self) -> list[Any]:
        jobs = self.jobs.items()
        return [
            j
            for j in jobs
            if not any(c.type in ("Complete", "Failed") and c.status == "True" for c in (j.status.conditions or []))
        ]

    def no_free_slot(self) -> str:
        """Why no new mover Job may start now ('' when one may): global and per-node limits."""
        active = [j for j in self.active_jobs() if LABEL_ROLE in (j.metadata.labels or {})]
        if len(active) >= self.config.max_concurrent_jobs:
            return f"{len(active)} mover Jobs running, global limit {self.config.max_concurrent_jobs}"
        pods = [p for p in self.pods.items() if LABEL_ROLE in (p.metadata.labels or {})]
        placed = Counter(
            p.spec.node_name for p in pods if p.spec.node_name and p.status.phase in ("Pending", "Running")
        )
        unplaced = len(active) - sum(placed.values())  # Jobs whose pod is not scheduled yet
        nodes: list[str] = self.recent.get(("nodes",), self.ready_nodes)
        room = sum(max(0, self.config.max_jobs_per_node - placed[n]) for n in nodes) - max(0, unplaced)
        if nodes and room <= 0:
            return f"every node runs {self.config.max_jobs_per_node} mover(s), the per-node limit"
        return ""

    def ready_nodes(self) -> list[str]:
        return [
            n.metadata.name
            for n in self.core.list_node().items
            if any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or []))
        ]

    def accept(self, cr: dict[str, Any]) -> None:
        validate_spec(cr)
        preparing = sum(
            (obj.get("status") or {}).get("phase") == Phase.ACCEPTED
            for informer in self.crs.values()
            for obj in informer.items()
        )
        if preparing >= self.config.prepare_queue_length:
            self.enqueue(cr["kind"], cr["metadata"]["name"], delay=2.0)
            return
        meta = cr["metadata"]
        meta["finalizers"] = sorted(set(meta.get("finalizers") or []) | {FINALIZER})
        self.set_phase(
            cr, Phase.ACCEPTED, "Accepted", "", acceptedByNode=self.identity, acceptedTimestamp=now_rfc3339()
        )

    # Accepted: expose + Job -------------------------------------------------------------------

    def prepare(self, cr: dict[str, Any]) -> None:
        location = self.storage_location(cr)
        self.require_password_secret()
        if cr["kind"] == DATAUPLOAD_KIND:
            claim, mode, source_ns, source_pvc = self.expose_backup(cr)
        else:
            claim, mode = self.expose_restore(cr)
            source_ns, source_pvc = str(cr["spec"].get("sourceNamespace", "")), ""
        job = self.read_job(cr)
        if job is None:
            busy = self.no_free_slot()
            if busy:
                raise Wait(f"a free mover slot ({busy})")
            self.ensure_rbac(cr, claim)
            body = build_job(
                cr,
                self.config,
                claim=claim,
                volume_mode=mode,
                location=location,
                source_namespace=source_ns,
                source_pvc=source_pvc,
            )
            with contextlib.suppress(ApiException):
                self.jobs.put(self.batch.create_namespaced_job(self.ns, body))
        self.supervise(cr)

    def require_password_secret(self) -> None:
        """Fail clearly when the repository password Secret is gone (never silently re-created)."""
        try:
            secret = self.recent.get(
                ("secret", PASSWORD_SECRET), lambda: self.core.read_namespaced_secret(PASSWORD_SECRET, self.ns)
            )
        except ApiException as e:
            if e.status == 404:
                raise Fail(
                    f"the repository password Secret {self.ns}/{PASSWORD_SECRET} is missing: restore it from your "
                    "backup of it (a new password cannot open the existing repositories)"
                ) from e
            raise
        if PASSWORD_KEY not in (secret.data or {}):
            raise Fail(f"Secret {self.ns}/{PASSWORD_SECRET} has no key {PASSWORD_KEY!r}")

    def storage_location(self, cr: dict[str, Any]) -> StorageLocation:
        name = str(cr["spec"].get("backupStorageLocation") or "")
        if name in self.config.storage_locations:
            loc = self.config.storage_locations[name]
        else:
            try:
                bsl = self.recent.get(
                    ("bsl", name),
                    lambda: self.custom.get_namespaced_custom_object(
                        "velero.io", "v1", self.ns, "backupstoragelocations", name
                    ),
                )
            except ApiException as e:
                if e.status == 404:
                    raise Fail(
                        f"storage location {name!r} not found: no BackupStorageLocation {self.ns}/{name} "
                        "and no storageLocations entry in the launcher ConfigMap"
                    ) from e
                raise
            loc = location_from_bsl(bsl)
        if loc.provider == "aws" and loc.credential_secret:
            try:
                secret = self.recent.get(
                    ("secret", loc.credential_secret),
                    lambda: self.core.read_namespaced_secret(loc.credential_secret, self.ns),
                )
            except ApiException as e:
                if e.status == 404:
                    raise Fail(
                        f"credentials Secret {self.ns}/{loc.credential_secret} of storage location {name} "
                        "does not exist"
                    ) from e
                raise
            if loc.credential_key not in (secret.data or {}):
                raise Fail(f"credentials Secret {self.ns}/{loc.credential_secret} has no key {loc.credential_key!r}")
        if loc.provider == "filesystem":
            self.recent.get(
                ("pvc", loc.pvc),
                lambda: self.require_pvc(self.ns, loc.pvc, f"repository PVC of storage location {name}"),
            )
        return loc

    def require_pvc(self, namespace: str, name: str, what: str) -> Any:
        try:
            return self.core.read_namespaced_persistent_volume_claim(name, namespace)
        except ApiException as e:
            if e.status == 404:
                raise Fail(f"{what} {namespace}/{name} does not exist") from e
            raise

    def expose_backup(self, cr: dict[str, Any]) -> tuple[str, str, str, str]:
        spec = cr["spec"]
        src_ns, src_pvc = spec["sourceNamespace"], spec["sourcePVC"]
        vs_name = (spec.get("csiSnapshot") or {}).get("volumeSnapshot", "")
        name = object_name(cr)
        exposed = self.claims.get(name, self.ns)
        if exposed is not None and (exposed.metadata.labels or {}).get(LABEL_OWNER_UID) == cr["metadata"]["uid"]:
            return name, exposed.spec.volume_mode or VOLUME_MODE_FILESYSTEM, src_ns, src_pvc
        try:
            mode, size = self.recent.get(("source", cr["metadata"]["uid"]), lambda: self.source_volume(src_ns, src_pvc))
        except ApiException as e:
            if e.status != 404:
                raise
            mode, size = VOLUME_MODE_FILESYSTEM, None
            if self.waited_too_long(cr):
                raise Fail(f"source PVC {src_ns}/{src_pvc} does not exist") from e
        clone = self.snapshots.get(name, self.ns)
        if clone is None:
            original = self.get_vs(src_ns, vs_name)
            if original is None:
                if self.waited_too_long(cr):
                    raise Fail(
                        f"VolumeSnapshot {src_ns}/{vs_name} does not exist (waited {self.operation_timeout(cr):.0f}s)"
                    )
                raise Wait(f"VolumeSnapshot {src_ns}/{vs_name} to exist")
            st = original.get("status") or {}
            if not st.get("readyToUse") or not st.get("boundVolumeSnapshotContentName"):
                if self.waited_too_long(cr):
                    raise Fail(
                        f"VolumeSnapshot {src_ns}/{vs_name} did not become ReadyToUse within "
                        f"{self.operation_timeout(cr):.0f}s (status: {st or 'none'})"
                    )
                raise Wait(f"VolumeSnapshot {src_ns}/{vs_name} to become ReadyToUse")
            self.take_snapshot_ownership(cr, original, name)
            raise Wait("the cloned VolumeSnapshot to become ready")
        cst = clone.get("status") or {}
        if not cst.get("readyToUse"):
            raise Wait(f"cloned VolumeSnapshot {self.ns}/{name} to become ReadyToUse")
        overrides = self.config.backup_pvc_overrides.get(str((spec.get("csiSnapshot") or {}).get("storageClass")), {})
        storage_class = overrides.get("storageClass") or (spec.get("csiSnapshot") or {}).get("storageClass")
        access = ["ReadOnlyMany"] if overrides.get("readOnly") else ["ReadWriteOnce"]
        pvc: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": name,
                "namespace": self.ns,
                "labels": common_labels(cr),
                "ownerReferences": [owner_reference(cr)],
            },
            "spec": {
                "accessModes": access,
                "volumeMode": mode,
                "resources": {"requests": {"storage": quantity(cst.get("restoreSize") or size)}},
                "dataSource": {"apiGroup": SNAP_GROUP, "kind": "VolumeSnapshot", "name": name},
            },
        }
        if storage_class:
            pvc["spec"]["storageClassName"] = storage_class
        with contextlib.suppress(ApiException):
            self.claims.put(self.core.create_namespaced_persistent_volume_claim(self.ns, pvc))
        return name, mode, src_ns, src_pvc

    def source_volume(self, namespace: str, name: str) -> tuple[str, str | None]:
        """(volume mode, requested size) of a source PVC."""
        source = self.core.read_namespaced_persistent_volume_claim(name, namespace)
        return source.spec.volume_mode or VOLUME_MODE_FILESYSTEM, (source.spec.resources.requests or {}).get("storage")

    def get_vs(self, ns: str, name: str) -> dict[str, Any] | None:
        if not name:
            return None
        try:
            vs: dict[str, Any] = self.custom.get_namespaced_custom_object(
                SNAP_GROUP, SNAP_VERSION, ns, "volumesnapshots", name
            )
            return vs
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def take_snapshot_ownership(self, cr: dict[str, Any], original: dict[str, Any], name: str) -> None:
        """Clone VS+VSC into the launcher namespace, then release the originals (data retained)."""
        vsc_name = original["status"]["boundVolumeSnapshotContentName"]
        vsc = self.custom.get_cluster_custom_object(SNAP_GROUP, SNAP_VERSION, "volumesnapshotcontents", vsc_name)
        handle = (vsc.get("status") or {}).get("snapshotHandle")
        if not handle:
            raise Wait(f"VolumeSnapshotContent {vsc_name} to report its snapshotHandle")
        clone_vsc = f"{name}-{cr['metadata']['uid'][:8]}"
        body_vsc = {
            "apiVersion": f"{SNAP_GROUP}/{SNAP_VERSION}",
            "kind": "VolumeSnapshotContent",
            "metadata": {"name": clone_vsc, "labels": common_labels(cr)},
            "spec": {
                "deletionPolicy": "Delete",
                "driver": vsc["spec"].get("driver", ""),
                "volumeSnapshotClassName": vsc["spec"].get("volumeSnapshotClassName"),
                "source": {"snapshotHandle": handle},
                "volumeSnapshotRef": {
                    "apiVersion": f"{SNAP_GROUP}/{SNAP_VERSION}",
                    "kind": "VolumeSnapshot",
                    "name": name,
                    "namespace": self.ns,
                },
            },
        }
        with contextlib.suppress(ApiException):
            self.custom.create_cluster_custom_object(SNAP_GROUP, SNAP_VERSION, "volumesnapshotcontents", body_vsc)
        body_vs = {
            "apiVersion": f"{SNAP_GROUP}/{SNAP_VERSION}",
            "kind": "VolumeSnapshot",
            "metadata": {
                "name": name,
                "namespace": self.ns,
                "labels": common_labels(cr),
                "ownerReferences": [owner_reference(cr)],
            },
            "spec": {
                "source": {"volumeSnapshotContentName": clone_vsc},
                "volumeSnapshotClassName": vsc["spec"].get("volumeSnapshotClassName"),
            },
        }
        with contextlib.suppress(ApiException):
            self.snapshots.put(
                self.custom.create_namespaced_custom_object(
                    SNAP_GROUP, SNAP_VERSION, self.ns, "volumesnapshots", body_vs
                )
            )
        self.custom.patch_cluster_custom_object(
            SNAP_GROUP, SNAP_VERSION, "volumesnapshotcontents", vsc_name, {"spec": {"deletionPolicy": "Retain"}}
        )
        meta = original["metadata"]
        with contextlib.suppress(ApiException):
            self.custom.delete_namespaced_custom_object(
                SNAP_GROUP, SNAP_VERSION, meta["namespace"], "volumesnapshots", meta["name"]
            )
        with contextlib.suppress(ApiException):
            self.custom.delete_cluster_custom_object(SNAP_GROUP, SNAP_VERSION, "volumesnapshotcontents", vsc_name)
        log.info("took over VolumeSnapshot %s/%s as %s/%s", meta["namespace"], meta["name"], self.ns, name)

    def expose_restore(self, cr: dict[str, Any]) -> tuple[str, str]:
        target = cr["spec"].get("targetVolume") or {}
        tns, tname = target.get("namespace", ""), target.get("pvc", "")
        try:
            pvc = self.core.read_namespaced_persistent_volume_claim(tname, tns)
        except ApiException as e:
            if e.status != 404:
                raise
            if self.waited_too_long(cr):
                raise Fail(f"target PVC {tns}/{tname} does not exist (waited {self.operation_timeout(cr):.0f}s)") from e
            raise Wait(f"target PVC {tns}/{tname} to exist") from e
        if pvc.status.phase == "Bound":
            raise Fail(f"target PVC {tns}/{tname} is already bound to a volume; restore needs a new, pending PVC")
        sc_name = pvc.spec.storage_class_name
        if sc_name and not self.config.restore_ignore_delay_binding:
            with contextlib.suppress(ApiException):
                sc = self.storage_api.read_storage_class(sc_name)
                if sc.volume_binding_mode == "WaitForFirstConsumer" and not (pvc.metadata.annotations or {}).get(
                    SELECTED_NODE
                ):
                    raise Wait(f"target PVC {tns}/{tname} to get a selected node (WaitForFirstConsumer)")
        name = object_name(cr)
        mode = pvc.spec.volume_mode or VOLUME_MODE_FILESYSTEM
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": name,
                "namespace": self.ns,
                "labels": common_labels(cr),
                "ownerReferences": [owner_reference(cr)],
            },
            "spec": {
                "accessModes": pvc.spec.access_modes or ["ReadWriteOnce"],
                "volumeMode": mode,
                "resources": {"requests": {"storage": quantity((pvc.spec.resources.requests or {}).get("storage"))}},
            },
        }
        if sc_name:
            body["spec"]["storageClassName"] = sc_name
        with contextlib.suppress(ApiException):
            self.claims.put(self.core.create_namespaced_persistent_volume_claim(self.ns, body))
        return name, mode

    def ensure_rbac(self, cr: dict[str, Any], claim: str) -> None:
        """The mover's ServiceAccount, Role and RoleBinding, owned by the PVC it moves: deleting
        that PVC at cleanup lets the garbage collector remove them (no requests of ours)."""
        if cr["metadata"]["uid"] in self.rbac_ready:
            return
        pvc = self.claims.get(claim, self.ns)
        if pvc is None:
            raise Wait(f"PVC {self.ns}/{claim} to appear")
        owner = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "name": claim, "uid": pvc.metadata.uid}
        sa, role, binding = build_rbac(
            cr, self.ns, owner=owner, annotations=self.config.mover_service_account_annotations
        )
        for create, body in (
            (self.core.create_namespaced_service_account, sa),
            (self.rbac.create_namespaced_role, role),
            (self.rbac.create_namespaced_role_binding, binding),
        ):
            try:
                create(self.ns, body)
            except ApiException as e:
                if e.status != 409:
                    raise
        self.rbac_ready.add(cr["metadata"]["uid"])

    def read_job(self, cr: dict[str, Any]) -> Any | None:
        job = self.jobs.get(object_name(cr), self.ns)
        if job is None:
            return None
        uid = (job.metadata.labels or {}).get("snapmover.io/owner-uid")
        return job if uid == cr["metadata"]["uid"] else None

    def job_pods(self, cr: dict[str, Any]) -> list[Any]:
        return self.pods.items({LABEL_OWNER_UID: cr["metadata"]["uid"]})

    # Prepared / InProgress / Canceling: safety net -------------------------------------------

    def supervise(self, cr: dict[str, Any]) -> None:
        phase = (cr.get("status") or {}).get("phase") or Phase.NEW
        job = self.read_job(cr)
        if job is None:
            if phase in (Phase.IN_PROGRESS, Phase.CANCELING, Phase.PREPARED):
                raise Fail("the mover Job disappeared before the CR reached a final phase")
            raise Wait("the mover Job to be created")
        pods = self.job_pods(cr)
        pod = pods[0] if pods else None
        conditions = {c.type: c for c in (job.status.conditions or []) if c.status == "True"}
        finished = conditions.get("Complete") or conditions.get("Failed")
        if finished is not None and termination(pod) is None and pod is not None:
            # the Job's condition can reach the cache before its pod's final status: the
            # termination message carries the result, so give the pod watch a moment
            ended = finished.last_transition_time
            if ended is None or age_seconds(ended.strftime("%Y-%m-%dT%H:%M:%SZ")) < POD_STATUS_GRACE_SECONDS:
                self.enqueue(cr["kind"], cr["metadata"]["name"], delay=1.0)
                return
        if "Complete" in conditions:
            self.job_succeeded(cr, pod)
            return
        if "Failed" in conditions:
            self.job_failed(cr, pod, conditions["Failed"])
            return
        if pod is None:
            raise Wait("the mover pod to be created")
        problem = pod_start_problem(pod)
        if (
            problem
            and age_seconds(pod.metadata.creation_timestamp.strftime("%Y-%m-%dT%H:%M:%SZ"))
            > self.config.pod_start_timeout_seconds
        ):
            self.set_phase(
                cr, Phase.FAILED, "PodCannotStart", f"the mover pod {pod.metadata.name} cannot start: {problem}"
            )
            self.delete_job(cr)
            self.cleanup(cr, keep_job=True)
            return
        if phase == Phase.ACCEPTED and pod.status.phase == "Running":
            self.set_phase(
                cr,
                Phase.PREPARED,
                "Prepared",
                "",
                note=f"mover Job {job.metadata.name} runs on node {pod.spec.node_name}",
                node=pod.spec.node_name or "",
            )
        if problem:
            raise Wait(f"the mover pod to start ({problem})")
        self.enqueue(cr["kind"], cr["metadata"]["name"], delay=5.0)

    def job_succeeded(self, cr: dict[str, Any], pod: Any) -> None:
        term = termination(pod)
        if cr["kind"] == DATAUPLOAD_KIND:
            msg = decode_termination_message(term) if term else None
            if msg and msg.get("phase") == Phase.COMPLETED and msg.get("snapshotID"):
                self.set_phase(
                    cr,
                    Phase.COMPLETED,
                    "Completed",
                    "",
                    snapshotID=msg["snapshotID"],
                    incrementalBytes=msg.get("incrementalBytes", 0),
                )
            else:
                self.set_phase(cr, Phase.FAILED, "MoverExited", "the mover exited without completing the backup")
            return
        self.rebind_and_complete(cr, decode_termination_message(term) if term else None)

    def job_failed(self, cr: dict[str, Any], pod: Any, condition: Any) -> None:
        term = termination(pod)
        msg = decode_termination_message(term) if term else None
        if msg and msg.get("phase") == Phase.CANCELED:
            self.set_phase(cr, Phase.CANCELED, "Canceled", msg.get("message", "canceled"))
            return
        detail = (msg or {}).get("message") or (term or "").strip()[-1500:] or condition.message or condition.reason
        self.set_phase(cr, Phase.FAILED, "MoverFailed", f"mover Job failed: {detail}")

    def rebind_and_complete(self, cr: dict[str, Any], result: Any) -> None:
        target = cr["spec"]["targetVolume"]
        tns, tname = target["namespace"], target["pvc"]
        target_pvc = self.require_pvc(tns, tname, "target PVC")
        if target_pvc.status.phase == "Bound":
            pv_name = target_pvc.spec.volume_name
            pv = self.core.read_persistent_volume(pv_name)
            original = (pv.metadata.annotations or {}).get(ORIGINAL_RECLAIM)
            if original and pv.spec.persistent_volume_reclaim_policy != original:
                self.core.patch_persistent_volume(pv_name, {"spec": {"persistentVolumeReclaimPolicy": original}})
            total = int((result or {}).get("totalBytes", 0) or 0)
            if self.set_phase(cr, Phase.COMPLETED, "Completed", "", progress={"totalBytes": total, "bytesDone": total}):
                metrics.BYTES_MOVED.labels(cr["kind"]).inc(total)
            return
        restore_pvc_name = object_name(cr)
        pv_name = None
        with contextlib.suppress(ApiException):
            pv_name = self.core.read_namespaced_persistent_volume_claim(restore_pvc_name, self.ns).spec.volume_name
        if pv_name is None:
            pvs = self.core.list_persistent_volume(label_selector=f"snapmover.io/restored-for={cr['metadata']['uid']}")
            if not pvs.items:
                raise Fail("the restored volume is gone before it could be handed to the target PVC")
            pv_name = pvs.items[0].metadata.name
        pv = self.core.read_persistent_volume(pv_name)
        annotations = pv.metadata.annotations or {}
        if ORIGINAL_RECLAIM not in annotations:
            self.core.patch_persistent_volume(
                pv_name,
                {
                    "metadata": {
                        "annotations": {ORIGINAL_RECLAIM: pv.spec.persistent_volume_reclaim_policy},
                        "labels": {"snapmover.io/restored-for": cr["metadata"]["uid"]},
                    },
                    "spec": {"persistentVolumeReclaimPolicy": "Retain"},
                },
            )
        with contextlib.suppress(ApiException):
            self.core.delete_namespaced_persistent_volume_claim(restore_pvc_name, self.ns)
        selector = (target_pvc.spec.selector.match_labels or {}) if target_pvc.spec.selector else {}
        claim_ref = pv.spec.claim_ref
        if claim_ref is None or claim_ref.name != tname or claim_ref.namespace != tns:
            self.core.patch_persistent_volume(
                pv_name,
                {
                    "metadata": {"labels": dict(selector)},
                    "spec": {
                        "claimRef": {
                            "apiVersion": "v1",
                            "kind": "PersistentVolumeClaim",
                            "namespace": tns,
                            "name": tname,
                            "uid": target_pvc.metadata.uid,
                        }
                    },
                },
            )
            self.event(cr, "Normal", "VolumeRebound", f"restored volume {pv_name} handed to PVC {tns}/{tname}")
        raise Wait(f"target PVC {tns}/{tname} to bind to the restored volume {pv_name}")

    # cancel, finish, cleanup ------------------------------------------------------------------

    def cancel_directly(self, cr: dict[str, Any], phase: str) -> bool:
        """Cancel before the mover runs; True when handled here (the mover handles the rest)."""
        if phase in (Phase.NEW, Phase.ACCEPTED) or (phase == Phase.PREPARED and not self.mover_running(cr)):
            job = self.read_job(cr)
            if job is not None:
                self.delete_job(cr)
            self.set_phase(cr, Phase.CANCELED, "Canceled", "canceled before the mover started")
            return True
        if phase == Phase.IN_PROGRESS:
            job = self.read_job(cr)
            if job is None or any(c.type == "Failed" and c.status == "True" for c in (job.status.conditions or [])):
                self.set_phase(cr, Phase.CANCELED, "Canceled", "canceled")
                return True
        return False

    def mover_running(self, cr: dict[str, Any]) -> bool:
        return any(p.status.phase == "Running" for p in self.job_pods(cr))

    def finish(self, cr: dict[str, Any]) -> None:
        """Terminal CR: clean up, then drop our finalizer; delete the Job after its retention."""
        uid = cr["metadata"]["uid"]
        status = cr.get("status") or {}
        if self.claims.items({LABEL_OWNER_UID: uid}) or self.snapshots.items({LABEL_OWNER_UID: uid}):
            self.cleanup(cr, keep_job=True)
            if status.get("phase") == Phase.COMPLETED and cr["kind"] == DATAUPLOAD_KIND:
                metrics.BYTES_MOVED.labels(cr["kind"]).inc(int((status.get("progress") or {}).get("totalBytes") or 0))
        # a DataUpload holding a repository snapshot keeps the finalizer: deleting it forgets the snapshot
        if FINALIZER in (cr["metadata"].get("finalizers") or []) and not holds_snapshot(cr):
            self.remove_finalizer(cr)
        completed = (cr.get("status") or {}).get("completionTimestamp")
        job = self.read_job(cr)
        if job is not None:
            remaining = self.config.job_retention_seconds - age_seconds(completed)
            if remaining <= 0:
                self.delete_job(cr)
            else:
                self.enqueue(cr["kind"], cr["metadata"]["name"], delay=min(remaining + 0.5, 60))

    def forget_on_delete(self, cr: dict[str, Any]) -> bool:
        """For a deleted DataUpload holding a snapshot: run the forget Job; True while it is not done."""
        if not holds_snapshot(cr):
            return False
        name = forget_job_name(cr)
        job = self.jobs.get(name, self.ns)
        if job is None:
            try:
                location = self.storage_location(cr)
            except Fail as f:
                self.event(cr, "Warning", "ForgetFailed", f"snapshot not forgotten: {f}")
                return False
            body = build_forget_job(
                cr, self.config, location=location, source_namespace=str(cr["spec"].get("sourceNamespace", ""))
            )
            with contextlib.suppress(ApiException):
                self.jobs.put(self.batch.create_namespaced_job(self.ns, body))
            self.enqueue(cr["kind"], cr["metadata"]["name"], delay=1.0)
            return True
        conditions = {c.type for c in (job.status.conditions or []) if c.status == "True"}
        if not conditions & {"Complete", "Failed"}:
            self.enqueue(cr["kind"], cr["metadata"]["name"], delay=1.0)
            return True
        if "Complete" in conditions:
            self.event(
                cr,
                "Normal",
                "SnapshotForgotten",
                f"repository snapshot {cr['status']['snapshotID']} forgotten; maintenance frees its data",
            )
        else:
            self.event(
                cr,
                "Warning",
                "ForgetFailed",
                f"could not forget repository snapshot {cr['status']['snapshotID']} after "
                f"{FORGET_RETRIES + 1} attempts (storage unreachable?); run `snapmover forget` by hand",
            )
        with contextlib.suppress(ApiException):
            self.batch.delete_namespaced_job(name, self.ns, propagation_policy="Background")
            self.jobs.forget(name, self.ns)
        return False

    def remove_finalizer(self, cr: dict[str, Any]) -> None:
        cr["metadata"]["finalizers"] = [f for f in cr["metadata"].get("finalizers") or [] if f != FINALIZER]
        self.replace_cr(cr)

    def delete_job(self, cr: dict[str, Any]) -> None:
        with contextlib.suppress(ApiException):
            self.batch.delete_namespaced_job(object_name(cr), self.ns, propagation_policy="Background")
            self.jobs.forget(object_name(cr), self.ns)

    def cleanup(self, cr: dict[str, Any], *, keep_job: bool) -> None:
        """Delete what we created for the CR (Job only when ``keep_job`` is False). The mover's
        ServiceAccount/Role/RoleBinding go with its PVC (ownerReference, garbage collector)."""
        name = object_name(cr)
        if not keep_job:
            self.delete_job(cr)
        # only objects that exist and are not being deleted already (a PVC in use lingers a while)
        deleters: list[tuple[Informer, Callable[[], Any]]] = [
            (self.claims, lambda: self.core.delete_namespaced_persistent_volume_claim(name, self.ns)),
            (
                self.snapshots,
                lambda: self.custom.delete_namespaced_custom_object(
                    SNAP_GROUP, SNAP_VERSION, self.ns, "volumesnapshots", name
                ),
            ),
        ]
        if cr["kind"] == DATADOWNLOAD_KIND and (cr.get("status") or {}).get("phase") == Phase.COMPLETED:
            deleters = []  # the restore PVC was handed over already
        for informer, delete in deleters:
            if live(informer.get(name, self.ns)):
                with contextlib.suppress(ApiException):
                    delete()
                    informer.forget(name, self.ns)
        self.rbac_ready.discard(cr["metadata"]["uid"])


def live(obj: Any) -> bool:
    """Whether a cached object exists and has no deletionTimestamp."""
    if obj is None:
        return False
    if isinstance(obj, dict):
        return not obj.get("metadata", {}).get("deletionTimestamp")
    return obj.metadata.deletion_timestamp is None


def holds_snapshot(cr: dict[str, Any]) -> bool:
    """True for a Completed DataUpload whose repository snapshot must be forgotten when it is deleted."""
    status = cr.get("status") or {}
    return cr["kind"] == DATAUPLOAD_KIND and status.get("phase") == Phase.COMPLETED and bool(status.get("snapshotID"))


def validate_spec(cr: dict[str, Any]) -> None:
    """Reject CRs that can never work, with a message naming the field."""
    spec = cr.get("spec") or {}
    if not spec.get("backupStorageLocation"):
        raise Fail("spec.backupStorageLocation is empty")
    if cr["kind"] == DATAUPLOAD_KIND:
        for field in ("sourceNamespace", "sourcePVC"):
            if not spec.get(field):
                raise Fail(f"spec.{field} is empty")
        if spec.get("snapshotType", "CSI") != "CSI":
            raise Fail(f"spec.snapshotType {spec.get('snapshotType')!r} is not supported (only CSI)")
        if not (spec.get("csiSnapshot") or {}).get("volumeSnapshot"):
            raise Fail("spec.csiSnapshot.volumeSnapshot is empty")
    else:
        target = spec.get("targetVolume") or {}
        if not target.get("pvc") or not target.get("namespace"):
            raise Fail("spec.targetVolume.pvc and spec.targetVolume.namespace are required")
        if not spec.get("snapshotID"):
            raise Fail("spec.snapshotID is empty")
    dmc = spec.get("dataMoverConfig") or {}
    if not isinstance(dmc, dict):
        raise Fail("spec.dataMoverConfig must be a map of strings")
    if spec.get("operationTimeout"):
        try:
            parse_duration(str(spec["operationTimeout"]), "spec.operationTimeout")
        except ConfigurationError as e:
            raise Fail(str(e)) from e


def location_from_bsl(bsl: dict[str, Any]) -> StorageLocation:
    """A StorageLocation from a Velero BackupStorageLocation."""
    spec = bsl.get("spec") or {}
    config = spec.get("config") or {}
    provider = str(spec.get("provider", "aws"))
    if provider.rsplit("/", maxsplit=1)[-1] not in ("aws",):
        raise Fail(
            f"BackupStorageLocation {bsl['metadata']['name']}: provider {provider!r} is not supported "
            "(snapmover speaks S3: use provider aws)"
        )
    credential = spec.get("credential") or {}
    return StorageLocation(
        name=bsl["metadata"]["name"],
        provider="aws",
        bucket=(spec.get("objectStorage") or {}).get("bucket", ""),
        prefix=(spec.get("objectStorage") or {}).get("prefix", ""),
        region=config.get("region", ""),
        s3_url=config.get("s3Url", ""),
        path_style=str(config.get("s3ForcePathStyle", "")).lower() == "true",
        insecure=str(config.get("insecureSkipTLSVerify", "")).lower() == "true",
        credential_secret=credential.get("name", "cloud-credentials"),
        credential_key=credential.get("key", "cloud"),
        profile=config.get("profile", ""),
        ca_cert=bsl_ca_cert(bsl),
    )


def bsl_ca_cert(bsl: dict[str, Any]) -> str:
    """The PEM of a BackupStorageLocation's ``objectStorage.caCert``; a malformed one fails the CR."""
    try:
        return decode_ca_cert(
            ((bsl.get("spec") or {}).get("objectStorage") or {}).get("caCert"), "objectStorage.caCert"
        )
    except ConfigurationError as e:
        raise Fail(f"BackupStorageLocation {bsl['metadata']['name']}: {e}") from e


def pod_start_problem(pod: Any) -> str:
    """Why a mover pod is not starting ('' when it is fine or simply not there yet)."""
    for cond in pod.status.conditions or []:
        if cond.type == "PodScheduled" and cond.status == "False" and cond.reason == "Unschedulable":
            return f"unschedulable: {cond.message}"
    for cs in pod.status.container_statuses or []:
        waiting = cs.state.waiting if cs.state else None
        if waiting is not None and waiting.reason in START_FAILURE_REASONS:
            return f"{waiting.reason}: {waiting.message or ''}".strip()
    return ""


def termination(pod: Any) -> str | None:
    """The mover container's termination message, if it ended."""
    if pod is None:
        return None
    for cs in pod.status.container_statuses or []:
        if cs.state and cs.state.terminated is not None:
            return str(cs.state.terminated.message or "")
    return None
