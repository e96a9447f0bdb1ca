"""Production failure paths on a real node: every failure names its cause, nothing waits that should fail.

kube-scheduler, a real kubelet on containerd and runc run the mover pods (``tests/cluster/node.py``),
so the failures are Kubernetes' own: a memory limit the mover exceeds is a kernel OOM kill, an
unsatisfiable nodeSelector is kube-scheduler's verdict, a volume that cannot be mounted is the
kubelet's FailedMount, a missing StorageClass is the PV controller's ProvisioningFailed. Each
test checks the CR's message names the cause and the remedy, that nothing the launcher made for
the CR is left behind and that no retry loop runs: one mover pod, or for a mover that died (an
OOM kill) one per attempt, 1 + ``moverRetries`` (issue #16 item 5), each dying the same way.

The module uses the session cluster when it has a real node (``SNAPMOVER_REAL_NODE=1``), else
starts its own real-node cluster for the module (the machine-wide real-node lock queues it
behind any other). The image is the one ``make images`` built (``build/images``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs.contract import LABEL_OWNER_UID
from launcher.failures import classify
from tests.cluster.cluster import snapmover_image
from tests.e2e.conftest import CRD_DIR
from tests.e2e.launcher_env import LauncherEnv, launcher_env, pvc, wait_for
from tests.e2e.test_image import project_version
from tests.figures import Figures
from tests.fixtures.cluster import ClusterHandle

pytestmark = [pytest.mark.reliability, pytest.mark.e2e, pytest.mark.slow]

IMAGE = snapmover_image()
FINAL = {"Completed", "Failed", "Canceled"}
OWNED = ("jobs", "pods", "pvc", "volumesnapshots")


@pytest.fixture(scope="module")
def real_cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[ClusterHandle]:
    """A cluster whose pods run on a real node, with Velero's CRDs."""
    archive = Path(__file__).parents[2] / "build" / "images" / f"snapmover-{project_version()}.oci.tar"
    assert archive.exists(), f"{archive} is missing: run `make images` first"
    if os.environ.get("SNAPMOVER_REAL_NODE") == "1":
        cluster: ClusterHandle = request.getfixturevalue("kube_cluster")
        own = None
    else:
        cluster = own = ClusterHandle(tmp_path_factory.mktemp("real-cluster"), real_node=True)
        try:
            own.start()
        except Exception as e:
            own.stop()
            pytest.fail(f"cannot start a cluster with a real node: {e}")
    try:
        cluster.kubectl("apply", "-k", str(CRD_DIR))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/datauploads.velero.io")
        yield cluster
    finally:
        if own is not None:
            own.stop()


def config(**extra: str) -> dict[str, str]:
    """Launcher settings for the real node: the imported image, Jobs deleted at once when final."""
    return {"image": IMAGE, "imagePullPolicy": "Never", "jobRetentionSeconds": "0", **extra}


def fill(env: LauncherEnv, claim: str, script: str) -> None:
    """Create PVC ``claim`` in the app namespace and run ``script`` on it (a pod from the image, as root)."""
    env.apply(pvc(claim), env.app)
    env.run_pod_job(f"fill-{claim}", script, claim)


def upload(env: LauncherEnv, claim: str = "data", **spec: Any) -> tuple[str, str]:
    """Snapshot ``claim`` and create a DataUpload of it: (name, uid)."""
    snap = f"snap-{claim}-{int(time.monotonic() * 1000) % 100000}"
    env.snapshot(snap, claim)
    name = env.data_upload(snap, claim, **spec)
    return name, str(env.get("dataupload", name)["metadata"]["uid"])


def final_status(env: LauncherEnv, name: str, timeout: float = 300) -> dict[str, Any]:
    return dict(env.wait_phase("dataupload", name, FINAL, timeout=timeout)["status"])


def events_of(env: LauncherEnv, kind: str, name: str) -> list[dict[str, Any]]:
    selector = f"involvedObject.kind={kind},involvedObject.name={name}"
    out = env.kubectl("get", "events", "-n", env.ns, "--field-selector", selector, "-o", "json").stdout
    return list(json.loads(out)["items"])


def left_behind(env: LauncherEnv, name: str, uid: str) -> list[str]:
    """What the launcher made for the CR that still exists (and our finalizer), waited for briefly."""

    def leftovers() -> list[str]:
        found = [
            f"{kind}/{line}"
            for kind in OWNED
            for line in env.kubectl(
                "get", kind, "-n", env.ns, "-l", f"{LABEL_OWNER_UID}={uid}", "-o", "name", check=False
            ).stdout.split()
        ]
        finalizers = env.get("dataupload", name)["metadata"].get("finalizers") or []
        return found + [f"finalizer {f}" for f in finalizers]

    try:
        wait_for("the CR's objects to be cleaned up", lambda: not leftovers(), timeout=90)
    except AssertionError:
        return leftovers()
    return []


