"""The launcher's phase decisions: a frozen observation in, the actions to take out (no I/O).

``launcher.controller`` observes one CR and what it owns (from the watch caches, as plain dicts),
calls :func:`decide`, and carries the actions out; this module never talks to the API server, so
every transition is unit-tested over plain dicts (``tests/unit/launcher/test_phases.py``). It
follows the shape of the mover's ``CRStatus.transition(decide)``.

The transition table (DESIGN §3; the mover writes InProgress, Canceling and its own terminal
phases, the launcher everything else):

==========================  ====================================================================
observed                    actions
==========================  ====================================================================
not our ``datamover``       nothing, ever
deleted, holds a snapshot   start the forget Job, wait for it, post its result as an Event, then
                            clean up and remove the finalizer
deleted                     clean up (Job too), remove the finalizer
terminal phase              clean up PVC/VolumeSnapshot, remove the finalizer (unless a Completed
                            DataUpload holds a repository snapshot), delete the Job after its
                            retention; a terminal phase is never changed
cancel, before the mover    delete the Job, → Canceled ("canceled before the mover started")
cancel, InProgress, Job     → Canceled (the mover died before it could write Canceled)
gone or Failed
New, invalid spec           → Failed naming the field
New, prepare queue full     requeue (2 s)
New                         → Accepted (``acceptedByNode``, ``acceptedTimestamp``, finalizer)
Accepted, not exposed       expose (``launcher.exposure``); waiting → requeue (1 s) until the
                            prepare timeout (→ Failed, PrepareTimeout); a permanent problem → Failed
Accepted, exposed, no Job   wait for a backup PVC to be Bound (unless its class binds on first
                            consumer; the prepare timeout names the PVC, its StorageClass and last
                            Event), then for a free slot (global / per node, no prune running on
                            the repository) without a timeout, then create the Job; the Job's pod
                            gets its own prepare clock from the Job's creation
Job Complete / Failed, pod  wait up to POD_STATUS_GRACE_SECONDS for the pod's termination message
without its final status
Job Complete, DataUpload    → Completed with the mover's snapshotID (else Failed, MoverExited)
Job Complete, DataDownload  rebind the restored PV to the target PVC step by step (retain + label,
                            delete the restore PVC, claimRef + selector labels, wait Bound,
                            restore the reclaim policy), then → Completed
Job Failed, the mover died  the pod ended without a result (OOMKilled, killed by a signal, evicted,
                            gone with its node): while attempts remain (1 + ``moverRetries``)
                            and the operationTimeout since acceptance has not passed, → Accepted
                            with the next attempt (annotation ``snapmover.io/mover-attempt``,
                            Warning Event MoverRetry); the old Job is deleted and a new one made
                            as for a new CR (the mover resumes: what it stored is deduplicated)
pod lost with its node      Kubernetes deletes the mover pod of a node that is not Ready (after the
                            pod's toleration of the ``unreachable`` taint); the pod stays
                            Terminating without a kubelet: a dead mover as above (the last
                            attempt fails with reason NodeLost)
Job Failed                  → Canceled when the mover says so, else Failed with its message, else
                            with the cause Kubernetes states (OOMKilled, Evicted, DeadlineExceeded)
pod cannot start            past ``podStartTimeout`` → Failed with the cause ``launcher.failures``
                            reads (image pull, unschedulable, FailedMount, stuck in
                            ContainerCreating …) as the reason, delete the Job
Accepted, pod Running       → Prepared (``node``)
Job gone after Prepared     → Failed ("the mover Job disappeared …")
otherwise                   requeue (5 s); the mover's own writes wake us earlier
==========================  ====================================================================

A phase change is applied by the controller as a resourceVersion-checked update, so a cancel and
a completion racing each other cannot both win: whichever is decided on a stale CR gets 409 and
is decided again on the fresh one, where the terminal phase already stands.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jobs.contract import (
    DATAUPLOAD_KIND,
    FINALIZER,
    TERMINAL_PHASES,
    Phase,
    decode_termination_message,
)
from launcher.config import LauncherConfig, parse_duration
from launcher.failures import Cause, classify, start_failure
from launcher.jobspec import FORGET_RETRIES
from launcher.objects import ORIGINAL_RECLAIM, claim_ref_patch, reclaim_patch, retain_volume_patch
from launcher.validation import spec_problem

DEFAULT_OPERATION_TIMEOUT_SECONDS = 600.0
POD_STATUS_GRACE_SECONDS = 15.0  # how long a finished Job waits for its pod's termination message
WAIT_REQUEUE_SECONDS = 1.0
QUEUE_FULL_REQUEUE_SECONDS = 2.0
SUPERVISE_REQUEUE_SECONDS = 5.0
ENDED_POD_PHASES = frozenset({"Succeeded", "Failed"})
WAIT_NOTICE_AFTER_SECONDS = 5.0  # a prepare wait this long gets its (one) Event
RETENTION_REQUEUE_MAX_SECONDS = 60.0
ATTEMPT_ANNOTATION = "snapmover.io/mover-attempt"  # on the CR: the attempt it is on; on a Job: its attempt
RETRIED_ANNOTATION = "snapmover.io/mover-retried-at"  # when the current attempt was decided (prepare timeout)
# kube-scheduler's message for a pod whose PVC (immediate binding) is not bound yet
UNBOUND_CLAIMS = "unbound immediate PersistentVolumeClaims"

Obj = Mapping[str, Any]


# --- time -----------------------------------------------------------------------------------------


def parse_time(text: str | None) -> float | None:
    """Seconds since the epoch of an RFC 3339 timestamp (``Z`` or an offset); None when absent."""
    if not text:
        return None
    moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def rfc3339(now: float) -> str:
    """``now`` (epoch seconds) as the RFC 3339 form Kubernetes writes."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def age(text: str | None, now: float) -> float:
    """Seconds since ``text`` (0 when there is no timestamp)."""
    then = parse_time(text)
    return 0.0 if then is None else now - then


