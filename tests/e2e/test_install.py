"""e2e: install with `kubectl apply -k manifests/` and drive manifests/examples/ to Completed, kubectl only.

The launcher runs as the Deployment's pod — a container of the image ``make images`` built, on the
real node, with the pod's ServiceAccount token — so this also proves the shipped RBAC and the
Deployment's security context are enough. The examples' images (``busybox:1.36``,
``snapmover:0.1.0``) are swapped for that image: the node cannot pull.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster.cluster import snapmover_image
from tests.fixtures.cluster import ClusterHandle
from tests.rbac_inventory import launcher_permissions

pytestmark = pytest.mark.e2e
MANIFESTS = Path(__file__).parents[2] / "manifests"
EXAMPLES = MANIFESTS / "examples"
SNAPMOVER = str(Path(sys.executable).parent / "snapmover")
SA = "system:serviceaccount:snapmover:snapmover-launcher"
VELERO_CRDS = ("datauploads.velero.io", "datadownloads.velero.io", "backupstoragelocations.velero.io")
CRDS_BEFORE: dict[str, str] = {}  # name -> resourceVersion before the install


def crd_versions(cluster: ClusterHandle) -> dict[str, str]:
    return {name: jsonpath(cluster, "crd", name, "-o", "jsonpath={.metadata.resourceVersion}") for name in VELERO_CRDS}


def jsonpath(cluster: ClusterHandle, *args: str) -> str:
    return cluster.kubectl("get", *args, check=False).stdout.strip()


def wait_value(cluster: ClusterHandle, want: set[str], *args: str, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    value = ""
    while time.monotonic() < deadline:
        value = jsonpath(cluster, *args)
        if value in want:
            return value
        time.sleep(0.5)
    raise AssertionError(f"kubectl get {' '.join(args)} stayed {value!r}, wanted {want}")


@pytest.fixture(scope="module")
def installed(velero_crds: ClusterHandle) -> ClusterHandle:
    k = velero_crds
    # Velero's CRDs are installed (the session applied manifests/crd): mark them as Velero's own, so
    # a default install that applied its copy would change them (test_default_install_leaves_velero_crds_alone)
    k.kubectl("label", "--overwrite", "crd", *VELERO_CRDS, "app.kubernetes.io/part-of=velero")
    CRDS_BEFORE.update(crd_versions(k))
    k.kubectl("apply", "-k", str(MANIFESTS))
    k.kubectl("apply", "-f", str(EXAMPLES / "storage-location-filesystem.yaml"))
    locations = json.dumps({"default": {"provider": "filesystem", "pvc": "snapmover-repository"}})
    k.kubectl(
        "-n",
        "snapmover",
        "patch",
        "configmap",
        "snapmover-config",
        "--type",
        "merge",
        "-p",
        json.dumps({"data": {"storageLocations": locations, "jobRetentionSeconds": "60"}}),
    )
    image = snapmover_image()  # what `kustomize edit set image` would write, in both places
    k.kubectl("-n", "snapmover", "set", "image", "deployment/snapmover-launcher", f"launcher={image}")
    k.kubectl(
        "-n", "snapmover", "patch", "configmap", "snapmover-config", "--type", "merge", "-p",
        json.dumps({"data": {"image": image}}),
    )  # fmt: skip
    k.kubectl("-n", "snapmover", "rollout", "status", "deployment/snapmover-launcher", "--timeout=180s")
    try:
        yield k  # type: ignore[misc]
    finally:
        k.kubectl("delete", "datauploads", "--all", "-n", "snapmover", "--timeout=60s", check=False)
        for ns in ("demo-app", "snapmover"):
            k.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        k.kubectl("delete", "clusterrole,clusterrolebinding", "snapmover-launcher", check=False)
        k.kubectl("label", "--overwrite", "crd", *VELERO_CRDS, "app.kubernetes.io/part-of=snapmover", check=False)


def test_rbac_is_exactly_what_the_launcher_uses(installed: ClusterHandle) -> None:
    """Every permission of the launcher's API inventory (tests/rbac_inventory.py, which a unit test
    holds equal to both the code's calls and rbac.yaml) is granted on the cluster; neighbours are not."""

    def can(verb: str, what: str, ns: str | None) -> str:
        where = ["-n", ns] if ns else []
        return str(installed.kubectl("auth", "can-i", verb, what, *where, f"--as={SA}", check=False).stdout.strip())

    cluster_scoped = {"nodes", "persistentvolumes", "storageclasses", "volumesnapshotcontents"}
    for p in sorted(launcher_permissions()):
        what = f"{p.resource}.{p.group}" if p.group else p.resource
        ns = None if p.resource in cluster_scoped else ("snapmover" if p.scope == "namespace" else "demo-app")
        for name in p.names or ("",):
            assert can(p.verb, f"{what}/{name}" if name else what, ns) == "yes", p
    for verb, what, ns in [
        ("delete", "secrets", "snapmover"),
        ("list", "secrets", "snapmover"),
        ("get", "secrets", "demo-app"),
        ("create", "pods", "snapmover"),
        ("delete", "persistentvolumeclaims", "demo-app"),
        ("update", "datauploads.velero.io", "demo-app"),
        ("delete", "persistentvolumes", None),
        ("update", "leases.coordination.k8s.io/someone-elses", "snapmover"),
        ("get", "configmaps/other-config", "snapmover"),
        ("create", "volumesnapshots.snapshot.storage.k8s.io", "demo-app"),
    ]:
        assert can(verb, what, ns) == "no", (verb, what, ns)