def mover_pods_created(env: LauncherEnv, name: str) -> int:
    """How many mover pods were ever created for the CR (the scheduler posts one Scheduled/FailedScheduling
    Event per pod; a retry loop would show several)."""
    out = env.kubectl("get", "events", "-n", env.ns, "-o", "json").stdout
    pods = {
        e["involvedObject"]["name"]
        for e in json.loads(out)["items"]
        if e["involvedObject"].get("kind") == "Pod" and e["involvedObject"]["name"].startswith(f"snapmover-du-{name}")
    }
    return len(pods)


AREA = "failure causes (real node)"


def record(
    figures: Figures, failure: str, status: dict[str, Any], leaks: list[str], pods: int, retries: str = "none"
) -> None:
    figures.add(
        AREA,
        f"{failure}: CR phase: message; left behind; mover pods created (retries)",
        f"{status.get('phase')}: {str(status.get('message'))[:400]}; {leaks or 'nothing'}; {pods} ({retries})",
    )


def test_a_memory_limit_the_mover_exceeds_fails_as_oom_killed(
    real_cluster: ClusterHandle, tmp_path: Path, figures: Figures
) -> None:
    limits = json.dumps({"limits": {"memory": "24Mi"}, "requests": {"memory": "24Mi"}})
    with launcher_env(real_cluster, tmp_path, config(jobResources=limits)) as env:
        env.start_launcher()
        fill(env, "data", "head -c 20000000 /dev/urandom > /data/big && echo x > /data/small")
        name, uid = upload(env)
        status = final_status(env, name)
        message = str(status.get("message"))
        assert status["phase"] == "Failed", status
        assert "more memory than its limit of 24Mi" in message and "jobResources.limits.memory" in message, message
        reasons = [e["reason"] for e in events_of(env, "DataUpload", name)]
        assert "OOMKilled" in reasons, reasons
        # a mover that died is retried (moverRetries, default 2): each attempt is OOM-killed alike
        assert "the mover died in each of 3 attempt(s) (moverRetries 2)" in message, message
        leaks, pods = left_behind(env, name, uid), mover_pods_created(env, name)
        assert not leaks and pods == 3, (leaks, pods)
        assert "Traceback" not in env.launcher_log()
    record(figures, "OOMKilled (jobResources limit 24Mi)", status, leaks, pods, "moverRetries 2, all used")


def test_an_unsatisfiable_node_selector_fails_with_the_schedulers_message(
    real_cluster: ClusterHandle, tmp_path: Path, figures: Figures
) -> None:
    selector = json.dumps({"snapmover.test/absent": "yes"})
    with launcher_env(real_cluster, tmp_path, config(nodeSelector=selector, podStartTimeout="10s")) as env:
        env.start_launcher()
        fill(env, "data", "echo x > /data/x")
        name, uid = upload(env)
        status = final_status(env, name)
        message = str(status.get("message"))
        assert status["phase"] == "Failed", status
        assert "0/1 nodes are available: 1 node(s) didn't match" in message and "nodeSelector" in message, message
        assert "cannot start (after 10s)" in message, message
        assert "Unschedulable" in [e["reason"] for e in events_of(env, "DataUpload", name)]
        leaks, pods = left_behind(env, name, uid), mover_pods_created(env, name)
        assert not leaks and pods == 1, (leaks, pods)
    record(figures, "Unschedulable (nodeSelector no node has)", status, leaks, pods)


def broken_repository(env: LauncherEnv) -> None:
    """A filesystem storage location ``broken`` whose PVC is bound to a hostPath PV that is no directory."""
    pv = f"broken-{env.ns}"
    env.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": f"/nonexistent-snapmover-test/{env.ns}", "type": "Directory"},
                "claimRef": {"namespace": env.ns, "name": "broken-repository"},
            },
        }
    )
    claim = pvc("broken-repository", access="ReadWriteMany", size="1Gi")
    claim["spec"].update({"storageClassName": "", "volumeName": pv})
    env.apply(claim)
    wait_for("the broken repository PVC to bind", lambda: env.get("pvc", "broken-repository")["status"].get("phase")
             == "Bound")  # fmt: skip


def test_a_volume_that_cannot_be_mounted_fails_after_the_pod_start_timeout(
    real_cluster: ClusterHandle, tmp_path: Path, figures: Figures
) -> None:
    locations = json.dumps(
        {
            "default": {"provider": "filesystem", "pvc": "snapmover-repository"},
            "broken": {"provider": "filesystem", "pvc": "broken-repository"},
        }
    )
    with launcher_env(real_cluster, tmp_path, config(storageLocations=locations, podStartTimeout="20s")) as env:
        broken_repository(env)
        env.start_launcher()
        fill(env, "data", "echo x > /data/x")
        name, uid = upload(env, backupStorageLocation="broken")
        status = final_status(env, name, timeout=240)  # the Job deadline is 24 h: only podStartTimeout ends this
        message = str(status.get("message"))
        assert status["phase"] == "Failed", status
        assert "cannot start (after 20s)" in message and "hostPath type check failed" in message, message
        assert "FailedMount" in [e["reason"] for e in events_of(env, "DataUpload", name)]
        leaks, pods = left_behind(env, name, uid), mover_pods_created(env, name)
        assert not leaks and pods == 1, (leaks, pods)
        env.kubectl("delete", "pvc", "broken-repository", "-n", env.ns, "--wait=false", check=False)
        env.kubectl("delete", "pv", f"broken-{env.ns}", "--wait=false", check=False)
    record(figures, "FailedMount / stuck in ContainerCreating (volume cannot be mounted)", status, leaks, pods)