# --- what was observed ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """The part of the launcher configuration the decisions need (``from_config`` derives it)."""

    datamover_name: str
    identity: str
    prepare_timeout_seconds: float
    pod_start_timeout_seconds: float
    job_retention_seconds: float
    prepare_queue_length: int
    mover_retries: int = 2

    @classmethod
    def from_config(cls, config: LauncherConfig, identity: str) -> Settings:
        """The decisions' view of ``config`` for the launcher instance ``identity``."""
        return cls(
            datamover_name=config.datamover_name,
            identity=identity,
            prepare_timeout_seconds=config.prepare_timeout_seconds,
            pod_start_timeout_seconds=config.pod_start_timeout_seconds,
            job_retention_seconds=config.job_retention_seconds,
            prepare_queue_length=config.prepare_queue_length,
            mover_retries=config.mover_retries,
        )


@dataclass(frozen=True)
class ClaimBinding:
    """How far a backup PVC is from Bound, as exposure saw it (what the wait message names)."""

    phase: str  # the PVC's status.phase
    storage_class: str = ""  # '' when the PVC names none
    binding_mode: str = ""  # the class's volumeBindingMode ('' when the class was not found)
    provisioner: str = ""
    last_event: str = ""  # "Reason: message" of the newest Event about the PVC ('' none)


@dataclass(frozen=True)
class Exposed:
    """The volume the mover Job mounts is there (``claim_uid`` None: not in the cache yet)."""

    claim: str
    mode: str
    source_namespace: str
    source_pvc: str
    claim_uid: str | None = None
    binding: ClaimBinding | None = None  # a backup PVC's binding (None: not looked at, e.g. a restore)
    placement: dict[str, Any] | None = None  # required NodeSelector of the mover Job (None: any node)


@dataclass(frozen=True)
class Waiting:
    """Exposure is not ready; ``what`` names what it waits for."""

    what: str


@dataclass(frozen=True)
class Failed:
    """Exposure can never succeed; ``message`` is for the CR status."""

    message: str


Exposure = Exposed | Waiting | Failed


@dataclass(frozen=True)
class RebindView:
    """What a finished restore's rebinding looks at: the target PVC, the PV in play, the restore PVC."""

    target: Obj | None
    volume: Obj | None
    restore_claim: bool = False


@dataclass(frozen=True)
class Observation:
    """One CR and what it owns, as plain dicts (Kubernetes' camelCase JSON form)."""

    cr: Obj
    now: float
    settings: Settings
    job: Obj | None = None  # the mover Job labelled with the CR's uid
    pods: Sequence[Obj] = ()  # its pods
    events: Sequence[Obj] = ()  # Events about its pods (read while a pod is Pending, for ``failures.classify``)
    owns_volumes: bool = False  # a PVC or VolumeSnapshot we made for the CR still exists
    preparing: int = 0  # CRs in Accepted, of both kinds
    exposure: Exposure | None = None  # set after the Expose action ran
    free_slot: str = ""  # why no new mover Job may start ('' when one may)
    forget_job: Obj | None = None
    forget_problem: str = ""  # why no forget Job can be built (its storage location)
    rebind: RebindView | None = None  # set after the Rebind action gathered it
    lost_nodes: frozenset[str] = frozenset()  # nodes not Ready on which one of its pods is being deleted

    @property
    def current_pods(self) -> list[Obj]:
        """The current Job's pods (a dead attempt's pods linger until they are garbage-collected)."""
        uid = ((self.job or {}).get("metadata") or {}).get("uid")
        return [p for p in self.pods if not uid or uid in owner_uids(p) or not owner_uids(p)]

    @property
    def pod(self) -> Obj | None:
        """The current Job's pod."""
        current = self.current_pods
        return current[0] if current else None


