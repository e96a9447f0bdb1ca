"""The launcher's control loop: observe one CR → ``launcher.phases.decide`` → act.

Level-based: watches only enqueue keys (``launcher.workqueue``); ``reconcile`` re-reads the CR
and everything it owns from the watch-fed caches (``launcher.informer``, so a waiting CR costs
no API requests), asks the pure decision module what to do, and does it, so the same event twice
is harmless and a restarted launcher adopts running Jobs. Only CRs whose ``spec.datamover`` is
the configured name are touched. Every phase change is resourceVersion-checked (409 → re-read).

Where the rest lives: exposure (snapshot takeover, backup/restore PVCs, PV rebinding, storage
locations) in ``launcher.exposure`` with bodies from ``launcher.objects``; the mover Job and RBAC
in ``launcher.jobspec``; maintenance scheduling in ``launcher.maintenance``; API error mapping in
``launcher.api``.
"""

from __future__ import annotations

import copy
import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from kubernetes import client

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
    Phase,
)
from launcher import api, logfmt, metrics, notices, objects, phases
from launcher.config import LauncherConfig
from launcher.exposure import Exposer, LocationError
from launcher.informer import Informer, Recent, meta_of
from launcher.jobspec import PASSWORD_SECRET, build_forget_job, build_job, build_rbac, forget_job_name, object_name
from launcher.maintenance import Maintainer
from launcher.objects import SNAP_GROUP, SNAP_VERSION
from launcher.workqueue import WorkQueue

log = logging.getLogger("snapmover.launcher")

PLURALS = {DATAUPLOAD_KIND: DATAUPLOAD_PLURAL, DATADOWNLOAD_KIND: DATADOWNLOAD_PLURAL}
CONFLICT_REQUEUE_SECONDS = 0.2
MAX_DECISIONS = 3  # Expose and Rebind each add to the observation once
POD_EVENTS_AFTER_SECONDS = 10.0  # a mover pod Pending longer than this (or half podStartTimeout) has its Events read


def now_rfc3339() -> str:
    return phases.rfc3339(time.time())


