"""Why a mover pod failed or cannot start, with the remedy: pure classification over plain dicts.

Kubernetes states the cause of a dead or stuck pod in several places — the container's
``terminated.reason`` (OOMKilled), the pod's ``status.reason`` (Evicted, set by the kubelet),
its conditions (PodScheduled=False/Unschedulable, with the scheduler's message), the
container's ``waiting`` reason (ErrImagePull, ContainerCreating …), the Events posted about the
pod (FailedMount, FailedAttachVolume from the kubelet / attach-detach controller) and the Job's
Failed condition (DeadlineExceeded). :func:`classify` reads all of them and returns one
:class:`Cause` — a short reason (used as the Event reason) and a message that names the cause
and what to change (usually a key of the launcher ConfigMap). ``launcher.phases`` calls it when
a mover Job fails or its pod does not start; the retry of a dead mover calls it for the message
when no retry is left. No I/O: unit-tested over real-shaped dicts
(``tests/unit/launcher/test_failures.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

Obj = Mapping[str, Any]

IMAGE_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"})
CONTAINER_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})
MOUNT_EVENT_REASONS = ("FailedMount", "FailedAttachVolume")
CONTAINER_CREATING = "ContainerCreating"
NOISE_REASONS = frozenset({"MissingClusterDNS"})  # warnings a kubelet posts for healthy pods too
DETAIL_CHARS = 600  # kubelet/scheduler text kept in a message (a CR status is no log)


class Cause(NamedTuple):
    """A classified failure: ``reason`` (one CamelCase word) and a message a person can act on."""

    reason: str
    message: str


def clip(text: Any) -> str:
    """One line of at most DETAIL_CHARS characters."""
    line = " ".join(str(text or "").split())
    return line if len(line) <= DETAIL_CHARS else line[: DETAIL_CHARS - 1] + "…"


def mover_container(pod: Obj) -> tuple[Obj, Obj]:
    """(spec, status) of the pod's first container (a mover pod has one)."""
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
    return containers[0] or {}, statuses[0] or {}


def container_state(status: Obj, state: str) -> Obj | None:
    """The container's current ``state`` entry (``terminated``/``waiting``), else its ``lastState``'s."""
    for where in ("state", "lastState"):
        found = (status.get(where) or {}).get(state)
        if found is not None:
            return found  # type: ignore[no-any-return]
    return None


def newest_event(
    events: Sequence[Obj], about: Obj | None, reasons: Sequence[str] = (), types: Sequence[str] = ("Warning",)
) -> Obj | None:
    """The newest Event about the object ``about`` (None: any) of one of ``reasons`` (default: of
    one of ``types``), or None."""
    name = ((about or {}).get("metadata") or {}).get("name")
    chosen = [
        e
        for e in events
        if (name is None or (e.get("involvedObject") or {}).get("name") == name)
        and (e.get("reason") in reasons if reasons else e.get("type") in types)
    ]
    return max(chosen, key=event_time, default=None)


def event_time(event: Obj) -> str:
    """When an Event last happened (RFC 3339 text sorts in time order)."""
    series = (event.get("series") or {}).get("lastObservedTime")
    meta_time = (event.get("metadata") or {}).get("creationTimestamp")
    return str(series or event.get("lastTimestamp") or event.get("eventTime") or meta_time or "")


def out_of_memory(pod: Obj) -> Cause | None:
    spec, status = mover_container(pod)
    terminated = container_state(status, "terminated")
    if terminated is None or terminated.get("reason") != "OOMKilled":
        return None
    resources = spec.get("resources") or {}
    limit = (resources.get("limits") or {}).get("memory")
    request = (resources.get("requests") or {}).get("memory")
    if limit:
        what = f"the mover was killed for using more memory than its limit of {limit}"
    else:
        what = "the mover was killed by the kernel for lack of memory (no memory limit is set: the node ran out)"
    peak = f" (request {request})" if request else ""
    return Cause(
        "OOMKilled",
        f"{what}{peak}; the kubelet does not report the peak, the limit is where it was killed. Raise "
        "jobResources.limits.memory in the launcher ConfigMap (a default backup peaks at about 256Mi) "
        "or lower its parallelism (dataMoverConfig ParallelFilesUpload/ParallelFilesDownload)",
    )


def evicted(pod: Obj) -> Cause | None:
    status = pod.get("status") or {}
    if status.get("reason") != "Evicted":
        return None
    return Cause(
        "Evicted",
        f"the kubelet evicted the mover pod: {clip(status.get('message')) or 'no reason given'}; give the mover "
        "requests that match its use (jobResources in the launcher ConfigMap) or a priorityClassName",
    )