# --- what to do ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetPhase:
    """rv-guarded phase change (+ its Event); ``message`` goes into the status, ``note`` only into the Event."""

    phase: str
    reason: str
    message: str = ""
    note: str = ""
    fields: Mapping[str, Any] = field(default_factory=dict)
    add_finalizer: bool = False
    count_bytes: int | None = None  # bytes moved to count when the change is written
    annotations: Mapping[str, str] = field(default_factory=dict)  # set on the CR with the change
    warning: bool = False  # its Event is a Warning (always for Failed)


@dataclass(frozen=True)
class Requeue:
    """Look at the CR again after ``delay`` seconds; ``waiting_for`` says why."""

    delay: float
    waiting_for: str = ""
    announce: bool = False  # a wait worth one Event per reason (the controller deduplicates)


@dataclass(frozen=True)
class Expose:
    """Run the exposure step (idempotent) and decide again with its result."""


@dataclass(frozen=True)
class CreateJob:
    """Create the mover's RBAC and Job for the exposed volume."""

    exposed: Exposed


@dataclass(frozen=True)
class Rebind:
    """Gather the restore's target PVC and PV and decide again with them."""


@dataclass(frozen=True)
class PatchVolume:
    """Patch the PersistentVolume ``name``."""

    name: str
    patch: Mapping[str, Any]


@dataclass(frozen=True)
class DeleteRestoreClaim:
    """Delete the restore PVC (the PV is retained and handed to the target)."""


@dataclass(frozen=True)
class PostEvent:
    """An Event on the CR."""

    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class DeleteJob:
    """Delete the mover Job."""


@dataclass(frozen=True)
class Cleanup:
    """Delete what was made for the CR (the Job only when ``keep_job`` is False)."""

    keep_job: bool


@dataclass(frozen=True)
class RemoveFinalizer:
    """Drop our finalizer from the CR."""


@dataclass(frozen=True)
class StartForget:
    """Create the Job forgetting a deleted DataUpload's repository snapshot."""


@dataclass(frozen=True)
class DeleteForgetJob:
    """Delete the finished forget Job."""


@dataclass(frozen=True)
class CountBytes:
    """Count bytes moved (a finished backup whose PVC is cleaned up now)."""

    amount: int


Action = (
    SetPhase
    | Requeue
    | Expose
    | CreateJob
    | Rebind
    | PatchVolume
    | DeleteRestoreClaim
    | PostEvent
    | DeleteJob
    | Cleanup
    | RemoveFinalizer
    | StartForget
    | DeleteForgetJob
    | CountBytes
)


# --- helpers over CR dicts ------------------------------------------------------------------------


def spec_of(cr: Obj) -> Obj:
    return cr.get("spec") or {}


def status_of(cr: Obj) -> Obj:
    return cr.get("status") or {}


def phase_of(cr: Obj) -> str:
    return str(status_of(cr).get("phase") or Phase.NEW)


def finalizers_of(cr: Obj) -> list[str]:
    return list((cr.get("metadata") or {}).get("finalizers") or [])


def owner_uids(obj: Obj) -> set[str]:
    return {str(r.get("uid")) for r in (obj.get("metadata") or {}).get("ownerReferences") or []}


def attempt_of(obj: Obj | None) -> int:
    """The mover attempt a CR is on, or a Job is (1 when not annotated: every first attempt)."""
    text = str((((obj or {}).get("metadata") or {}).get("annotations") or {}).get(ATTEMPT_ANNOTATION))
    return int(text) if text.isdigit() and int(text) > 0 else 1


def holds_snapshot(cr: Obj) -> bool:
    """True for a Completed DataUpload whose repository snapshot must be forgotten when it is deleted."""
    status = status_of(cr)
    return (
        cr.get("kind") == DATAUPLOAD_KIND and status.get("phase") == Phase.COMPLETED and bool(status.get("snapshotID"))
    )


def true_conditions(obj: Obj | None) -> dict[str, Obj]:
    """The conditions of a Job/pod whose status is True, by type."""
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return {str(c.get("type")): c for c in conditions if c.get("status") == "True"}