def test_default_install_leaves_velero_crds_alone(installed: ClusterHandle) -> None:
    assert CRDS_BEFORE and crd_versions(installed) == CRDS_BEFORE  # not a single write to Velero's CRDs
    for name in VELERO_CRDS:
        assert jsonpath(installed, "crd", name, "-o", "jsonpath={.metadata.labels.app\\.kubernetes\\.io/part-of}") == (
            "velero"
        )
    # without Velero the overlay adds the CRDs: the API server takes it (server-side dry run)
    out = installed.kubectl("apply", "-k", str(MANIFESTS / "overlays" / "without-velero"), "--dry-run=server").stdout
    assert all(f"customresourcedefinition.apiextensions.k8s.io/{name}" in out for name in VELERO_CRDS), out


def example(name: str) -> str:
    """An example manifest with its images replaced by the one the node has."""
    text = (EXAMPLES / name).read_text()
    return text.replace("busybox:1.36", snapmover_image()).replace(
        "image: snapmover:0.1.0", f"image: {snapmover_image()}"
    )


def example_backup(k: ClusterHandle) -> tuple[str, str]:
    """manifests/examples' app, snapshot and DataUpload, Completed: (DataUpload name, snapshot id)."""
    if jsonpath(k, "-n", "demo-app", "pvc", "data", "-o", "jsonpath={.status.phase}") != "Bound":
        k.kubectl("apply", "-f", "-", input=example("app.yaml"))
        k.kubectl("-n", "demo-app", "wait", "--for=condition=complete", "job/write-sample-data", "--timeout=120s")
    k.kubectl("delete", "-f", str(EXAMPLES / "volumesnapshot.yaml"), "--ignore-not-found", "--wait=true")
    k.kubectl("apply", "-f", str(EXAMPLES / "volumesnapshot.yaml"))
    wait_value(k, {"true"}, "-n", "demo-app", "volumesnapshot", "data-snapshot", "-o", "jsonpath={.status.readyToUse}")
    du = k.kubectl("create", "-f", str(EXAMPLES / "dataupload.yaml"), "-o", "name").stdout.strip().split("/")[-1]
    phase = wait_value(
        k, {"Completed", "Failed"}, "-n", "snapmover", "dataupload", du, "-o", "jsonpath={.status.phase}"
    )
    assert phase == "Completed", jsonpath(k, "-n", "snapmover", "dataupload", du, "-o", "jsonpath={.status.message}")
    return du, jsonpath(k, "-n", "snapmover", "dataupload", du, "-o", "jsonpath={.status.snapshotID}")


def test_examples_complete_with_kubectl_only(installed: ClusterHandle) -> None:
    k = installed
    du, snapshot_id = example_backup(k)
    assert "Completed" in k.kubectl("get", "datauploads", "-n", "snapmover").stdout
    k.kubectl("apply", "-f", str(EXAMPLES / "restore-pvc.yaml"))
    dd_yaml = (EXAMPLES / "datadownload.yaml").read_text().replace("SNAPSHOT_ID", snapshot_id)
    dd = k.kubectl("create", "-f", "-", "-o", "name", input=dd_yaml).stdout.strip().split("/")[-1]
    phase = wait_value(
        k, {"Completed", "Failed"}, "-n", "snapmover", "datadownload", dd, "-o", "jsonpath={.status.phase}"
    )
    assert phase == "Completed", jsonpath(k, "-n", "snapmover", "datadownload", dd, "-o", "jsonpath={.status.message}")
    assert jsonpath(k, "-n", "demo-app", "pvc", "data-restored", "-o", "jsonpath={.status.phase}") == "Bound"
    logs = k.kubectl("logs", "-n", "snapmover", f"job/snapmover-du-{du}").stdout
    assert "backup complete" in logs