def test_a_missing_secret_volume_is_classified_from_the_kubelets_events(
    real_cluster: ClusterHandle, tmp_path: Path, figures: Figures
) -> None:
    with launcher_env(real_cluster, tmp_path, config()) as env:
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "needs-secret"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {"name": "mover", "image": IMAGE, "imagePullPolicy": "Never", "command": ["true"],
                     "volumeMounts": [{"name": "creds", "mountPath": "/credentials"}]}
                ],
                "volumes": [{"name": "creds", "secret": {"secretName": "no-such-credentials"}}],
            },
        }  # fmt: skip
        env.apply(body)

        def mounted_events() -> list[dict[str, Any]]:
            found = events_of(env, "Pod", "needs-secret")
            return found if any(e["reason"] == "FailedMount" for e in found) else []

        events = wait_for("the kubelet's FailedMount", mounted_events, timeout=120)
        pod = env.get("pod", "needs-secret")
        cause = classify(pod, events)
        assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ContainerCreating"
        assert cause is not None and cause.reason == "FailedMount", cause
        assert 'secret "no-such-credentials" not found' in cause.message, cause
        env.kubectl("delete", "pod", "needs-secret", "-n", env.ns, "--grace-period=0", "--wait=true")
    figures.add(
        AREA,
        "FailedMount (missing Secret volume): classify() over the real pod + kubelet Events",
        f"{cause.reason}: {cause.message[:200]}",
    )


def test_a_backup_waits_for_its_pvc_and_a_pvc_that_never_binds_names_class_and_event(
    real_cluster: ClusterHandle, tmp_path: Path, figures: Figures
) -> None:
    late, never = f"late-{os.getpid()}", f"never-{os.getpid()}"
    overrides = json.dumps({"slow-source": {"storageClass": late}, "lost-source": {"storageClass": never}})
    settings = config(backupPVCOverrides=overrides, podStartTimeout="5s", prepareTimeout="60s")
    with launcher_env(real_cluster, tmp_path, settings) as env:
        env.start_launcher()
        fill(env, "data", "mkdir -p /data/d && echo hello > /data/d/h && seq 1 5000 > /data/n")
        slow_csi = {"volumeSnapshot": "", "storageClass": "slow-source", "snapshotClass": "standard"}
        lost_csi = {**slow_csi, "storageClass": "lost-source"}
        env.snapshot("snap-slow", "data")
        env.snapshot("snap-lost", "data")
        slow = env.data_upload("snap-slow", "data", csiSnapshot={**slow_csi, "volumeSnapshot": "snap-slow"})
        lost = env.data_upload("snap-lost", "data", csiSnapshot={**lost_csi, "volumeSnapshot": "snap-lost"})
        slow_uid = env.get("dataupload", slow)["metadata"]["uid"]
        claim = wait_for(
            "the backup PVC",
            lambda: (
                env.kubectl(
                    "get", "pvc", "-n", env.ns, "-l", f"{LABEL_OWNER_UID}={slow_uid}", "-o", "name", check=False
                )
                .stdout.strip()
                .split("/")[-1]
            ),
        )
        time.sleep(12)  # longer than podStartTimeout: a Job created now would already have failed its pod
        assert env.get("pvc", claim)["status"].get("phase") == "Pending"
        assert env.phase("dataupload", slow) == "Accepted"
        jobs = env.kubectl("get", "jobs", "-n", env.ns, "-l", f"{LABEL_OWNER_UID}={slow_uid}", "-o", "name").stdout
        assert jobs.strip() == "", "the mover Job was created before its PVC was Bound"
        env.apply(
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": late},
                "provisioner": "hostpath.snapmover.test",
                "reclaimPolicy": "Delete",
                "volumeBindingMode": "Immediate",
            }
        )
        env.kubectl("annotate", "pvc", "-n", env.ns, claim, "snapmover-test/nudge=1")  # the provisioner sees it now
        done = final_status(env, slow)
        assert done["phase"] == "Completed", done
        failed = final_status(env, lost)
        message = str(failed.get("message"))
        assert failed["phase"] == "Failed" and "timed out after 60s preparing: PVC" in message, failed
        for needle in (f"StorageClass {never} not found", f'ProvisioningFailed: storageclass.storage.k8s.io "{never}"'):
            assert needle in message, message
        leaks = left_behind(env, lost, env.get("dataupload", lost)["metadata"]["uid"])
        assert not leaks, leaks
        env.kubectl("delete", "storageclass", late, check=False)
    figures.add(
        AREA,
        "backup PVC Bound only after podStartTimeout (StorageClass created 12 s late): outcome; Job before Bound",
        f"{done['phase']}; none",
    )
    figures.add(
        AREA,
        "backup PVC never Bound (StorageClass missing): CR phase: message; left behind",
        f"{failed['phase']}: {message[:300]}; {leaks or 'nothing'}",
    )