def job_finished(job: Obj | None) -> bool:
    return bool(true_conditions(job).keys() & {"Complete", "Failed"})


def termination(pod: Obj | None) -> str | None:
    """The mover container's termination message, if it ended."""
    if pod is None:
        return None
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (cs.get("state") or {}).get("terminated")
        if terminated is not None:
            return str(terminated.get("message") or "")
    return None


def pod_start_problem(pod: Obj, events: Sequence[Obj] = ()) -> Cause | None:
    """Why a mover pod is not starting (None when it is fine or simply on its way: ``launcher.failures``)."""
    return start_failure(pod, events)


def volume_not_bound_yet(pod: Obj) -> bool:
    """Whether the scheduler holds the pod only because a PVC it mounts is not bound yet."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("reason") == "Unschedulable":
            return UNBOUND_CLAIMS in str(cond.get("message") or "")
    return False


def operation_timeout(cr: Obj) -> float:
    """``spec.operationTimeout`` in seconds (ConfigurationError when it is not a duration)."""
    value = spec_of(cr).get("operationTimeout")
    return parse_duration(str(value), "spec.operationTimeout") if value else DEFAULT_OPERATION_TIMEOUT_SECONDS


def waited_too_long(cr: Obj, now: float) -> bool:
    """Whether a resource wait of this CR has lasted longer than its operationTimeout."""
    return age(status_of(cr).get("acceptedTimestamp"), now) > operation_timeout(cr)


def unbound_claim(exposed: Exposed, namespace: str) -> str:
    """What a backup waits for before its Job may be created ('' when its PVC is Bound or binds
    with its pod, as WaitForFirstConsumer classes do): a pod of an unbound Immediate PVC is only
    reported Unschedulable, so a slow snapshot clone would fail it after ``podStartTimeout``."""
    binding = exposed.binding
    if binding is None or binding.phase == "Bound" or binding.binding_mode == "WaitForFirstConsumer":
        return ""
    if not binding.storage_class:
        where = "no StorageClass: a PersistentVolume must be bound to it by hand"
    elif not binding.binding_mode:
        where = f"StorageClass {binding.storage_class} not found"
    else:
        where = f"StorageClass {binding.storage_class}, provisioner {binding.provisioner or '?'}"
    event = f"last Event {binding.last_event}" if binding.last_event else "no Event about it yet"
    return f"PVC {namespace}/{exposed.claim} to be Bound ({where}; {event})"


def validate_spec(cr: Obj) -> str:
    """Why the CR can never work ('' when it can), naming the field and its value (``launcher.validation``)."""
    return spec_problem(cr)


def snapshot_wait(cr: Obj, vs: Obj | None, now: float) -> Waiting | Failed | None:
    """How a backup's source VolumeSnapshot holds exposure up (None: it is ready to be taken over)."""
    spec = spec_of(cr)
    where = f"VolumeSnapshot {spec.get('sourceNamespace')}/{(spec.get('csiSnapshot') or {}).get('volumeSnapshot', '')}"
    if vs is None:
        if waited_too_long(cr, now):
            return Failed(f"{where} does not exist (waited {operation_timeout(cr):.0f}s)")
        return Waiting(f"{where} to exist")
    st = vs.get("status") or {}
    if st.get("readyToUse") and st.get("boundVolumeSnapshotContentName"):
        return None
    if waited_too_long(cr, now):
        return Failed(f"{where} did not become ReadyToUse within {operation_timeout(cr):.0f}s (status: {st or 'none'})")
    return Waiting(f"{where} to become ReadyToUse")


# --- the decisions ---------------------------------------------------------------------------------


def decide(obs: Observation) -> list[Action]:
    """The actions for one observation of one CR (empty: nothing to do)."""
    cr = obs.cr
    if spec_of(cr).get("datamover") != obs.settings.datamover_name:
        return []  # another mover's CR: never touched
    if (cr.get("metadata") or {}).get("deletionTimestamp"):
        return deleted(obs)
    phase = phase_of(cr)
    if phase in TERMINAL_PHASES:
        return finish(obs)
    if spec_of(cr).get("cancel") is True:
        canceled = cancel(obs, phase)
        if canceled:
            return canceled
    if phase == Phase.NEW:
        return accept(obs)
    if phase == Phase.ACCEPTED:
        return prepare(obs)
    return supervise(obs)


def fail(message: str, reason: str = "Failed") -> list[Action]:
    return [SetPhase(Phase.FAILED, reason, message)]


