"""e2e: a real node — kube-scheduler, kubelet, containerd and runc — runs the snapmover image.

Runs on the session's cluster (tests/fixtures/cluster.py: its node is the real
:class:`~tests.cluster.node.RealNode`, with the image ``make images`` built imported) in a namespace
of its own, and checks what only a real node can show: the pod is scheduled by kube-scheduler,
runs as a container from the image with the mover's hardened security context enforced, reaches
the API server with in-cluster config, ``kubectl logs`` and ``kubectl exec`` go through the
kubelet, a memory limit kills. The session fixture's teardown then requires the metadata guard's
packet counter to be 0 and nothing of the node to be left on the host.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from launcher.jobspec import mover_security_context
from tests.cluster.cluster import snapmover_image
from tests.cluster.node import BRIDGE, CGROUP_ROOT, GUARD_COMMENT, UNIFIED
from tests.e2e.test_cluster import wait_for
from tests.fixtures.cluster import ClusterHandle
from tests.unit.jobs.volume.treecompare import MiB, compare_trees, make_sample_tree

pytestmark = pytest.mark.e2e

HARDENED = mover_security_context(upload=True)  # the launcher's own, for a backup


class Node:
    """The session cluster's node, driven with kubectl in this module's namespace."""

    def __init__(self, cluster: ClusterHandle, namespace: str) -> None:
        self.cluster = cluster
        self.node = cluster.node
        self.namespace = namespace
        self.image = snapmover_image()

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl("-n", self.namespace, *args, input=input, check=check)

    def pod(self, name: str, script: str, **container: Any) -> None:
        """A one-shot pod running ``sh -c SCRIPT`` from the image, with an emptyDir /tmp."""
        self.run_pod(name, {"command": ["sh", "-c", script], **container}, [])

    def run_pod(self, name: str, container: dict[str, Any], volumes: list[dict[str, Any]]) -> None:
        """Create a one-shot pod of one container from the image (plus an emptyDir on /tmp)."""
        mounts = [{"name": "tmp", "mountPath": "/tmp"}, *container.pop("volumeMounts", [])]
        spec = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                "volumes": [{"name": "tmp", "emptyDir": {}}, *volumes],
                "containers": [
                    {"name": "c", "image": self.image, "imagePullPolicy": "Never", "volumeMounts": mounts, **container}
                ],
            },
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(spec))

    def pod_json(self, name: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", "pod", name, "-o", "json").stdout)  # type: ignore[no-any-return]


def phase(node: Node, name: str) -> str:
    return str(node.pod_json(name)["status"].get("phase", ""))


@pytest.fixture(scope="module")
def real_node(kube_cluster: ClusterHandle) -> Iterator[Node]:
    namespace = f"node-{uuid.uuid4().hex[:8]}"
    kube_cluster.kubectl("create", "namespace", namespace)
    node = Node(kube_cluster, namespace)
    try:
        yield node
    finally:
        kube_cluster.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=60s", check=False)


def test_hardened_pod_runs_from_the_image_with_in_cluster_api_access(real_node: Node) -> None:
    script = (
        "id -u; touch /not-here 2>&1 || true; echo ok >/tmp/w && cat /tmp/w;"
        " python3 -c 'import ssl, os, urllib.request as u;"
        ' d="/var/run/secrets/kubernetes.io/serviceaccount/";'
        ' r = u.Request("https://" + os.environ["KUBERNETES_SERVICE_HOST"] + "/version",'
        ' headers={"Authorization": "Bearer " + open(d + "token").read()});'
        ' print(u.urlopen(r, context=ssl.create_default_context(cafile=d + "ca.crt")).read().decode())\''
    )
    real_node.pod("hardened", script, securityContext=HARDENED)
    wait_for("the pod to finish", lambda: phase(real_node, "hardened") in ("Succeeded", "Failed"))
    pod = real_node.pod_json("hardened")
    assert pod["spec"]["nodeName"] == real_node.node.name  # bound by kube-scheduler
    logs = real_node.kubectl("logs", "hardened").stdout
    assert pod["status"]["phase"] == "Succeeded", logs
    lines = logs.splitlines()
    assert lines[0] == "0"
    assert "Read-only file system" in lines[1]
    assert lines[2] == "ok"
    assert '"gitVersion": "v1.20.2"' in logs


def test_the_images_default_user_is_not_root_and_exec_goes_through_the_kubelet(real_node: Node) -> None:
    real_node.pod("default-user", "sleep 300", securityContext={"readOnlyRootFilesystem": True})
    wait_for("the pod to run", lambda: phase(real_node, "default-user") == "Running")
    out = real_node.kubectl("exec", "default-user", "--", "id", "-u").stdout.strip()
    assert out != "0"
    real_node.kubectl("delete", "pod", "default-user", "--grace-period=1", "--wait=true")


def test_a_memory_limit_is_enforced(real_node: Node) -> None:
    real_node.pod(
        "hog",
        "python3 -c 'b = bytearray(200 * 1024 * 1024); print(len(b))'",
        resources={"limits": {"memory": "64Mi"}},
    )
    wait_for("the pod to finish", lambda: phase(real_node, "hog") in ("Succeeded", "Failed"))
    state = real_node.pod_json("hog")["status"]["containerStatuses"][0]["state"]
    assert state["terminated"]["reason"] == "OOMKilled", state


def test_node_state_is_private_and_guarded(real_node: Node) -> None:
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    assert sum(GUARD_COMMENT in line for line in rules.splitlines()) == (4 if UNIFIED.is_dir() else 3)
    assert Path(f"/sys/class/net/{BRIDGE}").exists()
    assert Path(f"/sys/fs/cgroup/memory/{CGROUP_ROOT}/kubepods").is_dir()
    assert real_node.node.metadata_packets() == 0


class Repository:
    """A file repository on a hostPath and the password in a real Secret; runs the mover CLI in
    pods with the launcher's mover security context (launcher/jobspec.py) for the role."""

    def __init__(self, node: Node, work: Path, name: str) -> None:
        self.node = node
        self.name = name
        self.repo = work / "repo"
        self.repo.mkdir()
        self.count = 0
        node.kubectl("create", "secret", "generic", f"{name}-password", f"--from-literal=password={name} password")

    def run(self, upload: bool, args: list[str], data: dict[str, Any], mount: dict[str, Any]) -> str:
        """Run ``snapmover ARGS`` in a pod on the node; returns its logs (fails when the pod fails)."""
        self.count += 1
        pod = f"{self.name}-{self.count}"
        container = {
            "command": ["snapmover", *args],
            "env": [
                {"name": "SNAPMOVER_REPOSITORY", "value": "file:///repository"},
                {"name": "SNAPMOVER_PASSWORD_FILE", "value": "/secrets/password"},
                {"name": "HOME", "value": "/tmp"},
            ],
            "volumeMounts": [
                {"name": "repository", "mountPath": "/repository"},
                {"name": "secret", "mountPath": "/secrets", "readOnly": True},
                *([mount] if "mountPath" in mount else []),
            ],
            **({"volumeDevices": [mount]} if "devicePath" in mount else {}),
            "securityContext": mover_security_context(upload),
        }
        volumes = [
            {"name": "repository", "hostPath": {"path": str(self.repo), "type": "Directory"}},
            {"name": "secret", "secret": {"secretName": f"{self.name}-password", "defaultMode": 0o400}},
            {"name": "data", **data},
        ]
        self.node.run_pod(pod, container, volumes)
        wait_for(f"pod {pod} to finish", lambda: phase(self.node, pod) in ("Succeeded", "Failed"), timeout=180)
        logs = self.node.kubectl("logs", pod).stdout
        assert phase(self.node, pod) == "Succeeded", logs
        self.node.kubectl("delete", "pod", pod, "--wait=true")
        return logs

    def snapshot_id(self, upload_logs: str) -> str:
        last = [line for line in upload_logs.splitlines() if line.startswith("{")][-1]
        return str(json.loads(last)["snapshot_id"])