def deadline(job: Obj | None) -> Cause | None:
    for cond in ((job or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Failed" and cond.get("status") == "True" and cond.get("reason") == "DeadlineExceeded":
            seconds = ((job or {}).get("spec") or {}).get("activeDeadlineSeconds")
            limit = f" of {seconds}s" if seconds else ""
            return Cause(
                "DeadlineExceeded",
                f"the mover Job ran longer than its deadline{limit} and was stopped; raise jobDeadlineSeconds "
                "in the launcher ConfigMap for volumes this large or slow",
            )
    return None


def killed_by_node(pod: Obj) -> Cause | None:
    """Another reason the kubelet or node lifecycle gave for ending the pod (NodeLost, Shutdown …)."""
    status = pod.get("status") or {}
    reason = status.get("reason")
    if not reason or status.get("phase") not in ("Failed", "Unknown"):
        return None
    return Cause(str(reason), f"the node ended the mover pod ({reason}): {clip(status.get('message')) or '-'}")


def waiting(pod: Obj) -> Cause | None:
    spec, status = mover_container(pod)
    state = (status.get("state") or {}).get("waiting") or {}
    reason = state.get("reason")
    detail = clip(state.get("message"))
    if reason in IMAGE_REASONS:
        return Cause(
            str(reason),
            f"the image {spec.get('image', '?')} cannot be pulled ({reason}: {detail or '-'}); check image, "
            "imagePullPolicy and imagePullSecrets in the launcher ConfigMap",
        )
    if reason in CONTAINER_REASONS:
        return Cause(str(reason), f"the mover container cannot be created ({reason}): {detail or '-'}")
    return None


def unschedulable(pod: Obj) -> Cause | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if (cond.get("type"), cond.get("status"), cond.get("reason")) == ("PodScheduled", "False", "Unschedulable"):
            return Cause(
                "Unschedulable",
                f"no node can run the mover pod: {clip(cond.get('message')) or 'the scheduler gave no reason'}; "
                "check nodeSelector, tolerations and jobResources in the launcher ConfigMap against your nodes",
            )
    return None


def mount_failure(pod: Obj, events: Sequence[Obj]) -> Cause | None:
    event = newest_event(events, pod, MOUNT_EVENT_REASONS)
    if event is None:
        return None
    return Cause(
        str(event.get("reason")),
        f"a volume of the mover pod cannot be mounted: {clip(event.get('message'))}",
    )


def stuck_creating(pod: Obj, events: Sequence[Obj]) -> Cause | None:
    _spec, status = mover_container(pod)
    if ((status.get("state") or {}).get("waiting") or {}).get("reason") != CONTAINER_CREATING:
        return None
    event = newest_event([e for e in events if e.get("reason") not in NOISE_REASONS], pod)
    last = f"; last warning: {event.get('reason')}: {clip(event.get('message'))}" if event else ""
    node = (pod.get("spec") or {}).get("nodeName") or "?"
    return Cause("ContainerCreating", f"the mover pod is stuck in ContainerCreating on node {node}{last}")


def classify(pod: Obj | None, events: Sequence[Obj] = (), job: Obj | None = None) -> Cause | None:
    """The cause of a failed or stuck mover pod, or None when Kubernetes states none it knows.

    ``pod`` is the mover pod (None when it is gone), ``events`` the Events about it (any order;
    others are ignored), ``job`` its Job. A Job deadline, an eviction and an OOM kill are
    checked first (they end a running pod); then why a pod cannot start: image, container
    creation, scheduling, mounting, and last a pod merely stuck in ContainerCreating.
    """
    found = deadline(job)
    if found is not None or pod is None:
        return found
    for check in (evicted, out_of_memory, killed_by_node, waiting, unschedulable):
        found = check(pod)
        if found is not None:
            return found
    return mount_failure(pod, events) or stuck_creating(pod, events)


def start_failure(pod: Obj, events: Sequence[Obj] = ()) -> Cause | None:
    """Why a pod that has not started cannot start (None while it is merely on its way).

    A pod not scheduled yet without the scheduler's verdict is on its way (a volume may still be
    binding); a scheduled pod in ContainerCreating is stuck when it stays there (its caller
    applies ``podStartTimeout``).
    """
    if (pod.get("status") or {}).get("phase") not in (None, "Pending"):
        return None
    return classify(pod, events)