def wait(obs: Observation, what: str, *, announce: bool = False, timed: bool = True) -> list[Action]:
    """Requeue; before the Job runs, the prepare timeout ends the wait. ``announce``: a wait that
    holds the CR up (not a step's moment), told in an Event once it lasted a few seconds.

    The prepare clock runs from acceptance (or the latest retry) and, once the mover Job exists,
    from the Job's creation. ``timed=False``: a wait for a mover slot (the launcher's own limits,
    a running prune) is not preparation and has no timeout, so maintenance or a busy cluster never
    fails a backup."""
    actions: list[Action] = []
    start = prepare_clock_start(obs)
    limit = obs.settings.prepare_timeout_seconds
    if timed and phase_of(obs.cr) in (Phase.NEW, Phase.ACCEPTED) and start and age(start, obs.now) > limit:
        actions += fail(f"timed out after {limit:.0f}s preparing: {what}", "PrepareTimeout")
    lasted = bool(start) and age(start, obs.now) >= WAIT_NOTICE_AFTER_SECONDS
    return [*actions, Requeue(WAIT_REQUEUE_SECONDS, what, announce=announce and lasted and not actions)]


def prepare_clock_start(obs: Observation) -> str | None:
    """When the current preparation began: acceptance, a later retry, or a later Job creation."""
    accepted = status_of(obs.cr).get("acceptedTimestamp")
    annotations = (obs.cr.get("metadata") or {}).get("annotations") or {}
    later = [annotations.get(RETRIED_ANNOTATION)]
    if obs.job is not None:
        later.append((obs.job.get("metadata") or {}).get("creationTimestamp"))
    for moment in later:
        if moment and accepted and (parse_time(moment) or 0) > (parse_time(accepted) or 0):
            accepted = moment
    return str(accepted) if accepted else None


def deleted(obs: Observation) -> list[Action]:
    """A CR being deleted: forget its snapshot first when it holds one, then clean up."""
    has_finalizer = FINALIZER in finalizers_of(obs.cr)
    done: list[Action] = [Cleanup(keep_job=False), *([RemoveFinalizer()] if has_finalizer else [])]
    if not (has_finalizer and holds_snapshot(obs.cr)):
        return done
    snapshot = status_of(obs.cr).get("snapshotID")
    if obs.forget_job is None:
        if obs.forget_problem:
            return [PostEvent("Warning", "ForgetFailed", f"snapshot not forgotten: {obs.forget_problem}"), *done]
        return [StartForget(), Requeue(WAIT_REQUEUE_SECONDS, "the forget Job")]
    conditions = true_conditions(obs.forget_job)
    if "Complete" in conditions:
        event = PostEvent(
            "Normal", "SnapshotForgotten", f"repository snapshot {snapshot} forgotten; maintenance frees its data"
        )
    elif "Failed" in conditions:
        event = PostEvent(
            "Warning",
            "ForgetFailed",
            f"could not forget repository snapshot {snapshot} after {FORGET_RETRIES + 1} attempts "
            "(storage unreachable?); "
            "run `snapmover forget` by hand",
        )
    else:
        return [Requeue(WAIT_REQUEUE_SECONDS, "the forget Job to finish")]
    return [event, DeleteForgetJob(), *done]


def finish(obs: Observation) -> list[Action]:
    """A terminal CR: clean up, drop the finalizer, delete the Job after its retention."""
    cr, actions = obs.cr, list[Action]()
    status = status_of(cr)
    if obs.owns_volumes:
        actions.append(Cleanup(keep_job=True))
        if status.get("phase") == Phase.COMPLETED and cr.get("kind") == DATAUPLOAD_KIND:
            actions.append(CountBytes(int((status.get("progress") or {}).get("totalBytes") or 0)))
    if FINALIZER in finalizers_of(cr) and not holds_snapshot(cr):
        actions.append(RemoveFinalizer())
    if obs.job is not None:
        remaining = obs.settings.job_retention_seconds - age(status.get("completionTimestamp"), obs.now)
        if remaining <= 0:
            actions.append(DeleteJob())
        else:
            actions.append(Requeue(min(remaining + 0.5, RETENTION_REQUEUE_MAX_SECONDS), "the Job's retention"))
    return actions


def cancel(obs: Observation, phase: str) -> list[Action]:
    """Cancel before the mover runs (or after it died); empty when the mover handles it."""
    running = any((p.get("status") or {}).get("phase") == "Running" for p in obs.pods)
    if phase in (Phase.NEW, Phase.ACCEPTED) or (phase == Phase.PREPARED and not running):
        return [
            *([DeleteJob()] if obs.job is not None else []),
            SetPhase(Phase.CANCELED, "Canceled", "canceled before the mover started"),
        ]
    if phase == Phase.IN_PROGRESS and (obs.job is None or "Failed" in true_conditions(obs.job)):
        return [SetPhase(Phase.CANCELED, "Canceled", "canceled")]
    return []


