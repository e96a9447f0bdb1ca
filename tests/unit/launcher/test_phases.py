"""launcher.phases: every transition of DESIGN §3 decided over plain dicts, no cluster."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from jobs.contract import FINALIZER, Phase
from launcher import phases
from launcher.config import LauncherConfig
from launcher.objects import ORIGINAL_RECLAIM
from launcher.phases import (
    Cleanup,
    CountBytes,
    CreateJob,
    DeleteForgetJob,
    DeleteJob,
    DeleteRestoreClaim,
    Expose,
    Exposed,
    Failed,
    Observation,
    PatchVolume,
    PostEvent,
    Rebind,
    RebindView,
    RemoveFinalizer,
    Requeue,
    SetPhase,
    Settings,
    StartForget,
    Waiting,
    decide,
    rfc3339,
)

NOW = 1_800_000_000.0
DEFAULTS = Settings.from_config(LauncherConfig(namespace="snapmover"), identity="launcher")
SETTINGS = replace(DEFAULTS, prepare_timeout_seconds=100, pod_start_timeout_seconds=20, job_retention_seconds=30)


def ago(seconds: float) -> str:
    return rfc3339(NOW - seconds)


def du(phase: str | None = None, **status: Any) -> dict[str, Any]:
    cr: dict[str, Any] = {
        "kind": "DataUpload",
        "metadata": {"name": "b1", "namespace": "velero", "uid": "u-1", "finalizers": [FINALIZER]},
        "spec": {
            "datamover": "snapmover",
            "backupStorageLocation": "default",
            "sourceNamespace": "app",
            "sourcePVC": "data",
            "snapshotType": "CSI",
            "csiSnapshot": {"volumeSnapshot": "snap"},
        },
    }
    if phase:
        cr["status"] = {"phase": phase, "acceptedTimestamp": ago(10), **status}
    return cr


def dd(phase: str | None = None, **status: Any) -> dict[str, Any]:
    cr = du(phase, **status)
    cr["kind"] = "DataDownload"
    cr["spec"] = {
        "datamover": "snapmover",
        "backupStorageLocation": "default",
        "snapshotID": "ab" * 32,
        "sourceNamespace": "app",
        "targetVolume": {"namespace": "app", "pvc": "restored"},
    }
    return cr


def job(*conditions: str, ended: float = 60) -> dict[str, Any]:
    return {
        "metadata": {"name": "snapmover-du-b1"},
        "status": {"conditions": [{"type": c, "status": "True", "lastTransitionTime": ago(ended)} for c in conditions]},
    }


def pod(
    phase: str = "Running",
    *,
    term: dict[str, Any] | str | None = None,
    waiting: str | None = None,
    created: float = 1,
    unschedulable: bool = False,
) -> dict[str, Any]:
    state: dict[str, Any] = {}
    if term is not None:
        state["terminated"] = {"message": term if isinstance(term, str) else json.dumps(term)}
    if waiting:
        state["waiting"] = {"reason": waiting, "message": "pull failed"}
    conditions = []
    if unschedulable:
        conditions.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1"})
    return {
        "metadata": {"name": "p1", "creationTimestamp": ago(created)},
        "spec": {"nodeName": "node-a"},
        "status": {"phase": phase, "conditions": conditions, "containerStatuses": [{"state": state}]},
    }


def obs(cr: dict[str, Any], **kw: Any) -> Observation:
    return Observation(cr=cr, now=NOW, **{"settings": SETTINGS, **kw})


def only(actions: list[Any], kind: type) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


def phase_set(actions: list[Any]) -> SetPhase:
    (change,) = only(actions, SetPhase)
    return change  # type: ignore[no-any-return]


EXPOSED = Exposed("snapmover-du-b1", "Filesystem", "app", "data", claim_uid="pvc-uid")


# --- ownership and terminal phases -------------------------------------------------------------


def test_another_movers_cr_is_never_touched() -> None:
    cr = du()
    cr["spec"]["datamover"] = "velero"
    assert decide(obs(cr)) == []


@pytest.mark.parametrize("terminal", [Phase.COMPLETED, Phase.FAILED, Phase.CANCELED])
@pytest.mark.parametrize("seen", [job("Complete"), job("Failed"), None])
def test_terminal_phases_never_change(terminal: str, seen: dict[str, Any] | None) -> None:
    cr = du(terminal, completionTimestamp=ago(5))
    cr["spec"]["cancel"] = True
    actions = decide(obs(cr, job=seen, pods=[pod(term={"phase": "Failed", "message": "x"})]))
    assert only(actions, SetPhase) == []


def test_terminal_cleans_up_and_keeps_the_job_for_its_retention() -> None:
    actions = decide(obs(du(Phase.FAILED, completionTimestamp=ago(5)), job=job("Failed"), owns_volumes=True))
    assert Cleanup(keep_job=True) in actions and RemoveFinalizer() in actions
    (requeue,) = only(actions, Requeue)
    assert requeue.delay == pytest.approx(25.5)
    assert DeleteJob() not in actions


def test_terminal_job_is_deleted_after_its_retention() -> None:
    actions = decide(obs(du(Phase.FAILED, completionTimestamp=ago(31)), job=job("Failed")))
    assert DeleteJob() in actions and only(actions, Requeue) == []


def test_completed_backup_keeps_its_finalizer_and_counts_bytes_at_cleanup() -> None:
    cr = du(Phase.COMPLETED, snapshotID="s1", completionTimestamp=ago(1), progress={"totalBytes": 42})
    actions = decide(obs(cr, owns_volumes=True))
    assert RemoveFinalizer() not in actions
    assert CountBytes(42) in actions


def test_terminal_without_leftovers_only_drops_the_finalizer() -> None:
    assert decide(obs(du(Phase.CANCELED, completionTimestamp=ago(1)))) == [RemoveFinalizer()]


# --- deletion and forget -------------------------------------------------------------------------


def deleted(cr: dict[str, Any]) -> dict[str, Any]:
    cr["metadata"]["deletionTimestamp"] = ago(1)
    return cr


def test_deleted_cr_is_cleaned_up_and_released() -> None:
    assert decide(obs(deleted(du(Phase.ACCEPTED)))) == [Cleanup(keep_job=False), RemoveFinalizer()]


def test_deleted_cr_without_our_finalizer_is_only_cleaned_up() -> None:
    cr = deleted(du(Phase.COMPLETED, snapshotID="s1"))
    cr["metadata"]["finalizers"] = []
    assert decide(obs(cr)) == [Cleanup(keep_job=False)]


def test_deleted_backup_with_a_snapshot_starts_the_forget_job() -> None:
    actions = decide(obs(deleted(du(Phase.COMPLETED, snapshotID="s1"))))
    assert actions[0] == StartForget() and isinstance(actions[1], Requeue)


def test_forget_job_running_is_waited_for() -> None:
    actions = decide(obs(deleted(du(Phase.COMPLETED, snapshotID="s1")), forget_job=job()))
    assert [type(a) for a in actions] == [Requeue]


@pytest.mark.parametrize(("condition", "reason"), [("Complete", "SnapshotForgotten"), ("Failed", "ForgetFailed")])
def test_forget_result_is_posted_then_the_cr_released(condition: str, reason: str) -> None:
    actions = decide(obs(deleted(du(Phase.COMPLETED, snapshotID="s1")), forget_job=job(condition)))
    assert only(actions, PostEvent)[0].reason == reason and "s1" in only(actions, PostEvent)[0].message
    assert actions[1:] == [DeleteForgetJob(), Cleanup(keep_job=False), RemoveFinalizer()]


def test_forget_without_a_usable_location_warns_and_releases() -> None:
    actions = decide(obs(deleted(du(Phase.COMPLETED, snapshotID="s1")), forget_problem="no such location"))
    assert only(actions, PostEvent)[0].reason == "ForgetFailed" and RemoveFinalizer() in actions
    assert StartForget() not in actions


# --- New -> Accepted ------------------------------------------------------------------------------


def test_new_cr_is_accepted_with_our_identity_and_finalizer() -> None:
    change = phase_set(decide(obs(du(), settings=replace(DEFAULTS, identity="me"))))
    assert change.phase == Phase.ACCEPTED and change.add_finalizer
    assert change.fields == {"acceptedByNode": "me", "acceptedTimestamp": rfc3339(NOW)}


def test_full_prepare_queue_requeues_without_accepting() -> None:
    actions = decide(obs(du(), preparing=SETTINGS.prepare_queue_length))
    assert [type(a) for a in actions] == [Requeue] and actions[0].delay == 2.0


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("backupStorageLocation", "", "backupStorageLocation"),
        ("sourcePVC", "", "sourcePVC"),
        ("snapshotType", "Restic", "snapshotType"),
        ("csiSnapshot", {}, "volumeSnapshot"),
        ("operationTimeout", "soon", "operationTimeout"),
        ("dataMoverConfig", ["x"], "dataMoverConfig"),
        ("sourceNamespace", "../../kube-system", "spec.sourceNamespace '../../kube-system'"),
        ("dataMoverConfig", {"ParallelFilesUpload": "0"}, "dataMoverConfig.ParallelFilesUpload"),
    ],
)
def test_invalid_new_cr_fails_at_once_naming_the_field(field: str, value: Any, needle: str) -> None:
    cr = du()
    cr["spec"][field] = value
    change = phase_set(decide(obs(cr)))
    assert change.phase == Phase.FAILED and needle in change.message


def test_invalid_datadownload_needs_target_and_snapshot() -> None:
    cr = dd()
    cr["spec"]["snapshotID"] = ""
    assert "snapshotID" in phase_set(decide(obs(cr))).message
    cr = dd()
    cr["spec"]["targetVolume"] = {"pvc": "x"}
    assert "targetVolume" in phase_set(decide(obs(cr))).message


# --- Accepted: exposure, slots, Job creation, prepare timeout -------------------------------------


def test_accepted_first_exposes() -> None:
    assert decide(obs(du(Phase.ACCEPTED))) == [Expose()]


def test_exposure_waiting_requeues_before_the_prepare_timeout() -> None:
    actions = decide(obs(du(Phase.ACCEPTED), exposure=Waiting("VolumeSnapshot app/snap to exist")))
    assert actions == [Requeue(1.0, "VolumeSnapshot app/snap to exist", announce=True)]  # waiting 10 s: told
    fresh = du(Phase.ACCEPTED)
    fresh["status"]["acceptedTimestamp"] = ago(2)  # a moment's wait gets no Event
    assert decide(obs(fresh, exposure=Waiting("x"))) == [Requeue(1.0, "x")]
    # a step's own moment (the pod being created) is never announced
    assert not any(a.announce for a in only(decide(obs(du(Phase.ACCEPTED), exposure=EXPOSED)), Requeue))


def test_prepare_timeout_fails_naming_what_it_waited_for() -> None:
    cr = du(Phase.ACCEPTED, acceptedTimestamp=ago(101))
    change = phase_set(decide(obs(cr, exposure=Waiting("VolumeSnapshot app/snap to exist"))))
    assert change.reason == "PrepareTimeout" and "VolumeSnapshot app/snap" in change.message


def test_exposure_failure_fails_the_cr() -> None:
    change = phase_set(decide(obs(du(Phase.ACCEPTED), exposure=Failed("target PVC app/x is already bound"))))
    assert change.phase == Phase.FAILED and "already bound" in change.message


def test_exposed_without_a_free_slot_waits_for_one() -> None:
    actions = decide(obs(du(Phase.ACCEPTED), exposure=EXPOSED, free_slot="3 mover Jobs running"))
    assert CreateJob(EXPOSED) not in actions and "free mover slot" in only(actions, Requeue)[0].waiting_for


def test_a_wait_for_a_slot_or_a_prune_never_times_out() -> None:
    # accepted long past the prepare timeout (100 s), the PVC ready, a prune holding the Job back
    old = du(Phase.ACCEPTED, acceptedTimestamp=ago(5000))
    actions = decide(obs(old, exposure=EXPOSED, free_slot="prune Job p is pruning repository default/app"))
    assert only(actions, SetPhase) == [] and only(actions, CreateJob) == []
    assert only(actions, Requeue)[0].announce and "pruning" in only(actions, Requeue)[0].waiting_for


def test_the_job_created_after_a_long_queue_gets_its_own_prepare_clock() -> None:
    unplaced = pod("Pending", created=50)
    unplaced["spec"] = {}
    unplaced["status"] = {"phase": "Pending"}
    fresh_job = {**job(), "metadata": {"name": "snapmover-du-b1", "creationTimestamp": ago(50)}}
    queued_long = du(Phase.ACCEPTED, acceptedTimestamp=ago(5000))
    actions = decide(obs(queued_long, exposure=EXPOSED, job=fresh_job, pods=[unplaced]))
    assert only(actions, SetPhase) == []
    stale_job = {**job(), "metadata": {"name": "snapmover-du-b1", "creationTimestamp": ago(200)}}
    late = decide(obs(queued_long, exposure=EXPOSED, job=stale_job, pods=[unplaced]))
    assert phase_set(late).reason == "PrepareTimeout"


def test_exposed_with_a_slot_creates_the_job() -> None:
    actions = decide(obs(du(Phase.ACCEPTED), exposure=EXPOSED))
    assert actions[0] == CreateJob(EXPOSED) and isinstance(actions[-1], Requeue)


def test_exposed_claim_not_yet_cached_waits() -> None:
    exposure = Exposed("c", "Filesystem", "app", "data", claim_uid=None)
    actions = decide(obs(du(Phase.ACCEPTED), exposure=exposure))
    assert only(actions, CreateJob) == [] and "PVC c to appear" in only(actions, Requeue)[0].waiting_for


def test_restart_adoption_never_recreates_an_existing_job() -> None:
    actions = decide(obs(du(Phase.ACCEPTED), exposure=EXPOSED, job=job(), pods=[pod()]))
    assert only(actions, CreateJob) == [] and phase_set(actions).phase == Phase.PREPARED


def test_pod_running_moves_accepted_to_prepared_with_its_node() -> None:
    change = phase_set(decide(obs(du(Phase.ACCEPTED), exposure=EXPOSED, job=job(), pods=[pod()])))
    assert change.fields == {"node": "node-a"} and "node-a" in change.note


def test_pending_pod_requeues() -> None:
    actions = decide(obs(du(Phase.PREPARED), job=job(), pods=[pod("Pending")]))
    assert actions == [Requeue(5.0, "the mover")]


@pytest.mark.parametrize("problem", [{"waiting": "ImagePullBackOff"}, {"unschedulable": True}])
def test_pod_that_cannot_start_waits_then_fails(problem: dict[str, Any]) -> None:
    young = decide(obs(du(Phase.ACCEPTED), exposure=EXPOSED, job=job(), pods=[pod("Pending", **problem)]))
    assert only(young, SetPhase) == [] and "to start" in only(young, Requeue)[0].waiting_for
    old = decide(obs(du(Phase.ACCEPTED), exposure=EXPOSED, job=job(), pods=[pod("Pending", created=21, **problem)]))
    change = phase_set(old)
    assert change.reason == ("ImagePullBackOff" if problem.get("waiting") else "Unschedulable")
    assert "cannot start (after 20s)" in change.message and DeleteJob() in old and Cleanup(keep_job=True) in old


def creating(created: float) -> dict[str, Any]:
    """A scheduled mover pod whose container waits in ContainerCreating."""
    stuck = pod("Pending", created=created)
    stuck["status"]["containerStatuses"] = [{"state": {"waiting": {"reason": "ContainerCreating"}}}]
    return stuck


FAILED_MOUNT = {
    "type": "Warning",
    "reason": "FailedMount",
    "message": 'MountVolume.SetUp failed for volume "cloud-credentials" : secret "gone" not found',
    "involvedObject": {"kind": "Pod", "name": "p1"},
    "lastTimestamp": ago(2),
}


def test_pod_stuck_in_container_creating_fails_after_the_pod_start_timeout_with_the_mount_event() -> None:
    young = decide(obs(du(Phase.ACCEPTED), exposure=EXPOSED, job=job(), pods=[creating(5)], events=[FAILED_MOUNT]))
    assert only(young, SetPhase) == [] and "FailedMount" in only(young, Requeue)[0].waiting_for
    old = decide(obs(du(Phase.ACCEPTED), exposure=EXPOSED, job=job(), pods=[creating(21)], events=[FAILED_MOUNT]))
    change = phase_set(old)
    assert change.reason == "FailedMount" and 'secret "gone" not found' in change.message and DeleteJob() in old
    bare = phase_set(decide(obs(du(Phase.ACCEPTED), exposure=EXPOSED, job=job(), pods=[creating(21)])))
    assert bare.reason == "ContainerCreating" and "stuck in ContainerCreating on node node-a" in bare.message


@pytest.mark.parametrize("phase", [Phase.PREPARED, Phase.IN_PROGRESS])
def test_a_stale_start_problem_never_fails_a_mover_that_runs(phase: str) -> None:
    # the mover can write InProgress before the kubelet's Running reaches the pod cache
    actions = decide(obs(du(phase), job=job(), pods=[creating(60)], events=[FAILED_MOUNT]))
    assert only(actions, SetPhase) == [] and only(actions, DeleteJob) == []


def test_pod_not_scheduled_without_a_verdict_waits_for_the_prepare_timeout_only() -> None:
    unplaced = pod("Pending", created=50)
    unplaced["spec"] = {}
    unplaced["status"] = {"phase": "Pending"}
    actions = decide(obs(du(Phase.ACCEPTED), exposure=EXPOSED, job=job(), pods=[unplaced]))
    assert only(actions, SetPhase) == []
    late = decide(obs(du(Phase.ACCEPTED, acceptedTimestamp=ago(200)), exposure=EXPOSED, job=job(), pods=[unplaced]))
    assert phase_set(late).reason == "PrepareTimeout"


def test_oom_killed_mover_fails_naming_its_limit_and_the_remedy() -> None:
    killed = pod("Failed", term="last log line")
    killed["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] = "OOMKilled"
    killed["spec"]["containers"] = [{"name": "mover", "resources": {"limits": {"memory": "64Mi"}}}]
    no_retry = replace(SETTINGS, mover_retries=0)  # with retries left it is retried first (below)
    change = phase_set(decide(obs(du(Phase.IN_PROGRESS), job=job("Failed"), pods=[killed], settings=no_retry)))
    assert change.reason == "OOMKilled" and "limit of 64Mi" in change.message and "jobResources" in change.message


def test_the_movers_own_message_wins_over_the_kubernetes_cause() -> None:
    term = {"phase": "Failed", "message": "the mover was stopped by SIGTERM"}
    failed = job("Failed")
    failed["status"]["conditions"][0]["reason"] = "DeadlineExceeded"
    change = phase_set(decide(obs(du(Phase.IN_PROGRESS), job=failed, pods=[pod("Failed", term=term)])))
    assert change.reason == "MoverFailed" and "SIGTERM" in change.message


def bound(phase: str, **binding: str) -> Exposed:
    return replace(EXPOSED, binding=phases.ClaimBinding(phase, **binding))


def test_backup_job_waits_for_its_pvc_to_be_bound() -> None:
    pending = bound("Pending", storage_class="slow", binding_mode="Immediate", provisioner="ebs.csi.aws.com")
    actions = decide(obs(du(Phase.ACCEPTED), exposure=pending))
    assert only(actions, CreateJob) == [] and only(actions, SetPhase) == []
    assert "PVC velero/snapmover-du-b1 to be Bound" in only(actions, Requeue)[0].waiting_for
    ready = decide(obs(du(Phase.ACCEPTED), exposure=bound("Bound", storage_class="slow")))
    assert only(ready, CreateJob) == [CreateJob(bound("Bound", storage_class="slow"))]


def test_a_wait_for_first_consumer_pvc_binds_with_its_pod() -> None:
    later = bound("Pending", storage_class="local", binding_mode="WaitForFirstConsumer", provisioner="x")
    assert only(decide(obs(du(Phase.ACCEPTED), exposure=later)), CreateJob) == [CreateJob(later)]


@pytest.mark.parametrize(
    ("binding", "needles"),
    [
        (
            {"storage_class": "slow", "binding_mode": "Immediate", "provisioner": "rbd.csi.ceph.com",
             "last_event": "Provisioning: External provisioner is provisioning volume"},
            ("StorageClass slow, provisioner rbd.csi.ceph.com", "last Event Provisioning: External provisioner"),
        ),
        (
            {"storage_class": "gone", "last_event": 'ProvisioningFailed: storageclass.storage.k8s.io "gone" not found'},
            ("StorageClass gone not found", 'last Event ProvisioningFailed: storageclass.storage.k8s.io "gone"'),
        ),
        ({}, ("no StorageClass", "no Event about it yet")),
    ],
)  # fmt: skip
def test_an_unbound_backup_pvc_times_out_naming_pvc_class_and_last_event(
    binding: dict[str, str], needles: tuple[str, ...]
) -> None:
    cr = du(Phase.ACCEPTED, acceptedTimestamp=ago(101))
    change = phase_set(decide(obs(cr, exposure=bound("Pending", **binding))))
    assert change.reason == "PrepareTimeout" and "PVC velero/snapmover-du-b1 to be Bound" in change.message
    for needle in needles:
        assert needle in change.message, change.message


def test_pod_waiting_for_its_volume_waits_under_the_prepare_timeout_not_the_pod_start_timeout() -> None:
    waiting = pod("Pending", created=50, unschedulable=True)
    waiting["status"]["conditions"][0]["message"] = (
        "0/1 nodes are available: 1 pod has unbound immediate PersistentVolumeClaims."
    )
    young = decide(obs(du(Phase.ACCEPTED, acceptedTimestamp=ago(50)), exposure=EXPOSED, job=job(), pods=[waiting]))
    assert only(young, SetPhase) == [] and "volume to be provisioned" in only(young, Requeue)[0].waiting_for
    old = decide(obs(du(Phase.ACCEPTED, acceptedTimestamp=ago(101)), exposure=EXPOSED, job=job(), pods=[waiting]))
    assert phase_set(old).reason == "PrepareTimeout" and "unbound immediate" in phase_set(old).message


def test_job_without_a_pod_yet_waits_under_the_prepare_timeout() -> None:
    actions = decide(obs(du(Phase.ACCEPTED, acceptedTimestamp=ago(200)), exposure=EXPOSED, job=job()))
    assert phase_set(actions).reason == "PrepareTimeout"


def test_prepare_timeout_does_not_apply_once_prepared() -> None:
    actions = decide(obs(du(Phase.PREPARED, acceptedTimestamp=ago(10_000)), job=job()))
    assert only(actions, SetPhase) == []


# --- supervision ---------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", [Phase.PREPARED, Phase.IN_PROGRESS, Phase.CANCELING])
def test_job_gone_after_it_ran_fails(phase: str) -> None:
    assert "disappeared" in phase_set(decide(obs(du(phase)))).message


def test_finished_job_waits_briefly_for_the_pods_termination_message() -> None:
    actions = decide(obs(du(Phase.IN_PROGRESS), job=job("Complete", ended=2), pods=[pod("Running")]))
    assert actions == [Requeue(1.0, "the mover pod's final status")]


def test_finished_job_stops_waiting_for_the_pod_after_the_grace() -> None:
    actions = decide(obs(du(Phase.IN_PROGRESS), job=job("Complete", ended=20), pods=[pod("Running")]))
    assert phase_set(actions).reason == "MoverExited"


def test_backup_job_complete_records_the_snapshot() -> None:
    term = {"phase": "Completed", "snapshotID": "s9", "incrementalBytes": 7}
    change = phase_set(decide(obs(du(Phase.IN_PROGRESS), job=job("Complete"), pods=[pod("Succeeded", term=term)])))
    assert change.phase == Phase.COMPLETED and change.fields == {"snapshotID": "s9", "incrementalBytes": 7}


def test_backup_job_complete_without_a_result_fails() -> None:
    change = phase_set(decide(obs(du(Phase.IN_PROGRESS), job=job("Complete"), pods=[pod("Succeeded", term="")])))
    assert change.reason == "MoverExited"


def test_job_failed_carries_the_movers_message() -> None:
    term = {"phase": "Failed", "message": "storage unreachable: timeout"}
    change = phase_set(decide(obs(du(Phase.IN_PROGRESS), job=job("Failed"), pods=[pod("Failed", term=term)])))
    assert change.reason == "MoverFailed" and "storage unreachable" in change.message


def test_job_failed_falls_back_to_the_log_tail_then_the_condition() -> None:
    change = phase_set(decide(obs(du(Phase.IN_PROGRESS), job=job("Failed"), pods=[pod("Failed", term="Traceback x")])))
    assert "Traceback x" in change.message
    failed = job("Failed")
    failed["status"]["conditions"][0]["reason"] = "DeadlineExceeded"
    change = phase_set(decide(obs(du(Phase.IN_PROGRESS), job=failed)))
    assert change.reason == "DeadlineExceeded" and "jobDeadlineSeconds" in change.message


def test_job_failed_after_the_mover_canceled_is_canceled() -> None:
    term = {"phase": "Canceled", "message": "canceled on request"}
    change = phase_set(decide(obs(du(Phase.CANCELING), job=job("Failed"), pods=[pod("Failed", term=term)])))
    assert change.phase == Phase.CANCELED


# --- cancel ----------------------------------------------------------------------------------------


def canceled(cr: dict[str, Any]) -> dict[str, Any]:
    cr["spec"]["cancel"] = True
    return cr


@pytest.mark.parametrize("phase", [None, Phase.ACCEPTED])
def test_cancel_before_the_mover_runs_is_done_by_the_launcher(phase: str | None) -> None:
    actions = decide(obs(canceled(du(phase)), job=job()))
    assert actions[0] == DeleteJob() and phase_set(actions).message == "canceled before the mover started"


def test_cancel_when_prepared_but_not_running() -> None:
    assert phase_set(decide(obs(canceled(du(Phase.PREPARED)), job=job(), pods=[pod("Pending")]))).phase == "Canceled"


def test_cancel_with_a_running_mover_is_left_to_the_mover() -> None:
    actions = decide(obs(canceled(du(Phase.IN_PROGRESS)), job=job(), pods=[pod()]))
    assert only(actions, SetPhase) == []


def test_cancel_in_progress_after_the_job_died_is_done_by_the_launcher() -> None:
    assert phase_set(decide(obs(canceled(du(Phase.IN_PROGRESS)), job=job("Failed")))).phase == Phase.CANCELED


def test_cancel_racing_a_completion_the_completion_already_stands() -> None:
    cr = canceled(du(Phase.COMPLETED, snapshotID="s1", completionTimestamp=ago(1)))
    assert only(decide(obs(cr, job=job("Complete"), pods=[pod()])), SetPhase) == []


def test_completion_racing_a_cancel_the_cancel_already_stands() -> None:
    term = {"phase": "Completed", "snapshotID": "s9"}
    cr = du(Phase.CANCELED, completionTimestamp=ago(1))
    assert only(decide(obs(cr, job=job("Complete"), pods=[pod("Succeeded", term=term)])), SetPhase) == []


# --- restore rebinding ------------------------------------------------------------------------------


def target(phase: str = "Pending") -> dict[str, Any]:
    return {
        "metadata": {"name": "restored", "namespace": "app", "uid": "t-uid"},
        "spec": {"selector": {"matchLabels": {"velero.io/dynamic-pv-restore": "x"}}},
        "status": {"phase": phase},
    }


def volume(**meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "pv-1", **meta},
        "spec": {
            "persistentVolumeReclaimPolicy": meta.pop("policy", "Delete"),
            "claimRef": {"name": "x", "namespace": "sm"},
        },
    }


def restore_obs(view: RebindView | None) -> Observation:
    term = {"phase": "Completed", "snapshotID": "abc", "totalBytes": 99}
    return obs(dd(Phase.IN_PROGRESS), job=job("Complete"), pods=[pod("Succeeded", term=term)], rebind=view)


def test_restore_complete_first_gathers_the_rebind_view() -> None:
    assert decide(restore_obs(None)) == [Rebind()]


def test_rebind_step_one_retains_deletes_the_restore_pvc_and_points_the_claim_ref() -> None:
    actions = decide(restore_obs(RebindView(target(), volume(), restore_claim=True)))
    patches = only(actions, PatchVolume)
    assert patches[0].patch["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert patches[0].patch["metadata"]["annotations"][ORIGINAL_RECLAIM] == "Delete"
    assert DeleteRestoreClaim() in actions
    ref = patches[1].patch["spec"]["claimRef"]
    assert (ref["namespace"], ref["name"], ref["uid"]) == ("app", "restored", "t-uid")
    assert patches[1].patch["metadata"]["labels"] == {"velero.io/dynamic-pv-restore": "x"}
    assert only(actions, PostEvent)[0].reason == "VolumeRebound" and only(actions, SetPhase) == []


def test_rebind_step_two_waits_for_the_target_to_bind() -> None:
    pv = volume(annotations={ORIGINAL_RECLAIM: "Delete"})
    pv["spec"]["claimRef"] = {"name": "restored", "namespace": "app"}
    actions = decide(restore_obs(RebindView(target(), pv)))
    assert only(actions, PatchVolume) == [] and "to bind" in only(actions, Requeue)[0].waiting_for


def test_rebind_step_three_restores_the_reclaim_policy_and_completes() -> None:
    pv = volume(annotations={ORIGINAL_RECLAIM: "Delete"})
    pv["spec"]["persistentVolumeReclaimPolicy"] = "Retain"
    actions = decide(restore_obs(RebindView(target("Bound"), pv)))
    assert only(actions, PatchVolume)[0].patch == {"spec": {"persistentVolumeReclaimPolicy": "Delete"}}
    change = phase_set(actions)
    assert change.phase == Phase.COMPLETED and change.count_bytes == 99
    assert change.fields == {"progress": {"totalBytes": 99, "bytesDone": 99}}


def test_rebind_with_the_target_gone_fails() -> None:
    assert "target PVC app/restored does not exist" in phase_set(decide(restore_obs(RebindView(None, None)))).message


def test_rebind_with_the_restored_volume_gone_fails() -> None:
    assert "restored volume is gone" in phase_set(decide(restore_obs(RebindView(target(), None)))).message


# --- helpers ----------------------------------------------------------------------------------------


def test_snapshot_wait_steps() -> None:
    cr = du(Phase.ACCEPTED)
    assert isinstance(phases.snapshot_wait(cr, None, NOW), Waiting)
    assert isinstance(phases.snapshot_wait(cr, {"status": {"readyToUse": False}}, NOW), Waiting)
    ready = {"status": {"readyToUse": True, "boundVolumeSnapshotContentName": "c"}}
    assert phases.snapshot_wait(cr, ready, NOW) is None
    late = du(Phase.ACCEPTED, acceptedTimestamp=ago(601))
    assert "does not exist" in phases.snapshot_wait(late, None, NOW).message  # type: ignore[union-attr]
    assert "ReadyToUse" in phases.snapshot_wait(late, {"status": {}}, NOW).message  # type: ignore[union-attr]


def test_time_parsing_accepts_both_forms_kubernetes_writes() -> None:
    assert phases.parse_time("2026-01-01T00:00:00Z") == phases.parse_time("2026-01-01T00:00:00+00:00")
    assert phases.age(None, NOW) == 0.0


# --- a dead mover resumes (issue #16 item 5) -------------------------------------------------------


def killed(reason: str = "Error", code: int = 137, evicted: str = "") -> dict[str, Any]:
    """A mover pod that died without writing a result (the log tail as its message)."""
    p = pod("Failed", term="INFO uploading 61 %")
    p["status"]["containerStatuses"][0]["state"]["terminated"] |= {"reason": reason, "exitCode": code}
    if evicted:
        p["status"] |= {"reason": "Evicted", "message": evicted}
    return p


def attempt(cr: dict[str, Any], n: int, retried: float | None = None) -> dict[str, Any]:
    notes = {phases.ATTEMPT_ANNOTATION: str(n)}
    if retried is not None:
        notes[phases.RETRIED_ANNOTATION] = ago(retried)
    cr["metadata"]["annotations"] = notes
    return cr


@pytest.mark.parametrize(
    ("dead", "words"),
    [
        ([killed()], "exit code 137"),
        ([killed("OOMKilled")], "OOMKilled"),
        ([killed(code=0, reason="", evicted="low on memory")], "Evicted: low on memory"),
        ([], "the mover pod is gone"),
    ],
)
def test_a_mover_that_died_without_a_result_is_started_again(dead: list[dict[str, Any]], words: str) -> None:
    actions = decide(obs(du(Phase.IN_PROGRESS), job=job("Failed"), pods=dead))
    change = phase_set(actions)
    assert (change.phase, change.reason, change.warning) == (Phase.ACCEPTED, "MoverRetry", True)
    assert change.annotations == {phases.ATTEMPT_ANNOTATION: "2", phases.RETRIED_ANNOTATION: rfc3339(NOW)}
    assert "mover attempt 1 of 3 died" in change.message and words in change.message, change.message
    assert only(actions, Requeue)


def test_the_next_attempt_counts_on_and_the_last_one_fails_naming_the_attempts() -> None:
    second = phase_set(decide(obs(attempt(du(Phase.IN_PROGRESS), 2), job=job("Failed"), pods=[killed("OOMKilled")])))
    assert second.annotations[phases.ATTEMPT_ANNOTATION] == "3" and "attempt 2 of 3" in second.message
    last = phase_set(decide(obs(attempt(du(Phase.IN_PROGRESS), 3), job=job("Failed"), pods=[killed("OOMKilled")])))
    assert (last.phase, last.reason) == (Phase.FAILED, "OOMKilled")  # the classified cause of the last death
    assert "each of 3 attempt(s)" in last.message and "lack of memory" in last.message


def test_no_retry_when_disabled_or_past_the_operation_timeout() -> None:
    disabled = replace(SETTINGS, mover_retries=0)
    change = phase_set(decide(obs(du(Phase.IN_PROGRESS), job=job("Failed"), pods=[killed()], settings=disabled)))
    assert change.phase == Phase.FAILED and "each of 1 attempt(s)" in change.message
    late = du(Phase.IN_PROGRESS)
    late["status"]["acceptedTimestamp"] = ago(700)  # the default operationTimeout is 600 s
    change = phase_set(decide(obs(late, job=job("Failed"), pods=[killed()])))
    assert change.phase == Phase.FAILED and "operationTimeout 600s has passed" in change.message


def test_a_mover_that_ended_on_its_own_terms_is_not_retried() -> None:
    crash = pod("Failed", term="Traceback x")  # exit 1 with its log tail: a failure, not a death
    crash["status"]["containerStatuses"][0]["state"]["terminated"] |= {"reason": "Error", "exitCode": 1}
    assert phase_set(decide(obs(du(Phase.IN_PROGRESS), job=job("Failed"), pods=[crash]))).phase == Phase.FAILED
    result = killed()
    result["status"]["containerStatuses"][0]["state"]["terminated"]["message"] = json.dumps(
        {"phase": "Failed", "message": "storage unreachable"}
    )
    change = phase_set(decide(obs(du(Phase.IN_PROGRESS), job=job("Failed"), pods=[result])))
    assert change.phase == Phase.FAILED and "storage unreachable" in change.message
    deadline = job("Failed")
    deadline["status"]["conditions"][0]["reason"] = "DeadlineExceeded"
    assert phase_set(decide(obs(du(Phase.IN_PROGRESS), job=deadline, pods=[killed()]))).phase == Phase.FAILED


def test_the_dead_attempts_job_is_deleted_before_the_next_is_made() -> None:
    cr = attempt(du(Phase.ACCEPTED), 2, retried=1)
    assert decide(obs(cr, job=job("Failed"), pods=[killed()]))[0] == DeleteJob()
    current = job()
    current["metadata"]["annotations"] = {phases.ATTEMPT_ANNOTATION: "2"}
    assert DeleteJob() not in decide(obs(cr, job=current, pods=[pod("Pending")]))
    assert decide(obs(cr, exposure=EXPOSED)) == [CreateJob(EXPOSED), Requeue(1.0, "the mover pod to be created")]


def test_a_retry_prepares_anew_under_the_prepare_timeout() -> None:
    cr = attempt(du(Phase.ACCEPTED), 2, retried=5)
    cr["status"]["acceptedTimestamp"] = ago(500)  # the first attempt's prepare began long ago
    assert only(decide(obs(cr, exposure=Waiting("a free slot"))), SetPhase) == []
    cr["metadata"]["annotations"][phases.RETRIED_ANNOTATION] = ago(200)
    assert phase_set(decide(obs(cr, exposure=Waiting("a free slot")))).reason == "PrepareTimeout"


def test_the_pods_of_a_dead_attempts_job_are_not_the_current_pod() -> None:
    current = job()
    current["metadata"] |= {"uid": "job-2", "annotations": {phases.ATTEMPT_ANNOTATION: "2"}}
    old, new = killed(), pod("Running")
    old["metadata"]["ownerReferences"] = [{"uid": "job-1"}]
    new["metadata"]["ownerReferences"] = [{"uid": "job-2"}]
    cr = attempt(du(Phase.ACCEPTED), 2, retried=1)
    change = phase_set(decide(obs(cr, job=current, pods=[old, new], exposure=EXPOSED)))
    assert change.phase == Phase.PREPARED


# --- a node lost while its mover runs (issue #14 item 3) -------------------------------------------


def lost(node: str = "node-a") -> dict[str, Any]:
    """A mover pod Kubernetes is deleting while its node's kubelet is gone: still Running."""
    p = pod("Running")
    p["metadata"]["deletionTimestamp"] = ago(1)
    p["spec"]["nodeName"] = node
    return p


