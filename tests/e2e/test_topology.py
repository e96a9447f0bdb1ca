"""e2e on two real nodes (#14 item 3, #16 item 3): placement and per-node limits with the
real kube-scheduler, and the second node's kubelet beside the first one.

The module starts ``node-2`` on the session's cluster (tests/cluster/node.py: its own kubelet and
containerd in a private mount namespace, its own address on the bridge, pod range and cgroup root)
and removes it after the last test, so every other test module runs on one node. Each test needs
both nodes and fails on a one-node cluster (the fixture fails when node-2 cannot start; nothing is
skipped):

* pod logs and exec work on both nodes across the kubelets' container GC, which every minute
  removes the ``/var/log/pods`` directories of pods its kubelet does not know;
* a restore into a WaitForFirstConsumer PVC runs on the node selected for it, node-2 as well as
  node-1 (the CR's ``status.node``, written by the mover from its pod's ``spec.nodeName``), and so
  does a backup of a ``local`` volume (the Job gets the source PV's node affinity);
* ``maxJobsPerNode`` is a limit per node: with 1, two movers run at once, one on each node;
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.cluster import NODE_NAME, SECOND_NODE, snapmover_image
from tests.cluster.harness import BACKING_FILE, on_node
from tests.e2e.launcher_env import LauncherEnv, launcher_env, pvc, wait_for
from tests.fixtures.cluster import ClusterHandle

pytestmark = pytest.mark.e2e

NODES = (NODE_NAME, SECOND_NODE)
SELECTED_NODE = "volume.kubernetes.io/selected-node"
PIN_CONFIG = {"podStartTimeout": "20s"}  # an unschedulable mover fails after this
# the kubelet's container GC runs every minute (ContainerGCPeriod in pkg/kubelet/kubelet.go):
# after this long each kubelet has run it at least once while the other node's pod ran
GC_WAIT_SECONDS = 75


@pytest.fixture(scope="module")
def two_nodes(velero_crds: ClusterHandle) -> Iterator[ClusterHandle]:
    """The session cluster with ``node-2`` started and Ready; removed again after the module."""
    try:
        velero_crds.add_second_node()
    except Exception as e:
        left = velero_crds.remove_second_node()
        pytest.fail(f"the second real node did not start: {e} (left on the host: {left})")
    yield velero_crds
    left = velero_crds.remove_second_node()
    assert not left, f"node-2's teardown left {left}"


def sleeper(name: str, node: str) -> dict[str, Any]:
    """A pod on ``node`` (placed by kube-scheduler) that prints a line and then sleeps."""
    container = {
        "name": "main",
        "image": snapmover_image(),
        "command": ["sh", "-c", 'echo "hello from $NODE"; exec sleep 600'],
        "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "terminationGracePeriodSeconds": 1,
            "containers": [container],
        },
    }


def test_logs_and_exec_work_on_both_nodes_across_the_kubelets_log_gc(
    two_nodes: ClusterHandle, k8s_namespace: str
) -> None:
    cluster, ns = two_nodes, k8s_namespace
    for node in NODES:
        cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(sleeper(f"on-{node}", node)))
    cluster.kubectl("wait", "-n", ns, "--for=condition=Ready", "--timeout=120s", *(f"pod/on-{n}" for n in NODES))
    pods = {n: json.loads(cluster.kubectl("get", "pod", "-n", ns, f"on-{n}", "-o", "json").stdout) for n in NODES}
    log_dirs = {n: f"{ns}_on-{n}_{pods[n]['metadata']['uid']}" for n in NODES}
    roots = {NODE_NAME: Path("/var/log/pods"), SECOND_NODE: cluster.node2.dir / "host" / "var-log-pods"}

    def check(when: str) -> None:
        for node in NODES:
            assert pods[node]["spec"]["nodeName"] == node
            logs = cluster.kubectl("logs", "-n", ns, f"on-{node}", check=False)
            assert logs.returncode == 0 and f"hello from {node}" in logs.stdout, (when, node, logs.stderr)
            done = cluster.kubectl("exec", "-n", ns, f"on-{node}", "--", "sh", "-c", "echo exec on $NODE", check=False)
            assert done.stdout.strip() == f"exec on {node}", (when, node, done.stderr)
            # each kubelet writes its pods' logs into its own /var/log/pods
            assert (roots[node] / log_dirs[node]).is_dir(), (when, node)
            other = SECOND_NODE if node == NODE_NAME else NODE_NAME
            assert not (roots[other] / log_dirs[node]).exists(), (when, node)

    check("at start")
    time.sleep(GC_WAIT_SECONDS)
    check(f"after {GC_WAIT_SECONDS} s")


def restore_target(env: LauncherEnv, name: str, node: str) -> None:
    """A pending WaitForFirstConsumer PVC for a Velero restore, its node already selected."""
    target = pvc(name, selector={"velero.io/dynamic-pv-restore": f"x.{name}.y"})
    target["spec"]["storageClassName"] = "wait-for-consumer"
    target["metadata"]["annotations"] = {SELECTED_NODE: node}
    env.apply(target, env.app)


def test_a_restore_runs_on_the_target_pvcs_selected_node(two_nodes: ClusterHandle, tmp_path: Path) -> None:
    with launcher_env(two_nodes, tmp_path, PIN_CONFIG) as env:
        env.start_launcher()
        env.apply(pvc("data"), env.app)
        env.run_pod_job("fill", "echo pinned > /data/file", "data")
        env.snapshot("snap", "data")
        du = env.data_upload("snap", "data")
        snapshot_id = env.wait_phase("dataupload", du, {"Completed", "Failed"})["status"]["snapshotID"]
        for node in (SECOND_NODE, NODE_NAME):  # the other node first: a mover ignoring the pin lands anywhere
            target = f"on-{node}"
            restore_target(env, target, node)
            dd = env.data_download(snapshot_id, target)
            status = env.wait_phase("datadownload", dd, {"Completed", "Failed"})["status"]
            assert status["phase"] == "Completed", status.get("message")
            assert status["node"] == node
            assert (env.pv_path(target) / "file").read_text() == "pinned\n"


@contextmanager
def local_claim(env: LauncherEnv, name: str, node: str) -> Iterator[Path]:
    """A Filesystem `local` PV on ``node`` (a directory under the cluster's data root, as a CSI
    driver for node-local disks would provision it) and a PVC bound to it; yields the directory."""
    path = env.cluster.data_root / "local" / f"{name}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    pv = f"local-{name}-{env.app}"
    env.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv, "annotations": {BACKING_FILE: str(path)}},  # where the harness snapshots from
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "volumeMode": "Filesystem",
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "local": {"path": str(path)},
                "nodeAffinity": on_node(node),
            },
        }
    )
    claim = pvc(name, size="1Gi")
    claim["spec"].update(storageClassName="", volumeName=pv)
    env.apply(claim, env.app)
    try:
        yield path
    finally:
        env.kubectl("delete", "pvc", name, "-n", env.app, "--wait=false", check=False)
        env.kubectl("delete", "pv", pv, "--wait=false", check=False)


def test_a_backup_of_a_local_volume_runs_where_the_volume_is(two_nodes: ClusterHandle, tmp_path: Path) -> None:
    with launcher_env(two_nodes, tmp_path, PIN_CONFIG) as env:
        env.start_launcher()
        with local_claim(env, "one", NODE_NAME) as one, local_claim(env, "two", SECOND_NODE) as two:
            uploads = {}
            for claim, directory in (("two", two), ("one", one)):
                (directory / "file").write_text(f"local data of {claim}\n")
                env.snapshot(f"{claim}-snap", claim)
                uploads[claim] = env.data_upload(f"{claim}-snap", claim)
            for claim, node in (("one", NODE_NAME), ("two", SECOND_NODE)):
                status = env.wait_phase("dataupload", uploads[claim], {"Completed", "Failed"})["status"]
                assert status["phase"] == "Completed", status.get("message")
                assert status["node"] == node


def mover_pods(env: LauncherEnv) -> list[dict[str, Any]]:
    """The mover pods of the launcher's namespace that hold a place on a node (Pending or Running)."""
    out = env.kubectl("get", "pods", "-n", env.ns, "-l", "snapmover.io/role", "-o", "json").stdout
    return [
        p
        for p in json.loads(out)["items"]
        if p["status"].get("phase") in ("Pending", "Running") and not p["metadata"].get("deletionTimestamp")
    ]