def accept(obs: Observation) -> list[Action]:
    """New → Accepted, when the spec can work and the prepare queue has room."""
    problem = validate_spec(obs.cr)
    if problem:
        return fail(problem)
    if obs.preparing >= obs.settings.prepare_queue_length:
        return [Requeue(QUEUE_FULL_REQUEUE_SECONDS, "a place in the prepare queue")]
    fields = {"acceptedByNode": obs.settings.identity, "acceptedTimestamp": rfc3339(obs.now)}
    return [SetPhase(Phase.ACCEPTED, "Accepted", fields=fields, add_finalizer=True)]


def prepare(obs: Observation) -> list[Action]:
    """Accepted: expose the volume, then create the Job once a slot is free, then supervise."""
    if obs.job is not None and attempt_of(obs.job) < attempt_of(obs.cr):
        return [DeleteJob(), Requeue(WAIT_REQUEUE_SECONDS, "the dead mover's Job to go")]
    exposure = obs.exposure
    if exposure is None:
        return [Expose()]
    if isinstance(exposure, Waiting):
        return wait(obs, exposure.what, announce=True)
    if isinstance(exposure, Failed):
        return fail(exposure.message)
    if obs.job is not None:
        return supervise(obs)
    if exposure.claim_uid is None:
        return wait(obs, f"PVC {exposure.claim} to appear")
    pending = unbound_claim(exposure, str((obs.cr.get("metadata") or {}).get("namespace") or ""))
    if pending:
        return wait(obs, pending)
    if obs.free_slot:  # the PVC is ready: only the launcher's limits (or a prune) hold the Job
        return wait(obs, f"a free mover slot ({obs.free_slot})", announce=True, timed=False)
    return [CreateJob(exposure), Requeue(WAIT_REQUEUE_SECONDS, "the mover pod to be created")]


def supervise(obs: Observation) -> list[Action]:
    """Prepared / InProgress / Canceling: the safety net around the mover."""
    phase, job, pod = phase_of(obs.cr), obs.job, obs.pod
    if job is None:
        if phase in (Phase.IN_PROGRESS, Phase.CANCELING, Phase.PREPARED):
            return fail("the mover Job disappeared before the CR reached a final phase")
        return wait(obs, "the mover Job to be created")
    conditions = true_conditions(job)
    finished = conditions.get("Complete") or conditions.get("Failed")
    if finished is not None and pod is not None and termination(pod) is None:
        # the Job's condition can reach the cache before its pod's final status: the
        # termination message carries the result, so give the pod watch a moment
        ended = finished.get("lastTransitionTime")
        if ended is None or age(ended, obs.now) < POD_STATUS_GRACE_SECONDS:
            return [Requeue(WAIT_REQUEUE_SECONDS, "the mover pod's final status")]
    if "Complete" in conditions:
        return succeeded(obs)
    if "Failed" in conditions:
        failed = conditions["Failed"]
        cause = classify(pod, obs.events, job)
        return retry_dead_mover(obs, pod, failed, cause) or job_failed(pod, failed, cause)
    lost = lost_with_node(obs)
    if lost is not None:
        return retry_dead_mover(obs, pod, {}, lost, death=lost.message)
    return running(obs, job, pod)


def lost_with_node(obs: Observation) -> Cause | None:
    """A mover pod gone with its node: Kubernetes deletes the pods of a node that stopped
    reporting (not Ready) once their toleration of the ``unreachable``/``not-ready`` taint ends, but
    the pod stays Terminating while its kubelet is gone and the Job would wait, or start a pod
    the scheduler cannot place (a volume bound to that node). None when no pod of the current Job
    is being deleted on a node that is not Ready."""
    for pod in obs.current_pods:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        node = (pod.get("spec") or {}).get("nodeName")
        if node in obs.lost_nodes and meta.get("deletionTimestamp") and status.get("phase") not in ENDED_POD_PHASES:
            return Cause(
                "NodeLost",
                f"the mover pod {meta.get('name')} was lost with node {node}: the node is not Ready and "
                "Kubernetes deleted the pod when its toleration of the unreachable node ended (how long "
                "that takes: tolerations in the launcher ConfigMap, else Kubernetes' default of 300s)",
            )
    return None


