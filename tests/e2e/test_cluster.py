"""e2e: the local cluster behaves like a real one, driven with the real kubectl.

Its node is real (kube-scheduler, kubelet, containerd), so these check the harness's CSI part —
directory and loop-device PVs, snapshots — through real pods of the snapmover image, and that the
cluster gives what the mover relies on (logs, termination messages, RBAC, env, graceful deletion).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.cluster.cluster import snapmover_image
from tests.fixtures.cluster import ClusterHandle

pytestmark = pytest.mark.e2e


def wait_for(what: str, check: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def apply(cluster: ClusterHandle, ns: str, obj: dict[str, object]) -> None:
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(obj))


def get(cluster: ClusterHandle, ns: str, kind: str, name: str) -> dict[str, object]:
    return json.loads(cluster.kubectl("get", "-n", ns, kind, name, "-o", "json").stdout)  # type: ignore[no-any-return]


def pvc(name: str, *, mode: str = "Filesystem", snapshot: str | None = None) -> dict[str, object]:
    spec: dict[str, object] = {
        "accessModes": ["ReadWriteOnce"],
        "volumeMode": mode,
        "resources": {"requests": {"storage": "64Mi"}},
    }
    if snapshot:
        spec["dataSource"] = {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": snapshot}
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name}, "spec": spec}


def job(
    name: str,
    script: str,
    claim: str | None = None,
    *,
    device: bool = False,
    sa: str | None = None,
    read_only: bool = False,
) -> dict[str, object]:
    container: dict[str, object] = {
        "name": "main",
        "image": snapmover_image(),
        "command": ["sh", "-c", script],
        "securityContext": {"runAsUser": 0},  # the image's default user cannot open a root-owned device
    }
    pod: dict[str, object] = {"restartPolicy": "Never", "containers": [container]}
    if claim:
        pod["volumes"] = [{"name": "vol", "persistentVolumeClaim": {"claimName": claim}}]
        if device:
            container["volumeDevices"] = [{"name": "vol", "devicePath": "/dev/snapmover-test-dev"}]
        else:
            container["volumeMounts"] = [{"name": "vol", "mountPath": "/data", "readOnly": read_only}]
    if sa:
        pod["serviceAccountName"] = sa
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": pod}},
    }


def job_condition(cluster: ClusterHandle, ns: str, name: str) -> str | None:
    status = get(cluster, ns, "job", name).get("status", {})
    for cond in status.get("conditions", []):  # type: ignore[union-attr]
        if cond["status"] == "True" and cond["type"] in ("Complete", "Failed"):
            return str(cond["type"])
    return None


def run_job(cluster: ClusterHandle, ns: str, spec: dict[str, object], expect: str = "Complete") -> str:
    apply(cluster, ns, spec)
    name = spec["metadata"]["name"]  # type: ignore[index]
    wait_for(f"job {name}", lambda: job_condition(cluster, ns, name) is not None)
    assert job_condition(cluster, ns, name) == expect
    return str(cluster.kubectl("logs", "-n", ns, f"job/{name}").stdout)


def test_snapshot_restore_keeps_data_and_job_logs_work(kube_cluster: ClusterHandle, k8s_namespace: str) -> None:
    ns = k8s_namespace
    apply(kube_cluster, ns, pvc("source"))
    run_job(
        kube_cluster,
        ns,
        job("fill", "echo 'volume data 42' > /data/file && mkdir /data/sub && echo x > /data/sub/y", "source"),
    )
    apply(
        kube_cluster,
        ns,
        {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshot",
            "metadata": {"name": "snap"},
            "spec": {"volumeSnapshotClassName": "standard", "source": {"persistentVolumeClaimName": "source"}},
        },
    )
    wait_for(
        "snapshot ready",
        lambda: get(kube_cluster, ns, "volumesnapshot", "snap").get("status", {}).get("readyToUse") is True,
    )  # type: ignore[union-attr]
    apply(kube_cluster, ns, pvc("restored", snapshot="snap"))
    logs = run_job(kube_cluster, ns, job("read", "cat /data/file /data/sub/y", "restored", read_only=True))
    assert logs.splitlines() == ["volume data 42", "x"]
    tail = kube_cluster.kubectl("logs", "-n", ns, "job/read", "--tail=1").stdout
    assert tail.strip() == "x"


def test_failing_job_ends_failed_with_termination_message(kube_cluster: ClusterHandle, k8s_namespace: str) -> None:
    spec = job("fails", "echo about to fail; echo 'disk exploded' > /dev/termination-log; exit 3")
    logs = run_job(kube_cluster, k8s_namespace, spec, expect="Failed")
    assert "about to fail" in logs
    pods = json.loads(
        kube_cluster.kubectl("get", "pods", "-n", k8s_namespace, "-l", "job-name=fails", "-o", "json").stdout
    )["items"]
    term = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 3 and term["message"].strip() == "disk exploded"


def test_service_account_rbac_is_enforced(kube_cluster: ClusterHandle, k8s_namespace: str) -> None:
    ns = k8s_namespace
    kube_cluster.kubectl("create", "serviceaccount", "reader", "-n", ns)
    who = f"--as=system:serviceaccount:{ns}:reader"
    denied = kube_cluster.kubectl("auth", "can-i", "list", "configmaps", "-n", ns, who, check=False)
    assert denied.stdout.strip() == "no"
    script = (
        'python -c "from kubernetes import client, config; config.load_incluster_config(); '
        f"print(len(client.CoreV1Api().list_namespaced_config_map('{ns}').items), 'configmaps')\""
    )
    logs = run_job(kube_cluster, ns, job("forbidden", script, sa="reader"), expect="Failed")
    assert "403" in logs or "Forbidden" in logs
    kube_cluster.kubectl("create", "role", "cm-reader", "--verb=list", "--resource=configmaps", "-n", ns)
    kube_cluster.kubectl(
        "create", "rolebinding", "cm-reader", "--role=cm-reader", f"--serviceaccount={ns}:reader", "-n", ns
    )
    allowed = kube_cluster.kubectl("auth", "can-i", "list", "configmaps", "-n", ns, who, check=False)
    assert allowed.stdout.strip() == "yes"
    logs = run_job(kube_cluster, ns, job("allowed", script, sa="reader"))
    assert "configmaps" in logs


def test_block_pvc_is_a_device_path(kube_cluster: ClusterHandle, k8s_namespace: str) -> None:
    ns = k8s_namespace
    apply(kube_cluster, ns, pvc("disk", mode="Block"))
    script = (
        "python -c \"import os; fd = os.open('/dev/snapmover-test-dev', os.O_RDWR); "
        "os.pwrite(fd, b'block!', 1 << 20); print(os.pread(fd, 6, 1 << 20).decode(), "
        'os.lseek(fd, 0, os.SEEK_END))"'
    )
    logs = run_job(kube_cluster, ns, job("blockio", script, "disk", device=True))
    assert logs.split() == ["block!", str(64 << 20)]


def test_logs_follow_and_graceful_deletion(kube_cluster: ClusterHandle, k8s_namespace: str) -> None:
    ns = k8s_namespace
    script = "trap 'echo got TERM; exit 0' TERM; echo started; while true; do sleep 0.2; done"
    apply(
        kube_cluster,
        ns,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "sleeper"},
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 20,
                "containers": [{"name": "main", "image": snapmover_image(), "command": ["sh", "-c", script]}],
            },
        },
    )
    wait_for("pod running", lambda: get(kube_cluster, ns, "pod", "sleeper").get("status", {}).get("phase") == "Running")
    wait_for("first log line", lambda: "started" in kube_cluster.kubectl("logs", "-n", ns, "sleeper").stdout)
    follower = subprocess.Popen(
        ["kubectl", f"--kubeconfig={kube_cluster.kubeconfig}", "logs", "-f", "-n", ns, "sleeper"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert follower.stdout is not None
    first = follower.stdout.readline().strip()  # the follower is connected once it has the first line
    kube_cluster.kubectl("delete", "pod", "-n", ns, "sleeper", "--wait=true", "--timeout=60s")
    out, _ = follower.communicate(timeout=60)
    # kubectl's stream can end with the kubelet's "rpc error: ... not found" once the deleted
    # container is gone: that is kubectl's line, not the container's
    lines = [first, *(line for line in out.splitlines() if not line.startswith("rpc error:"))]
    assert lines[0] == "started" and lines[-1] == "got TERM"  # SIGTERM first, within the grace period


def test_env_from_values_field_refs_secrets_and_config_maps(kube_cluster: ClusterHandle, k8s_namespace: str) -> None:
    ns = k8s_namespace
    kube_cluster.kubectl("create", "secret", "generic", "s", "-n", ns, "--from-literal=token=from-secret")
    kube_cluster.kubectl(
        "create", "configmap", "c", "-n", ns, "--from-literal=color=from-configmap", "--from-literal=SHAPE=from-envfrom"
    )
    spec = job("envs", "echo $A $B $C $D $PFX_SHAPE $NODE $POD; cat /cfg/color")
    pod = spec["spec"]["template"]["spec"]  # type: ignore[index]
    container = pod["containers"][0]
    container["env"] = [
        {"name": "A", "value": "plain"},
        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
        {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "color"}}},
        {"name": "D", "value": "x"},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    container["envFrom"] = [{"prefix": "PFX_", "configMapRef": {"name": "c"}}]
    container["volumeMounts"] = [{"name": "cfg", "mountPath": "/cfg"}]
    pod["volumes"] = [{"name": "cfg", "configMap": {"name": "c"}}]
    logs = run_job(kube_cluster, ns, spec)
    assert logs.splitlines() == [f"plain from-secret from-configmap x from-envfrom node-1 {ns}", "from-configmap"]
