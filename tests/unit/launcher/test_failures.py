"""launcher.failures: the cause of a dead or stuck mover pod, from pod/Job/Event dicts shaped as
Kubernetes 1.20 writes them (kubelet, kube-scheduler, Job controller)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from launcher.failures import Cause, classify, start_failure

POD_NAME = "snapmover-du-backup-1-x7k2p-5tq9z"


def mover_pod(phase: str = "Pending", *, state: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    """A mover pod as the API server returns it (only the fields that matter, real values)."""
    container_status: dict[str, Any] = {
        "name": "mover",
        "image": "localhost/snapmover:0.1.0",
        "imageID": "",
        "ready": False,
        "restartCount": 0,
        "started": False,
        "lastState": {},
        "state": state or {"waiting": {"reason": "ContainerCreating"}},
    }
    return {
        "metadata": {"name": POD_NAME, "namespace": "snapmover", "creationTimestamp": "2026-12-02T01:00:00Z"},
        "spec": {
            "nodeName": "node-1",
            "containers": [
                {
                    "name": "mover",
                    "image": "localhost/snapmover:0.1.0",
                    "resources": {"limits": {"memory": "48Mi"}, "requests": {"memory": "32Mi"}},
                }
            ],
        },
        "status": {
            "phase": phase,
            "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-12-02T01:00:00Z"},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-12-02T01:00:00Z"},
            ],
            "containerStatuses": [container_status],
            "hostIP": "10.244.0.1",
            "qosClass": "Burstable",
            **status,
        },
    }


def event(reason: str, message: str, when: str, *, kind: str = "Warning", name: str = POD_NAME) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{name}.16cd2b", "namespace": "snapmover", "creationTimestamp": when},
        "involvedObject": {"kind": "Pod", "namespace": "snapmover", "name": name, "apiVersion": "v1"},
        "reason": reason,
        "message": message,
        "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": when,
        "lastTimestamp": when,
        "count": 1,
        "type": kind,
    }


def failed_job(reason: str, message: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "snapmover-du-backup-1-x7k2p"},
        "spec": {"activeDeadlineSeconds": 3, "backoffLimit": 0},
        "status": {
            "conditions": [
                {"type": "Failed", "status": "True", "reason": reason, "message": message, "lastProbeTime": "x"}
            ],
            "failed": 1,
        },
    }


OOM = {
    "terminated": {
        "exitCode": 137,
        "reason": "OOMKilled",
        "startedAt": "2026-12-02T01:00:02Z",
        "finishedAt": "2026-12-02T01:00:09Z",
        "message": "12:00:05 upload 31% 9.8 MiB/s\n",
        "containerID": "containerd://4f1",
    }
}


def test_oom_killed_names_the_limit_and_jobresources() -> None:
    reason, message = classify(mover_pod("Failed", state=OOM), (), failed_job("BackoffLimitExceeded", "x")) or ("", "")
    assert reason == "OOMKilled"
    assert "memory than its limit of 48Mi" in message and "request 32Mi" in message
    assert "jobResources.limits.memory" in message and "peak" in message


def test_oom_killed_in_the_last_state_counts_too() -> None:
    pod = mover_pod("Running", state={"running": {"startedAt": "x"}})
    pod["status"]["containerStatuses"][0]["lastState"] = OOM
    assert classify(pod) == Cause("OOMKilled", classify(mover_pod("Failed", state=OOM)).message)  # type: ignore[union-attr]


def test_oom_without_a_limit_says_the_node_ran_out() -> None:
    pod = mover_pod("Failed", state=OOM)
    pod["spec"]["containers"][0]["resources"] = {}
    cause = classify(pod)
    assert cause is not None and "no memory limit is set" in cause.message


def test_evicted_carries_the_kubelets_reason() -> None:
    pod = mover_pod(
        "Failed",
        state={"terminated": {"exitCode": 137, "reason": "Error"}},
        reason="Evicted",
        message="The node was low on resource: ephemeral-storage. Container mover was using 2Gi, which exceeds "
        "its request of 0. ",
    )
    cause = classify(pod)
    assert cause is not None and cause.reason == "Evicted"
    assert "low on resource: ephemeral-storage" in cause.message and "jobResources" in cause.message


def test_node_lost_is_named() -> None:
    pod = mover_pod("Failed", reason="NodeLost", message="Node node-2 which was running pod x is unresponsive")
    assert classify(pod) == Cause(
        "NodeLost", "the node ended the mover pod (NodeLost): Node node-2 which was running pod x is unresponsive"
    )


def test_deadline_exceeded_names_the_deadline_and_its_key() -> None:
    job = failed_job("DeadlineExceeded", "Job was active longer than specified deadline")
    cause = classify(mover_pod("Failed", state={"terminated": {"exitCode": 1, "reason": "Error"}}), (), job)
    assert cause is not None and cause.reason == "DeadlineExceeded"
    assert "deadline of 3s" in cause.message and "jobDeadlineSeconds" in cause.message
    assert classify(None, (), job) == cause  # the pod may be gone already


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        (
            "ErrImagePull",
            'rpc error: code = Unknown desc = failed to pull and unpack image "invalid.example/snapmover:none": '
            "failed to resolve reference",
        ),
        ("ImagePullBackOff", 'Back-off pulling image "invalid.example/snapmover:none"'),
        ("ErrImageNeverPull", 'Container image "localhost/snapmover:none" is not present with pull policy of Never'),
    ],
)
def test_image_pull_failures_name_the_image_and_the_keys(reason: str, message: str) -> None:
    cause = start_failure(mover_pod(state={"waiting": {"reason": reason, "message": message}}))
    assert cause is not None and cause.reason == reason
    assert "localhost/snapmover:0.1.0" in cause.message and message[:40] in cause.message
    assert "imagePullSecrets" in cause.message


def test_create_container_config_error_carries_the_kubelets_text() -> None:
    state = {"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "proxy" not found'}}
    cause = start_failure(mover_pod(state=state))
    assert cause == Cause(
        "CreateContainerConfigError",
        'the mover container cannot be created (CreateContainerConfigError): secret "proxy" not found',
    )


def unschedulable_pod() -> dict[str, Any]:
    pod = mover_pod()
    pod["spec"].pop("nodeName")
    pod["status"] = {
        "phase": "Pending",
        "qosClass": "BestEffort",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 node(s) didn't match node selector.",
                "lastProbeTime": None,
                "lastTransitionTime": "2026-12-02T01:00:00Z",
            }
        ],
    }
    return pod


def test_unschedulable_carries_the_schedulers_message() -> None:
    cause = start_failure(unschedulable_pod())
    assert cause is not None and cause.reason == "Unschedulable"
    assert "0/1 nodes are available: 1 node(s) didn't match node selector." in cause.message
    assert "nodeSelector" in cause.message


MOUNT_EVENTS = [
    event("Scheduled", "Successfully assigned snapmover/x to node-1", "2026-12-02T01:00:00Z", kind="Normal"),
    event(
        "FailedMount",
        'MountVolume.SetUp failed for volume "cloud-credentials" : secret "cloud-credentials" not found',
        "2026-12-02T01:00:09Z",
    ),
    event(
        "FailedMount",
        "Unable to attach or mount volumes: unmounted volumes=[cloud-credentials], unattached volumes=[data "
        "cloud-credentials tmp]: timed out waiting for the condition",
        "2026-12-02T01:02:03Z",
    ),
    event("FailedMount", "about another pod", "2026-12-02T01:09:00Z", name="someone-else"),
]


def test_failed_mount_carries_the_newest_event_about_this_pod() -> None:
    cause = start_failure(mover_pod(), MOUNT_EVENTS)
    assert cause is not None and cause.reason == "FailedMount"
    assert "unmounted volumes=[cloud-credentials]" in cause.message and "another pod" not in cause.message


def test_failed_attach_is_a_mount_failure_too() -> None:
    attach = event(
        "FailedAttachVolume",
        'AttachVolume.Attach failed for volume "pvc-1" : rpc error: code = Internal desc = Could not attach volume',
        "2026-12-02T01:00:30Z",
    )
    attach["source"] = {"component": "attachdetach-controller"}
    cause = start_failure(mover_pod(), [attach])
    assert cause is not None and cause.reason == "FailedAttachVolume" and "Could not attach volume" in cause.message


def test_stuck_in_container_creating_without_a_mount_event_names_the_last_warning() -> None:
    sandbox = event("FailedCreatePodSandBox", "Failed to create pod sandbox: rpc error", "2026-12-02T01:00:05Z")
    noise = event("MissingClusterDNS", "pod: x. kubelet does not have ClusterDNS IP configured", "2026-12-02T01:00:06Z")
    cause = start_failure(mover_pod(), [sandbox, noise])
    assert cause == Cause(
        "ContainerCreating",
        "the mover pod is stuck in ContainerCreating on node node-1; last warning: FailedCreatePodSandBox: "
        "Failed to create pod sandbox: rpc error",
    )
    assert start_failure(mover_pod()) == Cause(
        "ContainerCreating", "the mover pod is stuck in ContainerCreating on node node-1"
    )


def test_a_pod_on_its_way_or_running_has_no_start_failure() -> None:
    unplaced = mover_pod()
    unplaced["status"] = {"phase": "Pending", "qosClass": "Burstable"}
    assert start_failure(unplaced) is None
    running = mover_pod("Running", state={"running": {"startedAt": "2026-12-02T01:00:03Z"}})
    assert start_failure(running, MOUNT_EVENTS) is None
    assert classify(running) is None
    assert classify(mover_pod("Succeeded", state={"terminated": {"exitCode": 0, "reason": "Completed"}})) is None


def test_long_kubelet_text_is_cut_to_one_line() -> None:
    pod = copy.deepcopy(unschedulable_pod())
    pod["status"]["conditions"][0]["message"] = "0/1 nodes\n" + "x" * 5000
    cause = start_failure(pod)
    assert cause is not None and "\n" not in cause.message and len(cause.message) < 900