def test_a_mover_pod_lost_with_its_node_is_started_again() -> None:
    cr = du(Phase.IN_PROGRESS)
    change = phase_set(decide(obs(cr, job=job(), pods=[lost()], lost_nodes=frozenset({"node-a"}))))
    assert (change.phase, change.reason) == (Phase.ACCEPTED, "MoverRetry")
    assert "mover attempt 1 of 3 died" in change.message and "lost with node node-a" in change.message
    last = phase_set(decide(obs(attempt(cr, 3), job=job(), pods=[lost()], lost_nodes=frozenset({"node-a"}))))
    assert (last.phase, last.reason) == (Phase.FAILED, "NodeLost") and "each of 3 attempt(s)" in last.message


def test_a_pod_deleted_on_a_ready_node_or_not_deleted_is_no_node_loss() -> None:
    cr = du(Phase.IN_PROGRESS)
    running = [Requeue(phases.SUPERVISE_REQUEUE_SECONDS, "the mover")]
    assert decide(obs(cr, job=job(), pods=[lost("node-b")], lost_nodes=frozenset({"node-a"}))) == running
    unready = pod("Running")  # its node is not Ready, but Kubernetes has not given up on the pod yet
    assert decide(obs(cr, job=job(), pods=[unready], lost_nodes=frozenset({"node-a"}))) == running