def host_path(path: Path) -> dict[str, Any]:
    return {"hostPath": {"path": str(path), "type": "Directory"}}


def test_filesystem_backup_and_restore_in_mover_pods(real_node: Node, tmp_path: Path) -> None:
    src, target = tmp_path / "src", tmp_path / "target"
    make_sample_tree(src, large_bytes=MiB)
    target.mkdir()
    repo = Repository(real_node, tmp_path, "fs")
    repo.run(True, ["repo", "init", "--json"], host_path(src), {"name": "data", "mountPath": "/data", "readOnly": True})
    logs = repo.run(
        True,
        ["upload", "--source", "/data", "--json"],
        host_path(src),
        {"name": "data", "mountPath": "/data", "readOnly": True},
    )
    snapshot = repo.snapshot_id(logs)
    repo.run(
        False,
        ["download", "--snapshot", snapshot, "--target", "/data"],
        host_path(target),
        {"name": "data", "mountPath": "/data"},
    )
    assert compare_trees(src, target) == []


def _loop_device(backing: Path, size: int) -> str:
    with open(backing, "wb") as f:
        f.truncate(size)
    return subprocess.run(
        ["losetup", "-f", "--show", str(backing)], capture_output=True, text=True, check=True
    ).stdout.strip()


def _block_claim(node: Node, name: str, device: str) -> None:
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "64Mi"},
            "volumeMode": "Block",
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "local": {"path": device},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node.node.name]}
                            ]
                        }
                    ]
                }
            },
        },
    }
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {
            "volumeMode": "Block",
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "volumeName": name,
            "resources": {"requests": {"storage": "64Mi"}},
        },
    }
    node.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [pv, pvc]}))


