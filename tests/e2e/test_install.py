"""e2e: install with `kubectl apply -k manifests/` and drive manifests/examples/ to Completed, kubectl only.

The launcher runs as the Deployment's pod — a container of the image ``make images`` built, on the
real node, with the pod's ServiceAccount token — so this also proves the shipped RBAC and the
Deployment's security context are enough. The examples' images (``busybox:1.36``,
``snapmover:0.1.0``) are swapped for that image: the node cannot pull.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.cluster.cluster import snapmover_image
from tests.fixtures.cluster import ClusterHandle
from tests.rbac_inventory import launcher_permissions

pytestmark = pytest.mark.e2e
MANIFESTS = Path(__file__).parents[2] / "manifests"
EXAMPLES = MANIFESTS / "examples"
SA = "system:serviceaccount:snapmover:snapmover-launcher"


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


def example(name: str) -> str:
    """An example manifest with its images replaced by the one the node has."""
    text = (EXAMPLES / name).read_text()
    return text.replace("busybox:1.36", snapmover_image()).replace(
        "image: snapmover:0.1.0", f"image: {snapmover_image()}"
    )


def test_examples_complete_with_kubectl_only(installed: ClusterHandle) -> None:
    k = installed
    k.kubectl("apply", "-f", "-", input=example("app.yaml"))
    k.kubectl("-n", "demo-app", "wait", "--for=condition=complete", "job/write-sample-data", "--timeout=120s")
    k.kubectl("apply", "-f", str(EXAMPLES / "volumesnapshot.yaml"))
    wait_value(k, {"true"}, "-n", "demo-app", "volumesnapshot", "data-snapshot", "-o", "jsonpath={.status.readyToUse}")
    du = k.kubectl("create", "-f", str(EXAMPLES / "dataupload.yaml"), "-o", "name").stdout.strip().split("/")[-1]
    phase = wait_value(
        k, {"Completed", "Failed"}, "-n", "snapmover", "dataupload", du, "-o", "jsonpath={.status.phase}"
    )
    assert phase == "Completed", jsonpath(k, "-n", "snapmover", "dataupload", du, "-o", "jsonpath={.status.message}")
    assert "Completed" in k.kubectl("get", "datauploads", "-n", "snapmover").stdout
    snapshot_id = jsonpath(k, "-n", "snapmover", "dataupload", du, "-o", "jsonpath={.status.snapshotID}")
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