def running(obs: Observation, job: Obj, pod: Obj | None) -> list[Action]:
    """A Job that has not finished: is its pod starting, running, or stuck?"""
    if pod is None:
        return wait(obs, "the mover pod to be created")
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    node = (pod.get("spec") or {}).get("nodeName") or ""
    problem = pod_start_problem(pod, obs.events)
    if problem and volume_not_bound_yet(pod):
        # kube-scheduler keeps the pod unschedulable until its PVC is provisioned (from the
        # snapshot, which can take long): preparation, bounded by the prepare timeout
        return wait(obs, f"the mover's volume to be provisioned ({problem.reason}: {problem.message})")
    started = phase_of(obs.cr) != Phase.ACCEPTED  # the pod ran (Prepared) or the mover wrote InProgress:
    # a start problem in the pod cache is then stale (the kubelet's status can lag the mover's writes)
    if problem and not started and age(meta.get("creationTimestamp"), obs.now) > obs.settings.pod_start_timeout_seconds:
        limit = f"{obs.settings.pod_start_timeout_seconds:.0f}s"
        message = f"the mover pod {meta.get('name')} cannot start (after {limit}): {problem.message}"
        return [SetPhase(Phase.FAILED, problem.reason, message), DeleteJob(), Cleanup(keep_job=True)]
    if phase_of(obs.cr) == Phase.ACCEPTED and status.get("phase") == "Running":
        note = f"mover Job {(job.get('metadata') or {}).get('name')} runs on node {node}"
        return [SetPhase(Phase.PREPARED, "Prepared", note=note, fields={"node": node})]
    if problem:
        return wait(obs, f"the mover pod to start ({problem.reason}: {problem.message})")
    if phase_of(obs.cr) == Phase.ACCEPTED and status.get("phase") in (None, "Pending"):
        return wait(obs, f"the mover pod {meta.get('name')} to be scheduled and start")  # under the prepare timeout
    return [Requeue(SUPERVISE_REQUEUE_SECONDS, "the mover")]


def result_of(pod: Obj | None) -> Mapping[str, Any] | None:
    term = termination(pod)
    return decode_termination_message(term) if term else None


def succeeded(obs: Observation) -> list[Action]:
    """The Job completed: a backup takes the mover's result, a restore rebinds its volume."""
    msg = result_of(obs.pod)
    if obs.cr.get("kind") != DATAUPLOAD_KIND:
        return [Rebind()] if obs.rebind is None else rebind(obs, msg)
    if msg and msg.get("phase") == Phase.COMPLETED and msg.get("snapshotID"):
        fields = {"snapshotID": msg["snapshotID"], "incrementalBytes": msg.get("incrementalBytes", 0)}
        return [SetPhase(Phase.COMPLETED, "Completed", fields=fields)]
    return fail("the mover exited without completing the backup", "MoverExited")


def mover_death(pod: Obj | None, condition: Obj) -> str:
    """How a mover pod ended without a result, '' when it did not simply die (a crash with a
    message, a deadline): OOMKilled, killed by a signal, evicted, or gone with its node.

    Decides whether to retry; the words come from ``launcher.failures.classify`` when it
    recognises the death (see :func:`retry_dead_mover`)."""
    if condition.get("reason") == "DeadlineExceeded":
        return ""
    if pod is None:
        return f"the mover pod is gone ({condition.get('reason') or 'Job failed'}: {condition.get('message') or ''})"
    status = pod.get("status") or {}
    name = (pod.get("metadata") or {}).get("name")
    if status.get("reason") in ("Evicted", "NodeLost", "Terminated") or "DisruptionTarget" in true_conditions(pod):
        return f"the mover pod {name} was {status.get('reason') or 'disrupted'}: {status.get('message') or ''}".strip()
    for cs in status.get("containerStatuses") or []:
        ended = (cs.get("state") or {}).get("terminated") or {}
        code = int(ended.get("exitCode") or 0)
        if ended.get("reason") == "OOMKilled" or code >= 128:
            return f"the mover container of pod {name} ended {ended.get('reason') or 'killed'} (exit code {code})"
    return ""


