"""e2e topology (#16 item 3) with the real kube-scheduler: a restore into a PVC with a selected node
(WaitForFirstConsumer) runs its mover on that node, and a backup of a `local` volume runs where the
volume is (the Job gets the source PV's node affinity).

The test cluster has one real node (``node-1``; README: a second one was not made to work yet), so
each placement is shown both ways: pinned to ``node-1`` the mover runs there (the CR's
``status.node``, written by the mover from its pod's ``spec.nodeName``), pinned to ``node-2``, which
does not exist, the scheduler refuses the pod and the CR fails with its message — a mover that
ignored the pin would have run on ``node-1`` and completed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.cluster.harness import BACKING_FILE, on_node
from tests.e2e.launcher_env import LauncherEnv, launcher_env, pvc
from tests.fixtures.cluster import ClusterHandle

pytestmark = pytest.mark.e2e

SELECTED_NODE = "volume.kubernetes.io/selected-node"
PIN_CONFIG = {"podStartTimeout": "20s"}  # an unschedulable mover fails after this


def restore_target(env: LauncherEnv, name: str, node: str) -> None:
    """A pending WaitForFirstConsumer PVC for a Velero restore, its node already selected."""
    target = pvc(name, selector={"velero.io/dynamic-pv-restore": f"x.{name}.y"})
    target["spec"]["storageClassName"] = "wait-for-consumer"
    target["metadata"]["annotations"] = {SELECTED_NODE: node}
    env.apply(target, env.app)


def test_a_restore_runs_on_the_target_pvcs_selected_node(velero_crds: ClusterHandle, tmp_path: Path) -> None:
    with launcher_env(velero_crds, tmp_path, PIN_CONFIG) as env:
        env.start_launcher()
        env.apply(pvc("data"), env.app)
        env.run_pod_job("fill", "echo pinned > /data/file", "data")
        env.snapshot("snap", "data")
        du = env.data_upload("snap", "data")
        snapshot_id = env.wait_phase("dataupload", du, {"Completed", "Failed"})["status"]["snapshotID"]

        restore_target(env, "near", "node-1")
        status = env.wait_phase("datadownload", env.data_download(snapshot_id, "near"), {"Completed", "Failed"})
        assert status["status"]["phase"] == "Completed", status["status"].get("message")
        assert status["status"]["node"] == "node-1"
        assert (env.pv_path("near") / "file").read_text() == "pinned\n"

        restore_target(env, "far", "node-2")
        status = env.wait_phase("datadownload", env.data_download(snapshot_id, "far"), {"Completed", "Failed"})
        message = str(status["status"].get("message"))
        assert status["status"]["phase"] == "Failed", status["status"]
        assert "didn't match" in message and "cannot start" in message, message


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
                "capacity": {"storage": "64Mi"},
                "accessModes": ["ReadWriteOnce"],
                "volumeMode": "Filesystem",
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "local": {"path": str(path)},
                "nodeAffinity": on_node(node),
            },
        }
    )
    claim = pvc(name)
    claim["spec"].update(storageClassName="", volumeName=pv)
    env.apply(claim, env.app)
    try:
        yield path
    finally:
        env.kubectl("delete", "pvc", name, "-n", env.app, "--wait=false", check=False)
        env.kubectl("delete", "pv", pv, "--wait=false", check=False)


def test_a_backup_of_a_local_volume_runs_where_the_volume_is(velero_crds: ClusterHandle, tmp_path: Path) -> None:
    with launcher_env(velero_crds, tmp_path, PIN_CONFIG) as env:
        env.start_launcher()
        with local_claim(env, "here", "node-1") as here, local_claim(env, "elsewhere", "node-2") as elsewhere:
            for directory in (here, elsewhere):
                (directory / "file").write_text("local data\n")
            env.snapshot("here-snap", "here")
            env.snapshot("elsewhere-snap", "elsewhere")
            status = env.wait_phase("dataupload", env.data_upload("here-snap", "here"), {"Completed", "Failed"})
            assert status["status"]["phase"] == "Completed", status["status"].get("message")
            assert status["status"]["node"] == "node-1"
            far = env.wait_phase("dataupload", env.data_upload("elsewhere-snap", "elsewhere"), {"Completed", "Failed"})
            message = str(far["status"].get("message"))
            assert far["status"]["phase"] == "Failed", far["status"]
            assert "didn't match" in message and "cannot start" in message, message
