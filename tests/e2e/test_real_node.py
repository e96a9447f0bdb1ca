"""e2e: a real node — kube-scheduler, kubelet, containerd and runc — runs the snapmover image.

The module starts its own control plane (``real_node=True``) and :class:`~tests.cluster.node.RealNode`,
imports the image ``images/build.sh`` built, and checks what only a real node can show: the pod is
scheduled by kube-scheduler, runs as a container from the image with the mover's hardened
security context enforced, reaches the API server with in-cluster config, ``kubectl logs`` and
``kubectl exec`` go through the kubelet, a memory limit kills. At the end the metadata guard's
packet counter must be 0 and the teardown must leave nothing behind.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.controlplane import ControlPlane
from tests.cluster.node import BRIDGE, CGROUP_ROOT, GUARD_COMMENT, NodeUnavailable, RealNode, check_host
from tests.e2e.test_cluster import wait_for
from tests.e2e.test_image import image, project_version  # noqa: F401 - image: the module-scoped image fixture

pytestmark = pytest.mark.e2e

HARDENED = {
    "runAsUser": 0,
    "runAsNonRoot": False,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "privileged": False,
    "capabilities": {"drop": ["ALL"], "add": ["DAC_READ_SEARCH"]},
}


class Node:
    """The control plane + node of this module, with kubectl."""

    def __init__(self, state: Path) -> None:
        self.control = ControlPlane(state, real_node=True)
        self.node = RealNode(state)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", f"--kubeconfig={self.control.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
            check=check,
        )

    def pod(self, name: str, script: str, **container: Any) -> None:
        spec = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                "volumes": [{"name": "tmp", "emptyDir": {}}],
                "containers": [
                    {
                        "name": "c",
                        "image": self.image,
                        "imagePullPolicy": "Never",
                        "command": ["sh", "-c", script],
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                        **container,
                    }
                ],
            },
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(spec))

    def pod_json(self, name: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", "pod", name, "-o", "json").stdout)  # type: ignore[no-any-return]

    image = ""


def phase(node: Node, name: str) -> str:
    return str(node.pod_json(name)["status"].get("phase", ""))


@pytest.fixture(scope="module")
def real_node(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:  # noqa: F811
    try:
        check_host()
    except NodeUnavailable as e:
        pytest.fail(str(e))
    node = Node(tmp_path_factory.mktemp("real-node"))
    node.image = image
    try:
        info = node.control.start()
        node.node.start(
            api_port=int(str(info["api_port"])),
            server=str(info["server"]),
            pki=node.control.pki,
            tokens=node.control.node_tokens,
        )
        node.node.import_image(
            Path(__file__).parents[2] / "build" / "images" / f"snapmover-{project_version()}.oci.tar"
        )
        wait_for("the node to be Ready", lambda: "True" in node.kubectl(
            "get", "node", node.node.name, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False
        ).stdout)  # fmt: skip
        yield node
    finally:
        node.kubectl("delete", "pods", "--all", "--wait=true", "--timeout=60s", check=False)
        packets = node.node.metadata_packets() if node.node.record.exists() else 0
        problems = node.node.stop()
        node.control.stop()
        assert packets == 0, f"{packets} packets to 169.254.0.0/16 were rejected while the node ran"
        assert not problems, problems
        assert not node.node.leftovers(), node.node.leftovers()


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
    assert sum(GUARD_COMMENT in line for line in rules.splitlines()) == 3
    assert Path(f"/sys/class/net/{BRIDGE}").exists()
    assert Path(f"/sys/fs/cgroup/memory/{CGROUP_ROOT}/kubepods").is_dir()
    assert real_node.node.metadata_packets() == 0