def test_block_backup_and_restore_through_volume_devices(real_node: Node, tmp_path: Path) -> None:
    size = 64 * MiB
    devices: list[str] = []
    try:
        source, target = _loop_device(tmp_path / "source.img", size), _loop_device(tmp_path / "target.img", size)
        devices += [source, target]
        rng = random.Random(7)
        with open(source, "r+b") as f:
            for offset in (0, 5 * MiB + 4096, size - MiB):
                f.seek(offset)
                f.write(rng.randbytes(MiB))
        _block_claim(real_node, "block-source", source)
        _block_claim(real_node, "block-target", target)
        repo = Repository(real_node, tmp_path, "block")
        device = {"name": "data", "devicePath": "/dev/snapmover-data"}
        repo.run(True, ["repo", "init", "--json"], {"persistentVolumeClaim": {"claimName": "block-source"}}, device)
        logs = repo.run(
            True,
            ["upload", "--mode", "block", "--source", "/dev/snapmover-data", "--json"],
            {"persistentVolumeClaim": {"claimName": "block-source"}},
            device,
        )
        snapshot = repo.snapshot_id(logs)
        repo.run(
            False,
            ["download", "--mode", "block", "--snapshot", snapshot, "--target", "/dev/snapmover-data"],
            {"persistentVolumeClaim": {"claimName": "block-target"}},
            device,
        )
        with open(source, "rb") as a, open(target, "rb") as b:
            assert hashlib.sha256(a.read()).hexdigest() == hashlib.sha256(b.read()).hexdigest()
    finally:
        real_node.kubectl("delete", "pvc", "block-source", "block-target", "--wait=true", check=False)
        real_node.kubectl("delete", "pv", "block-source", "block-target", "--wait=true", check=False)
        for dev in devices:
            subprocess.run(["losetup", "-d", dev], check=False)


def test_an_image_that_was_not_imported_is_never_pulled_from_outside(real_node: Node) -> None:
    real_node.pod("no-pull", "true", image="registry.example/snapmover/absent:1", imagePullPolicy="IfNotPresent")

    def waiting_message() -> str:
        statuses = real_node.pod_json("no-pull")["status"].get("containerStatuses") or [{}]
        return str(statuses[0].get("state", {}).get("waiting", {}).get("message", ""))

    wait_for("the pull to fail", lambda: "127.0.0.1:9" in waiting_message())
    assert "lookup" not in waiting_message()  # no DNS query was made for the registry host
    real_node.kubectl("delete", "pod", "no-pull", "--grace-period=0", "--wait=true")
