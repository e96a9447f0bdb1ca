"""Shared helpers for launcher e2e tests: a launcher namespace, the launcher process, CR builders.

The launcher runs as a local subprocess (``snapmover launcher``) against the local cluster; the
mover Jobs it creates, and the Jobs that fill the test's volumes, run from the image ``make images``
builds (``tests.cluster.cluster.snapmover_image``; on a real node as containers of that image).
Repositories are ``file://`` on an RWX PVC (a ConfigMap storage location of provider filesystem).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.cluster.cluster import snapmover_image
from tests.fixtures.cluster import ClusterHandle

DEFAULT_CONFIG = {
    "image": snapmover_image(),
    "jobRetentionSeconds": "30",
    "podStartTimeout": "30s",  # a healthy pod can sit in ContainerCreating for seconds on a loaded 2-core node
    "prepareTimeout": "180s",  # a backup PVC of 60,000 files took over 90 s to provision on the loaded real node
    "resyncPeriod": "2s",
    "storageLocations": json.dumps({"default": {"provider": "filesystem", "pvc": "snapmover-repository"}}),
}


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120) -> Any:
    """Poll ``check`` until it returns something truthy; AssertionError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


class LauncherEnv:
    """A launcher namespace with its ConfigMap and repository PVC, plus an app namespace."""

    def __init__(self, cluster: ClusterHandle, tmp: Path, config: dict[str, str] | None = None) -> None:
        self.cluster = cluster
        self.ns = f"sm-{uuid.uuid4().hex[:8]}"
        self.app = f"app-{uuid.uuid4().hex[:8]}"
        self.tmp = tmp
        self.config = {**DEFAULT_CONFIG, **(config or {})}
        self.procs: list[subprocess.Popen[bytes]] = []

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(*args, check=check, input=input)

    def apply(self, obj: dict[str, Any], ns: str | None = None) -> None:
        self.kubectl("apply", "-n", ns or self.ns, "-f", "-", input=json.dumps(obj))

    def create(self, obj: dict[str, Any], ns: str | None = None) -> str:
        out = self.kubectl("create", "-n", ns or self.ns, "-f", "-", "-o", "name", input=json.dumps(obj)).stdout
        return out.strip().split("/")[-1]

    def get(self, kind: str, name: str, ns: str | None = None) -> dict[str, Any]:
        return json.loads(self.kubectl("get", "-n", ns or self.ns, kind, name, "-o", "json").stdout)  # type: ignore[no-any-return]

    def exists(self, kind: str, name: str, ns: str | None = None) -> bool:
        return self.kubectl("get", "-n", ns or self.ns, kind, name, check=False).returncode == 0

    def setup(self) -> None:
        for ns in (self.ns, self.app):
            self.kubectl("create", "namespace", ns)
        self.apply(pvc("snapmover-repository", access="ReadWriteMany", size="1Gi"))
        self.apply(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "snapmover-config"}, "data": self.config}
        )

    def teardown(self) -> None:
        # while a launcher still runs, deleting DataUploads forgets their snapshots and frees them
        self.kubectl("delete", "datauploads", "--all", "-n", self.ns, "--timeout=60s", check=False)
        for proc in self.procs:
            stop(proc)
        for ns in (self.app, self.ns):
            self.kubectl("delete", "namespace", ns, "--wait=false", check=False)

    def start_launcher(self, identity: str = "launcher-a") -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{identity}.log", "ab")  # noqa: SIM115 - owned by the process
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "snapmover"),
                "launcher",
                "--kubeconfig",
                str(self.cluster.kubeconfig),
                "--namespace",
                self.ns,
                "--metrics-port",
                "0",
                "--identity",
                identity,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
        )
        self.procs.append(proc)
        return proc

    def repository_password(self) -> str:
        """The repository password the launcher keeps in its Secret."""
        data = self.kubectl(
            "get", "secret", "snapmover-repo-credentials", "-n", self.ns, "-o", "jsonpath={.data.repository-password}"
        ).stdout
        return base64.b64decode(data).decode()

    def launcher_log(self, identity: str = "launcher-a") -> str:
        return (self.tmp / f"{identity}.log").read_text(errors="replace")

    # --- the node's containers ----------------------------------------------------------------

    def node_task(self, seen: set[str], prefix: str) -> tuple[str, int] | None:
        """A running container of a pod named ``prefix``… in the launcher namespace, straight from
        containerd (pod name, host PID): the API server reports a pod Running only after a short
        container may be done. ``seen`` collects the tasks looked at, so each is reported once."""
        node = self.cluster.node
        for line in node.ctr("task", "ls").stdout.splitlines()[1:]:
            task, pid, status, *_ = line.split()
            if task in seen or status != "RUNNING":
                continue
            seen.add(task)
            info = node.ctr("containers", "info", task, check=False)
            labels = json.loads(info.stdout).get("Labels", {}) if info.returncode == 0 else {}
            pod = labels.get("io.kubernetes.pod.name", "")
            sandbox = labels.get("io.cri-containerd.kind") != "container"  # the pod's pause container
            if not sandbox and labels.get("io.kubernetes.pod.namespace") == self.ns and pod.startswith(prefix):
                return pod, int(pid)
        return None

    def wait_task(self, seen: set[str], prefix: str, timeout: float = 120) -> tuple[str, int]:
        """:meth:`node_task`, polled fast for up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.node_task(seen, prefix)
            if found is not None:
                return found
            time.sleep(0.02)
        raise AssertionError(f"no container of a pod {prefix}... started within {timeout:.0f} s")

    # --- app data ---------------------------------------------------------------------------

    def run_pod_job(self, name: str, script: str, claim: str, *, block: bool = False, ns: str | None = None) -> str:
        container: dict[str, Any] = {
            "name": "main",
            "image": snapmover_image(),
            "command": ["sh", "-c", script],
            "securityContext": {"runAsUser": 0},  # the image's default user cannot write a root-owned volume
        }
        if block:
            container["volumeDevices"] = [{"name": "v", "devicePath": "/dev/e2e-disk"}]
        else:
            container["volumeMounts"] = [{"name": "v", "mountPath": "/data"}]
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [container],
                        "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}],
                    }
                },
            },
        }
        ns = ns or self.app
        self.apply(job, ns)
        wait_for(f"job {name}", lambda: job_done(self.get("job", name, ns)))
        assert job_done(self.get("job", name, ns)) == "Complete", self.kubectl("logs", "-n", ns, f"job/{name}").stdout
        return str(self.kubectl("logs", "-n", ns, f"job/{name}").stdout)

    def snapshot(self, name: str, claim: str, annotations: dict[str, str] | None = None) -> None:
        self.apply(
            {
                "apiVersion": "snapshot.storage.k8s.io/v1",
                "kind": "VolumeSnapshot",
                "metadata": {"name": name, "annotations": annotations or {}},
                "spec": {"volumeSnapshotClassName": "standard", "source": {"persistentVolumeClaimName": claim}},
            },
            self.app,
        )

    def pv_path(self, claim: str, ns: str | None = None) -> Path:
        """A bound PVC's data on the host: its directory, or a Block PV's loop device."""
        spec = self.get("pv", self.get("pvc", claim, ns or self.app)["spec"]["volumeName"])["spec"]
        return Path((spec.get("hostPath") or spec.get("local"))["path"])

    # --- CRs --------------------------------------------------------------------------------

    def data_upload(self, snapshot: str, claim: str, **spec: Any) -> str:
        body = {
            "apiVersion": "velero.io/v2alpha1",
            "kind": "DataUpload",
            "metadata": {
                "generateName": "backup-1-",
                "labels": {"velero.io/backup-name": "backup-1", "velero.io/async-operation-id": "du-1234.5678"},
            },
            "spec": {
                "snapshotType": "CSI",
                "csiSnapshot": {"volumeSnapshot": snapshot, "storageClass": "standard", "snapshotClass": "standard"},
                "sourcePVC": claim,
                "sourceNamespace": self.app,
                "datamover": "snapmover",
                "backupStorageLocation": "default",
                "operationTimeout": "60s",
                **spec,
            },
        }
        return self.create(body)

    def data_download(self, snapshot_id: str, target: str, **spec: Any) -> str:
        body = {
            "apiVersion": "velero.io/v2alpha1",
            "kind": "DataDownload",
            "metadata": {"generateName": "restore-1-", "labels": {"velero.io/restore-name": "restore-1"}},
            "spec": {
                "targetVolume": {"pvc": target, "pv": "", "namespace": self.app},
                "backupStorageLocation": "default",
                "datamover": "snapmover",
                "snapshotID": snapshot_id,
                "sourceNamespace": self.app,
                "operationTimeout": "60s",
                **spec,
            },
        }
        return self.create(body)

    def phase(self, kind: str, name: str) -> str:
        return str((self.get(kind, name).get("status") or {}).get("phase") or "New")

    def wait_phase(self, kind: str, name: str, phases: set[str], timeout: float = 180) -> dict[str, Any]:
        wait_for(f"{kind} {name} in {phases}", lambda: self.phase(kind, name) in phases, timeout)
        return self.get(kind, name)


def pvc(
    name: str,
    *,
    access: str = "ReadWriteOnce",
    size: str = "64Mi",
    mode: str = "Filesystem",
    selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": [access], "volumeMode": mode, "resources": {"requests": {"storage": size}}}
    if selector:
        spec["selector"] = {"matchLabels": selector}
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name}, "spec": spec}


def job_done(job: dict[str, Any]) -> str | None:
    for cond in (job.get("status") or {}).get("conditions", []):
        if cond["status"] == "True" and cond["type"] in ("Complete", "Failed"):
            return str(cond["type"])
    return None


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextmanager
def launcher_env(cluster: ClusterHandle, tmp: Path, config: dict[str, str] | None = None) -> Iterator[LauncherEnv]:
    env = LauncherEnv(cluster, tmp, config)
    env.setup()
    try:
        yield env
    finally:
        env.teardown()