def test_cronjob_backups_are_incremental_and_retention_applies(installed: ClusterHandle) -> None:
    """The CronJob example's Job template, run three times (as `kubectl create job --from=cronjob/…`
    does; kubectl cannot do that against a 1.20 API server, which has no batch/v1 CronJob)."""
    import yaml

    k = installed
    if jsonpath(k, "-n", "demo-app", "pvc", "data", "-o", "jsonpath={.status.phase}") != "Bound":
        k.kubectl("apply", "-f", "-", input=example("app.yaml"))
        k.kubectl("-n", "demo-app", "wait", "--for=condition=complete", "job/write-sample-data", "--timeout=120s")
    docs = list(yaml.safe_load_all(example("cronjob-backup.yaml")))
    rbac = [d for d in docs if d["kind"] != "CronJob"]
    (cron,) = [d for d in docs if d["kind"] == "CronJob"]
    cmd = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    cmd[cmd.index("--keep-last") + 1] = "2"
    cmd.remove("--keep-weekly")
    cmd.remove("4")
    k.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rbac))
    snapshots = []
    for run in range(3):
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": f"backup-data-{run}", "namespace": "demo-app"},
            "spec": cron["spec"]["jobTemplate"]["spec"],
        }
        k.kubectl("apply", "-f", "-", input=json.dumps(job))
        k.kubectl("-n", "demo-app", "wait", "--for=condition=complete", f"job/backup-data-{run}", "--timeout=180s")
        items = json.loads(
            k.kubectl(
                "get", "datauploads", "-n", "snapmover", "-l", "snapmover.io/schedule=demo-app-data", "-o", "json"
            ).stdout
        )["items"]
        newest = max(items, key=lambda o: o["metadata"]["creationTimestamp"] + o["metadata"]["name"])
        assert newest["status"]["phase"] == "Completed"
        snapshots.append(newest["status"])
    assert snapshots[1]["dataMoverResult"]["parent"] == snapshots[0]["snapshotID"]
    assert snapshots[2]["dataMoverResult"]["parent"] == snapshots[1]["snapshotID"]
    assert snapshots[2]["incrementalBytes"] == 0

    def remaining() -> int:
        names = k.kubectl(
            "get", "datauploads", "-n", "snapmover", "-l", "snapmover.io/schedule=demo-app-data", "-o", "name"
        ).stdout.split()
        return len(names)

    deadline = time.monotonic() + 90  # a deleted DataUpload goes once its snapshot is forgotten
    while remaining() != 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert remaining() == 2
    logs = k.kubectl("logs", "-n", "demo-app", "job/backup-data-2").stdout
    assert "Completed" in logs and "retention: deleted DataUpload" in logs


def test_uninstall_as_the_readme_describes(installed: ClusterHandle, tmp_path: Path) -> None:
    """README "Uninstall": stop the launcher, release the finalizers, save the password, keep the
    repository's volume, delete the install: the backups stay restorable; Velero's CRDs stay."""
    k = installed
    du, snapshot_id = example_backup(k)
    assert "snapmover.io/cleanup" in jsonpath(
        k, "-n", "snapmover", "dataupload", du, "-o", "jsonpath={.metadata.finalizers}"
    )
    # 1. stop the launcher, so that deleting a DataUpload does not forget its snapshot
    k.kubectl("-n", "snapmover", "scale", "deployment/snapmover-launcher", "--replicas=0")
    wait_value(
        k,
        {""},
        "-n",
        "snapmover",
        "pods",
        "-l",
        "app.kubernetes.io/name=snapmover,app.kubernetes.io/component=launcher",
        "-o",
        "name",
    )
    names = k.kubectl("-n", "snapmover", "get", "datauploads,datadownloads", "-o", "name").stdout.split()
    assert names
    for name in names:  # the README's xargs pipeline, one object at a time
        k.kubectl("-n", "snapmover", "patch", name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    # save the password; a filesystem location's PVC lives in the namespace: keep its volume
    password = base64.b64decode(
        jsonpath(
            k, "-n", "snapmover", "secret", "snapmover-repo-credentials", "-o", "jsonpath={.data.repository-password}"
        )
    ).decode()
    pv = jsonpath(k, "-n", "snapmover", "pvc", "snapmover-repository", "-o", "jsonpath={.spec.volumeName}")
    k.kubectl("patch", "pv", pv, "-p", '{"spec":{"persistentVolumeReclaimPolicy":"Retain"}}')
    repo_dir = Path(jsonpath(k, "pv", pv, "-o", "jsonpath={.spec.hostPath.path}"))
    # 2. delete the install
    k.kubectl("delete", "-k", str(MANIFESTS), "--timeout=120s")
    wait_value(k, {""}, "namespace", "snapmover", "-o", "name", "--ignore-not-found")
    for gone in ("clusterrole/snapmover-launcher", "clusterrolebinding/snapmover-launcher"):
        assert k.kubectl("get", gone, check=False).returncode != 0, gone
    assert crd_versions(k).keys() == set(VELERO_CRDS) and all(crd_versions(k).values())  # Velero's CRDs stay
    # 3. the repository is untouched: the saved password lists and restores the backup
    env = {**os.environ, "SNAPMOVER_PASSWORD": password}
    url = f"file://{repo_dir}/snapmover/demo-app"
    listed = subprocess.run(
        [SNAPMOVER, "snapshots", "-r", url, "--json"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert listed.returncode == 0, listed.stderr
    assert snapshot_id in {s["id"] for s in json.loads(listed.stdout)["snapshots"]}
    restored = tmp_path / "restored"
    done = subprocess.run(
        [SNAPMOVER, "download", "-r", url, "--snapshot", snapshot_id, "--target", str(restored)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert any(restored.iterdir())
    k.kubectl("delete", "pv", pv, check=False)