def test_max_jobs_per_node_is_a_limit_per_node(two_nodes: ClusterHandle, tmp_path: Path) -> None:
    with launcher_env(two_nodes, tmp_path, {"maxConcurrentJobs": "5", "maxJobsPerNode": "1"}) as env:
        env.start_launcher()
        env.apply(pvc("data"), env.app)
        env.run_pod_job("fill", "echo small > /data/file", "data")
        for i in range(6):
            env.snapshot(f"snap-{i}", "data")
        for i in range(6):
            env.data_upload(f"snap-{i}", "data")
        most, most_on = 0, dict.fromkeys(NODES, 0)
        busiest: list[Any] = []

        def all_done() -> bool:
            nonlocal most, busiest
            pods = mover_pods(env)
            for node in NODES:
                most_on[node] = max(most_on[node], sum(p["spec"].get("nodeName") == node for p in pods))
            if len(pods) > most:
                most, busiest = len(pods), [(p["metadata"]["name"], p["spec"].get("nodeName")) for p in pods]
            phases = env.kubectl("get", "datauploads", "-n", env.ns, "-o", "jsonpath={.items[*].status.phase}").stdout
            return phases.split().count("Completed") == 6

        wait_for("6 completed uploads", all_done, timeout=300)
        assert all(count <= 1 for count in most_on.values()), most_on  # one mover per node at a time
        assert most == 2, (most, busiest)  # and one on each node at once: the limit is not global