def retry_dead_mover(
    obs: Observation, pod: Obj | None, condition: Obj, classified: Cause | None = None, death: str = ""
) -> list[Action]:
    """A mover that died without a result: start the next attempt while the bounds allow, or fail
    saying how many attempts died (with the cause ``launcher.failures`` reads when it has one);
    empty when the mover ended on its own terms. ``death``: how it died, when the caller knows
    (a node lost) rather than :func:`mover_death` reading it from the failed Job's pod."""
    cause = death or mover_death(pod, condition)
    if not cause or result_of(pod) is not None:
        return []
    attempt, allowed = attempt_of(obs.cr), 1 + obs.settings.mover_retries
    timeout = operation_timeout(obs.cr)
    if attempt >= allowed:
        # the reason and remedy of the last death when launcher.failures recognises it (OOMKilled …)
        reason, last = (classified.reason, classified.message) if classified is not None else ("MoverFailed", cause)
        return fail(
            f"the mover died in each of {attempt} attempt(s) (moverRetries {allowed - 1}); last: {last}", reason
        )
    if waited_too_long(obs.cr, obs.now):
        return fail(
            f"the mover died ({cause}); not retried: the operationTimeout {timeout:.0f}s has passed", "MoverFailed"
        )
    message = f"mover attempt {attempt} of {allowed} died ({cause}); starting attempt {attempt + 1}"
    annotations = {ATTEMPT_ANNOTATION: str(attempt + 1), RETRIED_ANNOTATION: rfc3339(obs.now)}
    return [
        SetPhase(Phase.ACCEPTED, "MoverRetry", message, annotations=annotations, warning=True),
        Requeue(WAIT_REQUEUE_SECONDS, "the next mover attempt"),
    ]


def job_failed(pod: Obj | None, condition: Obj, cause: Cause | None = None) -> list[Action]:
    """The Job failed: Canceled when the mover says so, else Failed with the best detail there is:
    the mover's own message, else the ``cause`` Kubernetes states (OOMKilled …), else its log tail."""
    msg = result_of(pod)
    if msg and msg.get("phase") == Phase.CANCELED:
        return [SetPhase(Phase.CANCELED, "Canceled", msg.get("message", "canceled"))]
    if cause is not None and not (msg or {}).get("message"):
        return fail(f"mover Job failed: {cause.message}", cause.reason)
    term = (termination(pod) or "").strip()[-1500:]
    detail = (msg or {}).get("message") or term or condition.get("message") or condition.get("reason")
    return fail(f"mover Job failed: {detail}", "MoverFailed")


def rebind(obs: Observation, result: Mapping[str, Any] | None) -> list[Action]:
    """One step of handing the restored PV to the target PVC (DESIGN §3, DD success)."""
    view, cr = obs.rebind, obs.cr
    assert view is not None
    target_ref = spec_of(cr).get("targetVolume") or {}
    tns, tname = target_ref.get("namespace", ""), target_ref.get("pvc", "")
    target = view.target
    if target is None:
        return fail(f"target PVC {tns}/{tname} does not exist")
    pv = view.volume
    if (target.get("status") or {}).get("phase") == "Bound":
        actions: list[Action] = []
        if pv is not None:
            original = ((pv.get("metadata") or {}).get("annotations") or {}).get(ORIGINAL_RECLAIM)
            if original and (pv.get("spec") or {}).get("persistentVolumeReclaimPolicy") != original:
                actions.append(PatchVolume(pv["metadata"]["name"], reclaim_patch(original)))
        total = int((result or {}).get("totalBytes", 0) or 0)
        progress = {"totalBytes": total, "bytesDone": total}
        return [*actions, SetPhase(Phase.COMPLETED, "Completed", fields={"progress": progress}, count_bytes=total)]
    if pv is None:
        return fail("the restored volume is gone before it could be handed to the target PVC")
    return hand_over(obs, target, pv, view.restore_claim)


def hand_over(obs: Observation, target: Obj, pv: Obj, restore_claim: bool) -> list[Action]:
    """Retain the restored PV, drop the restore PVC, point the PV's claimRef at the target."""
    meta, spec = pv.get("metadata") or {}, pv.get("spec") or {}
    name, uid = meta["name"], obs.cr["metadata"]["uid"]
    tns, tname = (target.get("metadata") or {}).get("namespace"), (target.get("metadata") or {}).get("name")
    actions: list[Action] = []
    if ORIGINAL_RECLAIM not in (meta.get("annotations") or {}):
        actions.append(PatchVolume(name, retain_volume_patch(spec.get("persistentVolumeReclaimPolicy"), uid)))
    if restore_claim:
        actions.append(DeleteRestoreClaim())
    ref = spec.get("claimRef") or {}
    if ref.get("name") != tname or ref.get("namespace") != tns:
        actions.append(PatchVolume(name, claim_ref_patch(target)))
        actions.append(PostEvent("Normal", "VolumeRebound", f"restored volume {name} handed to PVC {tns}/{tname}"))
    return [*actions, *wait(obs, f"target PVC {tns}/{tname} to bind to the restored volume {name}")]