class Controller:
    """Watches, queues and reconciles; ``run`` blocks until ``stop`` is set."""

    def __init__(self, api_client: client.ApiClient, config: LauncherConfig, identity: str) -> None:
        self.config = config
        self.ns = config.namespace
        self.identity = identity
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.rbac = client.RbacAuthorizationV1Api(api_client)
        self.queue = WorkQueue()
        self.stop = threading.Event()
        self.is_leader = threading.Event()
        self.rbac_ready: set[str] = set()  # CR uids whose mover ServiceAccount/Role/RoleBinding exist
        self.recent = Recent(ttl=15.0)  # reads without a watch: Secrets, storage locations, nodes
        self.settings = phases.Settings.from_config(config, identity)
        self.notices = notices.Notices()  # Events about mover-written phases and waits, once each
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
        owned: dict[str, Any] = {"label_selector": f"{LABEL_APP}={LABEL_APP_VALUE}", "on_change": self._owned_changed}
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
        self.exposer = Exposer(
            self.core, self.custom, client.StorageV1Api(api_client), self.claims, self.snapshots, self.recent, config
        )
        self.maintainer = Maintainer(
            self.batch,
            self.jobs,
            config,
            lambda bsl: self.exposer.storage_location({"spec": {"backupStorageLocation": bsl}}),
            self.job_event,
            self.to_dict,
            movers_of=self.movers_of,
        )

    def to_dict(self, obj: Any) -> Any:
        """A typed model as its JSON dict (custom objects and None pass through)."""
        return self.api_client.sanitize_for_serialization(obj) if obj is not None else None

    # --- queue ----------------------------------------------------------------------------------

    def enqueue(self, kind: str, name: str, delay: float = 0.0) -> None:
        self.queue.add((kind, name), delay)
        metrics.QUEUE_DEPTH.set(self.queue.depth())

    def _timer_loop(self) -> None:
        while not self.stop.wait(0.5):
            self.queue.due()
            metrics.QUEUE_DEPTH.set(self.queue.depth())

    def _worker(self) -> None:
        while not self.stop.is_set():
            key = self.queue.get(timeout=0.5)
            metrics.QUEUE_DEPTH.set(self.queue.depth())
            if key is None or not self.is_leader.is_set():
                continue
            try:
                logfmt.reconciling(self.reconcile, self.ns, *key)
            except Exception as e:  # noqa: BLE001 - the launcher must keep serving other CRs
                metrics.API_ERRORS.inc()
                delay = self.queue.failed(key)
                log.warning("reconcile %s/%s failed, retrying in %.0fs: %s", key[0], key[1], delay, e)
            else:
                self.queue.succeeded(key)

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
                phase_counts: dict[str, int] = {}
                for obj in self.crs[kind].items():
                    phase = phases.phase_of(obj)
                    if (obj.get("spec") or {}).get("datamover") == self.config.datamover_name:
                        phase_counts[phase] = phase_counts.get(phase, 0) + 1
                    meta = obj["metadata"]
                    held = FINALIZER in (meta.get("finalizers") or []) and not phases.holds_snapshot(obj)
                    if phase not in TERMINAL_PHASES or held or meta.get("deletionTimestamp") or self.owns(meta["uid"]):
                        self.enqueue(kind, meta["name"])
                metrics.set_phase_counts(kind, phase_counts)

    def _maintenance_loop(self) -> None:
        period = min(60.0, max(1.0, self.config.maintenance_interval_seconds / 4))
        while not self.stop.wait(period):
            if not self.is_leader.is_set() or self.config.maintenance_interval_seconds <= 0:
                continue
            try:
                self.maintainer.maintain(self.crs[DATAUPLOAD_KIND].items())
            except Exception as e:  # noqa: BLE001 - retried at the next period
                metrics.API_ERRORS.inc()
                log.warning("maintenance scheduling failed: %s", e)

    def run(self) -> None:
        self.ensure_password_secret()
        for informer in self.informers:
            threading.Thread(target=informer.run, args=(self.stop,), name=f"watch-{informer.name}", daemon=True).start()
        for informer in self.informers:  # reconciling from a half-filled cache would misjudge
            while not informer.synced.wait(1.0):
                if self.stop.is_set():
                    return
        for target, name in (
            (self._worker, "worker"),
            (self._timer_loop, "timers"),
            (self._resync, "resync"),
            (self._maintenance_loop, "maintenance"),
        ):
            threading.Thread(target=target, name=name, daemon=True).start()
        self.stop.wait()

    def ensure_password_secret(self) -> None:
        """Create the repository password Secret with a random password when it does not exist."""
        what = "the repository password Secret"
        if api.read_or_none(what, self.core.read_namespaced_secret, PASSWORD_SECRET, self.ns) is not None:
            return
        body = objects.password_secret(self.ns, secrets.token_urlsafe(32))
        if api.create_if_absent(what, self.core.create_namespaced_secret, self.ns, body) is not None:
            log.warning(
                "created Secret %s/%s with a random repository password: back it up — without it the "
                "backups cannot be restored",
                self.ns,
                PASSWORD_SECRET,
            )

    # --- CR writes and Events -----------------------------------------------------------------

    def get_cr(self, kind: str, name: str) -> dict[str, Any] | None:
        """The CR from the watch cache (a copy: reconcile edits it before writing it back)."""
        cached = self.crs[kind].get(name, self.ns)
        return copy.deepcopy(cached) if cached is not None else None

    def replace_cr(self, cr: dict[str, Any]) -> dict[str, Any] | None:
        """rv-guarded replace; None on conflict or when gone (the caller re-reads via requeue)."""
        name = cr["metadata"]["name"]
        replace_fn = self.custom.replace_namespaced_custom_object
        args = (API_GROUP, API_VERSION, self.ns, PLURALS[cr["kind"]], name, cr)
        try:
            obj: dict[str, Any] = api.call(f"{cr['kind']} {self.ns}/{name}", replace_fn, *args)
        except api.ApiRejectedError as e:
            if e.status not in (404, 409):
                raise
            self.enqueue(cr["kind"], name, delay=CONFLICT_REQUEUE_SECONDS)
            return None
        self.crs[cr["kind"]].put(obj)
        return copy.deepcopy(obj)

    def set_phase(self, cr: dict[str, Any], change: phases.SetPhase) -> dict[str, Any] | None:
        """rv-guarded phase change + its Event; None when the CR is terminal already or changed meanwhile."""
        status = dict(cr.get("status") or {})
        old = status.get("phase") or Phase.NEW
        if old in TERMINAL_PHASES:
            return None
        status.update(change.fields)
        status["phase"] = change.phase
        if change.message or change.phase in (Phase.FAILED, Phase.CANCELED):
            status["message"] = change.message
        if change.phase in TERMINAL_PHASES and not status.get("completionTimestamp"):
            status["completionTimestamp"] = now_rfc3339()
        meta = dict(cr["metadata"])
        if change.annotations:
            meta["annotations"] = {**(meta.get("annotations") or {}), **change.annotations}
        if change.add_finalizer:
            meta["finalizers"] = sorted(set(meta.get("finalizers") or []) | {FINALIZER})
        cr = {**cr, "metadata": meta, "status": status}
        updated = self.replace_cr(cr)
        if updated is None:
            return None
        metrics.TRANSITIONS.labels(cr["kind"], change.phase).inc()
        self.notices.first(cr["metadata"]["uid"], f"phase {change.phase}")  # its Event is posted below
        if old != change.phase:
            # time in the phase left: since the mover started, else since the CR was accepted
            since = status.get("startTimestamp") if old == Phase.IN_PROGRESS else status.get("acceptedTimestamp")
            metrics.observe_phase(cr["kind"], old, phases.age(since, time.time()))
        if change.count_bytes is not None:
            metrics.BYTES_MOVED.labels(cr["kind"]).inc(change.count_bytes)
        note = f": {change.note}" if change.note else ""
        kind = "Warning" if change.phase == Phase.FAILED or change.warning else "Normal"
        if change.reason == "MoverRetry":
            metrics.MOVER_RETRIES.labels(cr["kind"]).inc()
        self.event(cr, kind, change.reason, change.message or f"{old} -> {change.phase}{note}")
        log.info("%s %s: %s -> %s %s", cr["kind"], cr["metadata"]["name"], old, change.phase, change.message)
        return updated

    def event(self, cr: dict[str, Any], kind: str, reason: str, message: str) -> None:
        """An Event on a CR (`kubectl describe` tells its story)."""
        involved = {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": cr["kind"],
            "name": cr["metadata"]["name"],
            "namespace": self.ns,
            "uid": cr["metadata"]["uid"],
        }
        self.post_event(involved, kind, reason, message)

    def job_event(self, job: Any, kind: str, reason: str, message: str) -> None:
        """An Event on one of our Jobs (maintenance results); ``job`` as a dict."""
        meta = job["metadata"]
        involved = {"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "namespace": self.ns}
        self.post_event({**involved, "uid": meta.get("uid") or ""}, kind, reason, message)

    def post_event(self, involved: dict[str, str], kind: str, reason: str, message: str) -> None:
        """Create one core/v1 Event about ``involved``; a failure is counted, never raised."""
        body = objects.event(involved, self.ns, kind, reason, message, now_rfc3339())
        try:
            api.call("an Event", self.core.create_namespaced_event, self.ns, body)
        except (api.ApiRejectedError, api.ApiUnavailableError):
            metrics.API_ERRORS.inc()

    # --- reconcile: observe -> decide -> act ----------------------------------------------------

    def reconcile(self, kind: str, name: str) -> None:
        cr = self.get_cr(kind, name)
        if cr is None:
            return
        self.announce_mover_phase(cr)
        obs = self.observe(cr)
        try:
            for _ in range(MAX_DECISIONS):
                more = self.act(cr, obs, phases.decide(obs))
                if more is None:
                    return
                obs = more
        except api.ApiRejectedError as e:
            # a permanent refusal (a rejected body, a forbidden call): the CR fails with the server's word
            if self.set_phase(cr, phases.SetPhase(Phase.FAILED, "Failed", str(e))) is None:
                raise

    def announce_mover_phase(self, cr: dict[str, Any]) -> None:
        """The Event and count of a phase the mover wrote (InProgress, Completed, …), once per CR."""
        if (cr.get("spec") or {}).get("datamover") != self.config.datamover_name:
            return
        notice = notices.mover_phase_event(cr, time.time())
        if notice is not None and self.notices.first(cr["metadata"]["uid"], f"phase {phases.phase_of(cr)}"):
            metrics.MOVER_PHASES.labels(cr["kind"], phases.phase_of(cr)).inc()
            self.event(cr, notice.type, notice.reason, notice.message)

    def requeue(self, cr: dict[str, Any], requeue: phases.Requeue) -> None:
        """Look again later; a wait worth telling gets one Event per reason (not one per requeue)."""
        if requeue.announce and self.notices.first(cr["metadata"]["uid"], f"waiting for {requeue.waiting_for}"):
            self.event(cr, "Normal", "Waiting", f"waiting for {requeue.waiting_for}")
        self.enqueue(cr["kind"], cr["metadata"]["name"], delay=requeue.delay)

    def observe(self, cr: dict[str, Any]) -> phases.Observation:
        """The CR and what it owns, from the caches (plain dicts)."""
        uid = cr["metadata"]["uid"]
        job = self.read_job(cr)
        preparing = sum(phases.phase_of(obj) == Phase.ACCEPTED for inf in self.crs.values() for obj in inf.items())
        pods = [self.to_dict(p) for p in self.pods.items({LABEL_OWNER_UID: uid})]
        obs = phases.Observation(
            cr=cr,
            now=time.time(),
            settings=self.settings,
            job=self.to_dict(job),
            pods=pods,
            events=self.pending_pod_events(pods),
            lost_nodes=self.lost_nodes(pods),
            owns_volumes=bool(
                self.claims.items({LABEL_OWNER_UID: uid}) or self.snapshots.items({LABEL_OWNER_UID: uid})
            ),
            preparing=preparing,
        )
        deleting = cr["metadata"].get("deletionTimestamp") and phases.holds_snapshot(cr)
        if deleting and FINALIZER in phases.finalizers_of(cr):
            forget = self.to_dict(self.jobs.get(forget_job_name(cr), self.ns))
            problem = ""
            if forget is None:
                try:
                    self.exposer.storage_location(cr)
                except LocationError as e:
                    problem = str(e)
            obs = replace(obs, forget_job=forget, forget_problem=problem)
        return obs

    def lost_nodes(self, pods: list[dict[str, Any]]) -> frozenset[str]:
        """The nodes, not Ready, on which one of these pods is being deleted (the node list is read
        only then, and cached briefly)."""
        deleted_on = {
            str(p["spec"]["nodeName"])
            for p in pods
            if p["metadata"].get("deletionTimestamp") and (p.get("spec") or {}).get("nodeName")
        }
        if not deleted_on:
            return frozenset()
        ready: list[str] = self.recent.get(("nodes",), self.ready_nodes)
        return frozenset(deleted_on - set(ready))

    def pending_pod_events(self, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The Events about those pods that have been Pending a while (why one cannot start): a pod
        that starts at once or runs costs no read."""
        after = min(POD_EVENTS_AFTER_SECONDS, self.config.pod_start_timeout_seconds / 2)
        now = time.time()
        pending = [
            p
            for p in pods
            if (p.get("status") or {}).get("phase") in (None, "Pending")
            and phases.age(p["metadata"].get("creationTimestamp"), now) >= after
        ]
        return [e for p in pending for e in self.exposer.events_about("Pod", p["metadata"]["name"])]

    def act(
        self, cr: dict[str, Any], obs: phases.Observation, actions: list[phases.Action]
    ) -> phases.Observation | None:
        """Carry the actions out in order; a new observation when one asks to decide again."""
        for action in actions:
            if isinstance(action, phases.Expose):
                exposure, _ = self.exposer.expose(cr, obs.now)
                blocked = isinstance(exposure, phases.Exposed) and obs.job is None
                busy = (self.prune_hold(cr) or self.no_free_slot()) if blocked else ""
                return replace(obs, exposure=exposure, free_slot=busy)
            if isinstance(action, phases.Rebind):
                return replace(obs, rebind=self.exposer.rebind_view(cr, self.to_dict))
            if isinstance(action, phases.SetPhase):
                cr = self.set_phase(cr, action) or cr
            else:
                self.act_one(cr, action)
        return None

    def act_one(self, cr: dict[str, Any], action: phases.Action) -> None:
        """One action that neither changes the phase nor asks for more observation."""
        handlers: dict[type, Callable[[Any], Any]] = {
            phases.Requeue: lambda a: self.requeue(cr, a),
            phases.CreateJob: lambda a: self.create_job(cr, a.exposed),
            phases.PatchVolume: lambda a: self.exposer.patch_volume(a.name, dict(a.patch)),
            phases.DeleteRestoreClaim: lambda a: self.exposer.delete_restore_claim(cr),
            phases.PostEvent: lambda a: self.event(cr, a.type, a.reason, a.message),
            phases.DeleteJob: lambda a: self.delete_job(object_name(cr)),
            phases.Cleanup: lambda a: self.cleanup(cr, keep_job=a.keep_job),
            phases.RemoveFinalizer: lambda a: self.remove_finalizer(cr),
            phases.StartForget: lambda a: self.start_forget(cr),
            phases.DeleteForgetJob: lambda a: self.delete_job(forget_job_name(cr)),
            phases.CountBytes: lambda a: metrics.BYTES_MOVED.labels(cr["kind"]).inc(a.amount),
        }
        handlers[type(action)](action)

    def remove_finalizer(self, cr: dict[str, Any]) -> None:
        cr["metadata"]["finalizers"] = [f for f in phases.finalizers_of(cr) if f != FINALIZER]
        self.replace_cr(cr)

    # --- acts -----------------------------------------------------------------------------------

    def no_free_slot(self) -> str:
        """Why no new mover Job may start now ('' when one may): global and per-node limits."""
        active = [
            j
            for j in self.jobs.items()
            if LABEL_ROLE in (j.metadata.labels or {}) and not phases.job_finished(self.to_dict(j))
        ]
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

    def prune_hold(self, cr: dict[str, Any]) -> str:
        """Why no mover Job of the CR's repository may start now: its prune Job runs ('' when none)."""
        bsl, source_ns = repository_of(cr)
        running = self.maintainer.running_prune(bsl, source_ns)
        return f"prune Job {running} is pruning repository {bsl}/{source_ns}" if running else ""

    def movers_of(self, bsl: str, source_ns: str) -> int:
        """Mover Jobs (of both kinds) running on the repository (storage location, source namespace)."""
        return sum(
            1
            for informer in self.crs.values()
            for cr in informer.items()
            if repository_of(cr) == (bsl, source_ns)
            and (job := self.read_job(cr)) is not None
            and not phases.job_finished(self.to_dict(job))
        )

    def ready_nodes(self) -> list[str]:
        return [
            n.metadata.name
            for n in api.call("Nodes", self.core.list_node).items
            if any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or []))
        ]

    def create_job(self, cr: dict[str, Any], exposed: phases.Exposed) -> None:
        """The mover's RBAC and Job, unless a prune of its repository started meanwhile (the next
        reconcile waits for it); the check and the creation are atomic with the prune's start."""
        with self.maintainer.gate:
            if not self.prune_hold(cr):
                self._create_job(cr, exposed)

    def _create_job(self, cr: dict[str, Any], exposed: phases.Exposed) -> None:
        """The mover's RBAC (owned by its PVC, so garbage-collected with it), then its Job."""
        location = self.exposer.storage_location(cr)
        uid = cr["metadata"]["uid"]
        if uid not in self.rbac_ready:
            owner = {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "name": exposed.claim,
                "uid": exposed.claim_uid,
            }
            sa, role, binding = build_rbac(
                cr,
                self.ns,
                owner=owner,  # type: ignore[arg-type]
                annotations=self.config.mover_service_account_annotations,
            )
            for what, create, body in (
                ("ServiceAccount", self.core.create_namespaced_service_account, sa),
                ("Role", self.rbac.create_namespaced_role, role),
                ("RoleBinding", self.rbac.create_namespaced_role_binding, binding),
            ):
                api.create_if_absent(f"{what} {self.ns}/{body['metadata']['name']}", create, self.ns, body)
            self.rbac_ready.add(uid)
        body = build_job(
            cr,
            self.config,
            claim=exposed.claim,
            volume_mode=exposed.mode,
            location=location,
            source_namespace=exposed.source_namespace,
            source_pvc=exposed.source_pvc,
            placement=exposed.placement,
        )
        attempt = {phases.ATTEMPT_ANNOTATION: str(phases.attempt_of(cr))}  # a dead attempt's Job is replaced
        body["metadata"]["annotations"] = {**(body["metadata"].get("annotations") or {}), **attempt}
        created = api.create_if_absent(
            f"Job {self.ns}/{body['metadata']['name']}", self.batch.create_namespaced_job, self.ns, body
        )
        if created is not None:
            self.jobs.put(created)

    def start_forget(self, cr: dict[str, Any]) -> None:
        location = self.exposer.storage_location(cr)
        source_ns = str(cr["spec"].get("sourceNamespace", ""))
        body = build_forget_job(cr, self.config, location=location, source_namespace=source_ns)
        created = api.create_if_absent(
            f"Job {self.ns}/{body['metadata']['name']}", self.batch.create_namespaced_job, self.ns, body
        )
        if created is not None:
            self.jobs.put(created)

    def read_job(self, cr: dict[str, Any]) -> Any | None:
        job = self.jobs.get(object_name(cr), self.ns)
        if job is None:
            return None
        return job if (job.metadata.labels or {}).get(LABEL_OWNER_UID) == cr["metadata"]["uid"] else None

    def delete_job(self, name: str) -> None:
        what = f"Job {self.ns}/{name}"
        api.delete_if_present(what, self.batch.delete_namespaced_job, name, self.ns, propagation_policy="Background")
        self.jobs.forget(name, self.ns)

    def cleanup(self, cr: dict[str, Any], *, keep_job: bool) -> None:
        """Delete what we created for the CR (Job only when ``keep_job`` is False). The mover's
        ServiceAccount/Role/RoleBinding go with its PVC (ownerReference, garbage collector)."""
        name = object_name(cr)
        if not keep_job and self.read_job(cr) is not None:
            self.delete_job(name)
        deleters: list[tuple[Informer, str, Callable[[], Any]]] = [
            (self.claims, "PVC", lambda: self.core.delete_namespaced_persistent_volume_claim(name, self.ns)),
            (
                self.snapshots,
                "VolumeSnapshot",
                lambda: self.custom.delete_namespaced_custom_object(
                    SNAP_GROUP, SNAP_VERSION, self.ns, "volumesnapshots", name
                ),
            ),
        ]
        if cr["kind"] == DATADOWNLOAD_KIND and phases.phase_of(cr) == Phase.COMPLETED:
            deleters = []  # the restore PVC was handed over already
        for informer, what, delete in deleters:
            # only objects that exist and are not being deleted already (a PVC in use lingers a while)
            if live(informer.get(name, self.ns)):
                api.delete_if_present(f"{what} {self.ns}/{name}", delete)
                informer.forget(name, self.ns)
        self.rbac_ready.discard(cr["metadata"]["uid"])


def repository_of(cr: dict[str, Any]) -> tuple[str, str]:
    """The repository a CR's mover uses: (storage location, source namespace)."""
    spec = cr.get("spec") or {}
    return str(spec.get("backupStorageLocation", "")), str(spec.get("sourceNamespace", ""))


def live(obj: Any) -> bool:
    """Whether a cached object exists and has no deletionTimestamp."""
    if obj is None:
        return False
    if isinstance(obj, dict):
        return not obj.get("metadata", {}).get("deletionTimestamp")
    return obj.metadata.deletion_timestamp is None
