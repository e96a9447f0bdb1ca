"""The node harness: what a real cluster runs on its nodes, in one test process.

Test infrastructure only (never shipped in the product image). It stands in for:

* **scheduler** — binds pending pods to the single node ``node-1`` (a pod whose nodeSelector the
  node does not satisfy stays Pending with ``PodScheduled=False/Unschedulable``);
* **CSI provisioner** (``hostpath.snapmover.test``) — a ``hostPath`` directory per Filesystem PV,
  a ``local`` PV on a loop device over a sparse image file per Block PV (detached when the PV is
  deleted; see tests/cluster/loopdev.py), pre-filled from a VolumeSnapshot when the PVC's
  ``dataSource`` names one;
  PVCs carrying ``spec.selector`` or ``spec.volumeName`` are left alone (Velero's restore relies
  on that); ``WaitForFirstConsumer`` waits for the scheduler's ``selected-node`` annotation;
  released PVs with reclaim policy Delete are deleted with their data;
* **snapshot controller** — VolumeSnapshots of a PVC copy its data; pre-provisioned contents
  (``snapshotHandle``) are bound; ``deletionPolicy`` is honoured; the annotation
  ``snapmover-test.io/never-ready`` keeps a snapshot from ever becoming ready;
* **kubelet** — runs each container's ``command + args`` as a local process **from the project's
  environment** (images are not pulled: the project venv's ``bin`` is first on PATH), in a
  private mount namespace where PVCs are bind-mounted at their mount paths (read-only when asked),
  block PVCs at their ``devicePath``, Secret/ConfigMap/emptyDir volumes and the ServiceAccount
  token where a kubelet puts them; env from values, fieldRefs, Secrets, ConfigMaps, ``envFrom``.
  Pod status goes Running → Succeeded/Failed with exit code and termination message. Deletion is
  graceful (SIGTERM, grace period, SIGKILL). An image starting with ``invalid.`` never starts
  (``ErrImagePull``);
* **log server** — HTTPS ``/containerLogs/{ns}/{pod}/{container}`` so ``kubectl logs`` works.

Mount targets that do not exist on the host are created as empty directories/files there once
(``/data``, ``/dev/termination-log`` …); the bind mounts themselves live only in the pod's
namespace. It runs as root (mount namespaces), which the test machine is.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import logging
import os
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.cluster import loopdev

log = logging.getLogger("harness")

NODE_NAME = "node-1"
PROVISIONER = "hostpath.snapmover.test"
NEVER_READY = "snapmover-test.io/never-ready"
BACKING_FILE = "snapmover-test.io/backing-file"  # on a Block PV: the image file behind its loop device
SELECTED_NODE = "volume.kubernetes.io/selected-node"
SNAP_GROUP, SNAP_VERSION = "snapshot.storage.k8s.io", "v1"
VENV_BIN = Path(sys.executable).parent


def now() -> str:
    """RFC 3339 UTC timestamp, seconds precision (what core/v1 Time fields take)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def quantity_bytes(q: str) -> int:
    """Parse a Kubernetes quantity like 1Gi / 100Mi / 5G into bytes."""
    units = {
        "Ki": 1 << 10,
        "Mi": 1 << 20,
        "Gi": 1 << 30,
        "Ti": 1 << 40,
        "k": 10**3,
        "M": 10**6,
        "G": 10**9,
        "T": 10**12,
    }
    for suffix, mult in units.items():
        if q.endswith(suffix):
            return int(float(q[: -len(suffix)]) * mult)
    return int(float(q))


def loop(name: str, body: Callable[[], None], stop: threading.Event) -> threading.Thread:
    """Run ``body`` repeatedly in a daemon thread, logging (not dying on) errors."""

    def run() -> None:
        while not stop.is_set():
            try:
                body()
            except Exception:
                log.warning("%s: %s", name, traceback.format_exc(limit=3))
                stop.wait(1)

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    return t


class Harness:
    """The node agent; ``run()`` blocks until ``stop`` is set."""

    def __init__(self, kubeconfig: str, data_root: Path, api_port: int) -> None:
        config.load_kube_config(config_file=kubeconfig)
        self.api = client.ApiClient()
        self.core = client.CoreV1Api(self.api)
        self.storage = client.StorageV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.data_root = data_root
        self.api_port = api_port
        self.stop = threading.Event()
        self.pods: dict[str, PodRunner] = {}
        self.pods_lock = threading.Lock()
        self.log_port = 0
        for sub in ("pv", "snapshots", "pods"):
            (data_root / sub).mkdir(parents=True, exist_ok=True)

    # --- node ---------------------------------------------------------------------------------

    def register_node(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "labels": {
                    "kubernetes.io/hostname": NODE_NAME,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                },
            },
        }
        with contextlib.suppress(ApiException):
            self.core.create_node(body)
        self.core.patch_node_status(
            NODE_NAME,
            {
                "status": {
                    "addresses": [
                        {"type": "InternalIP", "address": "127.0.0.1"},
                        {"type": "Hostname", "address": "127.0.0.1"},
                    ],
                    "daemonEndpoints": {"kubeletEndpoint": {"Port": self.log_port}},
                    "capacity": {"cpu": "2", "memory": "24Gi", "pods": "250"},
                    "allocatable": {"cpu": "2", "memory": "24Gi", "pods": "250"},
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "message": "harness",
                            "lastHeartbeatTime": now(),
                            "lastTransitionTime": now(),
                        }
                    ],
                    "nodeInfo": {
                        "kubeletVersion": "v1.20.2-harness",
                        "operatingSystem": "linux",
                        "architecture": "amd64",
                        "osImage": "snapmover test harness",
                        "kernelVersion": os.uname().release,
                        "containerRuntimeVersion": "local://",
                        "kubeProxyVersion": "",
                        "machineID": "",
                        "systemUUID": "",
                        "bootID": "",
                    },
                }
            },
        )

    def run(self, *, csi_only: bool = False) -> None:
        """Run every part, or with ``csi_only`` (a real node runs the pods) only the CSI driver's:
        provisioner, reclaimer and snapshots."""
        if not csi_only:
            self.log_port = start_log_server(self)
            self.register_node()
            loop("scheduler", self.scheduler, self.stop)
        loop("provisioner", self.provisioner, self.stop)
        loop("pv-reclaimer", self.reclaimer, self.stop)
        loop("snapshots", self.snapshotter, self.stop)
        loop("snapshot-contents", self.content_deleter, self.stop)
        if not csi_only:
            loop("kubelet", self.kubelet, self.stop)
        print("harness ready", flush=True)
        self.stop.wait()
        # pod processes run in their own sessions: stop them too, or they outlive the cluster
        with self.pods_lock:
            runners = list(self.pods.values())
        for runner in runners:
            runner.kill()

    # --- scheduler --------------------------------------------------------------------------

    def scheduler(self) -> None:
        w = watch.Watch()
        for ev in w.stream(self.core.list_pod_for_all_namespaces, field_selector="spec.nodeName=", timeout_seconds=60):
            pod = ev["object"]
            if ev["type"] == "DELETED" or pod.metadata.deletion_timestamp or pod.spec.node_name:
                continue
            self.schedule(pod)

    def schedule(self, pod: Any) -> None:
        labels = {"kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
        wanted = pod.spec.node_selector or {}
        if any(labels.get(k) != v for k, v in wanted.items()) or not affinity_ok(pod, labels):
            marked = any(c.type == "PodScheduled" and c.status == "False" for c in (pod.status.conditions or []))
            if marked:
                return
            with contextlib.suppress(ApiException):
                self.core.patch_namespaced_pod_status(
                    pod.metadata.name,
                    pod.metadata.namespace,
                    {
                        "status": {
                            "phase": "Pending",
                            "conditions": [
                                {
                                    "type": "PodScheduled",
                                    "status": "False",
                                    "reason": "Unschedulable",
                                    "message": "0/1 nodes are available: 1 node(s) didn't match node selector.",
                                    "lastTransitionTime": now(),
                                }
                            ],
                        }
                    },
                )
            return
        for vol in pod.spec.volumes or []:
            if vol.persistent_volume_claim is None:
                continue
            with contextlib.suppress(ApiException):
                pvc = self.core.read_namespaced_persistent_volume_claim(
                    vol.persistent_volume_claim.claim_name, pod.metadata.namespace
                )
                if pvc.status.phase == "Pending" and not (pvc.metadata.annotations or {}).get(SELECTED_NODE):
                    self.core.patch_namespaced_persistent_volume_claim(
                        pvc.metadata.name,
                        pvc.metadata.namespace,
                        {"metadata": {"annotations": {SELECTED_NODE: NODE_NAME}}},
                    )
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod.metadata.name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": NODE_NAME},
        }
        with contextlib.suppress(ApiException):
            self.core.create_namespaced_binding(pod.metadata.namespace, body, _preload_content=False)

    # --- provisioner ------------------------------------------------------------------------

    def provisioner(self) -> None:
        w = watch.Watch()
        for ev in w.stream(self.core.list_persistent_volume_claim_for_all_namespaces, timeout_seconds=60):
            pvc = ev["object"]
            if ev["type"] != "DELETED" and pvc.status.phase == "Pending" and not pvc.metadata.deletion_timestamp:
                self.provision(pvc)

    def provision(self, pvc: Any) -> None:
        if pvc.spec.selector is not None or pvc.spec.volume_name:
            return  # statically bound / Velero restore: not ours to provision
        sc_name = pvc.spec.storage_class_name
        if sc_name is None:
            defaults = [
                s
                for s in self.storage.list_storage_class().items
                if (s.metadata.annotations or {}).get("storageclass.kubernetes.io/is-default-class") == "true"
            ]
            if not defaults:
                return
            sc = defaults[0]
        else:
            try:
                sc = self.storage.read_storage_class(sc_name)
            except ApiException:
                return
        if sc.provisioner != PROVISIONER:
            return
        if sc.volume_binding_mode == "WaitForFirstConsumer" and not (pvc.metadata.annotations or {}).get(SELECTED_NODE):
            return
        pv_name = f"pvc-{pvc.metadata.uid}"
        with contextlib.suppress(ApiException):
            self.core.read_persistent_volume(pv_name)
            return
        size = quantity_bytes(pvc.spec.resources.requests.get("storage", "1Gi"))
        block = pvc.spec.volume_mode == "Block"
        path = self.data_root / "pv" / (pv_name + (".img" if block else ""))
        source = self.snapshot_source(pvc)
        if source is not None:
            copy_data(source, path)
        elif block:
            with open(path, "wb") as f:
                f.truncate(size)
        else:
            path.mkdir(parents=True, exist_ok=True)
        if block and path.stat().st_size < size:
            os.truncate(path, size)
        annotations = {"pv.kubernetes.io/provisioned-by": PROVISIONER}
        source: dict[str, Any] = {"hostPath": {"path": str(path)}}
        if block:
            # a kubelet hands block devices only from `local` (or CSI) PVs: a loop device over the image
            annotations[BACKING_FILE] = str(path)
            source = {"local": {"path": loopdev.attach(path)}, "nodeAffinity": on_node(NODE_NAME)}
        pv = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv_name, "annotations": annotations},
            "spec": {
                "capacity": {"storage": pvc.spec.resources.requests.get("storage", "1Gi")},
                "accessModes": pvc.spec.access_modes or ["ReadWriteOnce"],
                "volumeMode": pvc.spec.volume_mode or "Filesystem",
                "persistentVolumeReclaimPolicy": sc.reclaim_policy or "Delete",
                "storageClassName": sc.metadata.name,
                **source,
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": pvc.metadata.namespace,
                    "name": pvc.metadata.name,
                    "uid": pvc.metadata.uid,
                },
            },
        }
        try:
            self.core.create_persistent_volume(pv)
        except ApiException:
            if block:
                loopdev.detach_backed_by(path)
            raise

    def snapshot_source(self, pvc: Any) -> Path | None:
        ds = pvc.spec.data_source
        if ds is None or ds.kind != "VolumeSnapshot":
            return None
        vs = self.custom.get_namespaced_custom_object(
            SNAP_GROUP, SNAP_VERSION, pvc.metadata.namespace, "volumesnapshots", ds.name
        )
        content = (vs.get("status") or {}).get("boundVolumeSnapshotContentName")
        if not content or not vs["status"].get("readyToUse"):
            raise RuntimeError(f"snapshot {ds.name} not ready yet")
        vsc = self.custom.get_cluster_custom_object(SNAP_GROUP, SNAP_VERSION, "volumesnapshotcontents", content)
        handle = (vsc.get("status") or {}).get("snapshotHandle") or vsc["spec"]["source"].get("snapshotHandle")
        return self.data_root / "snapshots" / handle

    def reclaimer(self) -> None:
        w = watch.Watch()
        for ev in w.stream(self.core.list_persistent_volume, timeout_seconds=60):
            pv = ev["object"]
            ours = (pv.metadata.annotations or {}).get("pv.kubernetes.io/provisioned-by") == PROVISIONER
            if ev["type"] == "DELETED" or not ours:
                continue
            if pv.status.phase in ("Released", "Failed") and pv.spec.persistent_volume_reclaim_policy == "Delete":
                data = pv_data(pv)
                if pv.spec.local is not None:
                    loopdev.detach_backed_by(data)
                remove_path(data)
                with contextlib.suppress(ApiException):
                    self.core.delete_persistent_volume(pv.metadata.name)

    # --- snapshots ------------------------------------------------------------------------------

    def snapshotter(self) -> None:
        w = watch.Watch()
        for ev in w.stream(
            self.custom.list_cluster_custom_object, SNAP_GROUP, SNAP_VERSION, "volumesnapshots", timeout_seconds=60
        ):
            vs = ev["object"]
            if ev["type"] == "DELETED":
                self.snapshot_deleted(vs)
            elif not (vs.get("status") or {}).get("readyToUse"):
                self.take_snapshot(vs)

    def take_snapshot(self, vs: dict[str, Any]) -> None:
        meta = vs["metadata"]
        ns, name = meta["namespace"], meta["name"]
        if NEVER_READY in (meta.get("annotations") or {}):
            return
        source = vs["spec"].get("source", {})
        if source.get("volumeSnapshotContentName"):
            vsc = self.custom.get_cluster_custom_object(
                SNAP_GROUP, SNAP_VERSION, "volumesnapshotcontents", source["volumeSnapshotContentName"]
            )
            handle = vsc["spec"]["source"]["snapshotHandle"]
            data = self.data_root / "snapshots" / handle
            size = data_size(data)
            self.custom.patch_cluster_custom_object_status(
                SNAP_GROUP,
                SNAP_VERSION,
                "volumesnapshotcontents",
                vsc["metadata"]["name"],
                {
                    "status": {
                        "readyToUse": True,
                        "snapshotHandle": handle,
                        "restoreSize": size,
                        "creationTime": time.time_ns(),
                    }
                },
            )
            content_name = vsc["metadata"]["name"]
        else:
            pvc = self.core.read_namespaced_persistent_volume_claim(source["persistentVolumeClaimName"], ns)
            if pvc.status.phase != "Bound":
                return
            pv = self.core.read_persistent_volume(pvc.spec.volume_name)
            handle = f"snap-{meta['uid']}"
            data = self.data_root / "snapshots" / handle
            if not data.exists():
                if pv.spec.local is not None:
                    loopdev.flush(pv.spec.local.path)
                copy_data(pv_data(pv), data)
            size = data_size(data)
            content_name = f"snapcontent-{meta['uid']}"
            cls_name = vs["spec"].get("volumeSnapshotClassName") or "standard"
            policy = "Delete"
            with contextlib.suppress(ApiException):
                policy = self.custom.get_cluster_custom_object(
                    SNAP_GROUP, SNAP_VERSION, "volumesnapshotclasses", cls_name
                ).get("deletionPolicy", "Delete")
            vsc_body = {
                "apiVersion": f"{SNAP_GROUP}/{SNAP_VERSION}",
                "kind": "VolumeSnapshotContent",
                "metadata": {"name": content_name},
                "spec": {
                    "deletionPolicy": policy,
                    "driver": PROVISIONER,
                    "volumeSnapshotClassName": cls_name,
                    "source": {"volumeHandle": pv.metadata.name},
                    "volumeSnapshotRef": {
                        "apiVersion": f"{SNAP_GROUP}/{SNAP_VERSION}",
                        "kind": "VolumeSnapshot",
                        "name": name,
                        "namespace": ns,
                        "uid": meta["uid"],
                    },
                },
            }
            with contextlib.suppress(ApiException):
                self.custom.create_cluster_custom_object(SNAP_GROUP, SNAP_VERSION, "volumesnapshotcontents", vsc_body)
            self.custom.patch_cluster_custom_object_status(
                SNAP_GROUP,
                SNAP_VERSION,
                "volumesnapshotcontents",
                content_name,
                {
                    "status": {
                        "readyToUse": True,
                        "snapshotHandle": handle,
                        "restoreSize": size,
                        "creationTime": time.time_ns(),
                    }
                },
            )
        self.custom.patch_namespaced_custom_object_status(
            SNAP_GROUP,
            SNAP_VERSION,
            ns,
            "volumesnapshots",
            name,
            {
                "status": {
                    "boundVolumeSnapshotContentName": content_name,
                    "readyToUse": True,
                    "restoreSize": str(size),
                    "creationTime": now(),
                }
            },
        )

    def snapshot_deleted(self, vs: dict[str, Any]) -> None:
        content = (vs.get("status") or {}).get("boundVolumeSnapshotContentName")
        if not content:
            return
        with contextlib.suppress(ApiException):
            vsc = self.custom.get_cluster_custom_object(SNAP_GROUP, SNAP_VERSION, "volumesnapshotcontents", content)
            if vsc["spec"].get("deletionPolicy") == "Delete":
                self.custom.delete_cluster_custom_object(SNAP_GROUP, SNAP_VERSION, "volumesnapshotcontents", content)

    def content_deleter(self) -> None:
        w = watch.Watch()
        for ev in w.stream(
            self.custom.list_cluster_custom_object,
            SNAP_GROUP,
            SNAP_VERSION,
            "volumesnapshotcontents",
            timeout_seconds=60,
        ):
            vsc = ev["object"]
            if ev["type"] != "DELETED" or vsc["spec"].get("deletionPolicy") != "Delete":
                continue
            handle = (vsc.get("status") or {}).get("snapshotHandle") or vsc["spec"].get("source", {}).get(
                "snapshotHandle"
            )
            if not handle:
                continue
            others = self.custom.list_cluster_custom_object(SNAP_GROUP, SNAP_VERSION, "volumesnapshotcontents")["items"]
            if not any(
                ((o.get("status") or {}).get("snapshotHandle") or o["spec"].get("source", {}).get("snapshotHandle"))
                == handle
                for o in others
            ):
                remove_path(self.data_root / "snapshots" / handle)

    # --- kubelet --------------------------------------------------------------------------------

    def kubelet(self) -> None:
        w = watch.Watch()
        for ev in w.stream(
            self.core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={NODE_NAME}", timeout_seconds=60
        ):
            pod = ev["object"]
            key = f"{pod.metadata.namespace}/{pod.metadata.name}"
            with self.pods_lock:
                runner = self.pods.get(key)
                if runner is not None and runner.uid != pod.metadata.uid:
                    runner.kill()
                    runner = None
                if ev["type"] == "DELETED":
                    if runner is not None:
                        runner.kill()
                        self.pods.pop(key, None)
                    continue
                if runner is None:
                    if pod.status.phase in ("Succeeded", "Failed"):
                        continue
                    runner = self.pods[key] = PodRunner(self, pod)
                    runner.start()
            if pod.metadata.deletion_timestamp:
                runner.delete(pod.metadata.deletion_grace_period_seconds or 0)

    def pod_dir(self, namespace: str, name: str) -> Path:
        return self.data_root / "pods" / namespace / name


class PodRunner:
    """One pod's lifecycle on the node: volumes, the container process, status, logs, deletion."""

    def __init__(self, harness: Harness, pod: Any) -> None:
        self.h = harness
        self.pod = pod
        self.uid = pod.metadata.uid
        self.ns = pod.metadata.namespace
        self.name = pod.metadata.name
        self.dir = harness.pod_dir(self.ns, self.name)
        self.proc: subprocess.Popen[bytes] | None = None
        self.killed = threading.Event()
        self.deleting = False

    def start(self) -> None:
        threading.Thread(target=self.run_safely, name=f"pod-{self.name}", daemon=True).start()

    def run_safely(self) -> None:
        try:
            self.run()
        except Exception:
            log.warning("pod %s/%s: %s", self.ns, self.name, traceback.format_exc(limit=5))
            if not self.killed.is_set():
                self.finish(1, "HarnessError", traceback.format_exc(limit=2)[-1000:])

    def patch_status(self, status: dict[str, Any]) -> None:
        with contextlib.suppress(ApiException):
            self.h.core.patch_namespaced_pod_status(self.name, self.ns, {"status": status})

    def run(self) -> None:
        container = self.pod.spec.containers[0]
        if (container.image or "").startswith("invalid."):
            self.patch_status(
                {
                    "phase": "Pending",
                    "containerStatuses": [
                        {
                            "name": container.name,
                            "ready": False,
                            "restartCount": 0,
                            "image": container.image,
                            "imageID": "",
                            "state": {
                                "waiting": {
                                    "reason": "ErrImagePull",
                                    "message": f"rpc error: pull access denied for {container.image}",
                                }
                            },
                        }
                    ],
                }
            )
            return
        mounts = self.prepare_volumes(container)
        if mounts is None:
            return
        env = self.environment(container)
        self.dir.mkdir(parents=True, exist_ok=True)
        term_file = self.dir / "termination-log"
        term_file.write_bytes(b"")
        term_path = container.termination_message_path or "/dev/termination-log"
        mounts.append((str(term_file), term_path, False, "file"))
        script = mount_script(mounts)
        argv = list(container.command or []) + list(container.args or [])
        script += "exec " + " ".join(shlex.quote(a) for a in argv)
        log_path = self.dir / f"{container.name}.log"
        started = now()
        with open(log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                cwd=container.working_dir or "/",
            )
        self.patch_status(
            {
                "phase": "Running",
                "hostIP": "127.0.0.1",
                "podIP": "127.0.0.1",
                "startTime": started,
                "conditions": [
                    {"type": t, "status": "True", "lastTransitionTime": started}
                    for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
                ],
                "containerStatuses": [
                    {
                        "name": container.name,
                        "ready": True,
                        "restartCount": 0,
                        "started": True,
                        "image": container.image or "",
                        "imageID": "",
                        "containerID": f"local://{self.proc.pid}",
                        "state": {"running": {"startedAt": started}},
                    }
                ],
            }
        )
        code = self.proc.wait()
        if self.deleting:
            return
        message = term_file.read_text(errors="replace")[-4096:]
        if not message.strip() and code != 0 and container.termination_message_policy == "FallbackToLogsOnError":
            lines = log_path.read_text(errors="replace").splitlines()[-80:]
            message = "\n".join(lines)[-2048:]
        self.finish(code if code >= 0 else 128 - code, "Completed" if code == 0 else "Error", message, started)

    def finish(self, code: int, reason: str, message: str, started: str | None = None) -> None:
        container = self.pod.spec.containers[0]
        term: dict[str, Any] = {"exitCode": code, "reason": reason, "finishedAt": now(), "startedAt": started or now()}
        if message:
            term["message"] = message
        self.patch_status(
            {
                "phase": "Succeeded" if code == 0 else "Failed",
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now()}
                ],
                "containerStatuses": [
                    {
                        "name": container.name,
                        "ready": False,
                        "restartCount": 0,
                        "image": container.image or "",
                        "imageID": "",
                        "state": {"terminated": term},
                    }
                ],
            }
        )

    def prepare_volumes(self, container: Any) -> list[tuple[str, str, bool, str]] | None:
        """Resolve the pod's volumes to host paths; None (and retry later) while PVCs are unbound."""
        sources: dict[str, tuple[str, str]] = {}
        deadline = time.monotonic() + 600
        for vol in self.pod.spec.volumes or []:
            if vol.persistent_volume_claim is not None:
                while True:
                    if self.killed.is_set():
                        return None
                    pvc = self.h.core.read_namespaced_persistent_volume_claim(
                        vol.persistent_volume_claim.claim_name, self.ns
                    )
                    if pvc.status.phase == "Bound":
                        pv = self.h.core.read_persistent_volume(pvc.spec.volume_name)
                        kind = "file" if pv.spec.volume_mode == "Block" else "dir"
                        sources[vol.name] = ((pv.spec.local or pv.spec.host_path).path, kind)
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"PVC {pvc.metadata.name} never bound")
                    time.sleep(0.3)
            elif vol.secret is not None:
                secret = self.h.core.read_namespaced_secret(vol.secret.secret_name, self.ns)
                data = {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
                sources[vol.name] = (
                    str(self.write_files(vol.name, data, vol.secret.items, vol.secret.default_mode)),
                    "dir",
                )
            elif vol.config_map is not None:
                cm = self.h.core.read_namespaced_config_map(vol.config_map.name, self.ns)
                data = {k: v.encode() for k, v in (cm.data or {}).items()}
                sources[vol.name] = (
                    str(self.write_files(vol.name, data, vol.config_map.items, vol.config_map.default_mode)),
                    "dir",
                )
            elif vol.empty_dir is not None:
                path = self.dir / "volumes" / vol.name
                path.mkdir(parents=True, exist_ok=True)
                sources[vol.name] = (str(path), "dir")
        mounts = []
        for m in container.volume_mounts or []:
            src, kind = sources[m.name]
            if m.sub_path:
                src = os.path.join(src, m.sub_path)
            mounts.append((src, m.mount_path, bool(m.read_only), kind))
        for d in container.volume_devices or []:
            src, _kind = sources[d.name]
            mounts.append((src, d.device_path, False, "file"))
        return mounts

    def write_files(self, name: str, data: dict[str, bytes], items: Any, mode: int | None) -> Path:
        path = self.dir / "volumes" / name
        path.mkdir(parents=True, exist_ok=True)
        chosen = [(i.key, i.path, i.mode) for i in items] if items else [(k, k, None) for k in data]
        for key, rel, item_mode in chosen:
            if key not in data:
                continue
            target = path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data[key])
            target.chmod(item_mode or mode or 0o644)
        return path

    def environment(self, container: Any) -> dict[str, str]:
        env = {
            "PATH": f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            "HOSTNAME": self.name,
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(self.h.api_port),
            "PYTHONUNBUFFERED": "1",
            "LANG": "C.UTF-8",
        }
        for src in container.env_from or []:
            prefix = src.prefix or ""
            if src.secret_ref is not None:
                s = self.h.core.read_namespaced_secret(src.secret_ref.name, self.ns)
                env.update({prefix + k: base64.b64decode(v).decode() for k, v in (s.data or {}).items()})
            if src.config_map_ref is not None:
                cm = self.h.core.read_namespaced_config_map(src.config_map_ref.name, self.ns)
                env.update({prefix + k: v for k, v in (cm.data or {}).items()})
        for e in container.env or []:
            if e.value_from is None:
                env[e.name] = e.value or ""
                continue
            vf = e.value_from
            if vf.field_ref is not None:
                env[e.name] = self.field(vf.field_ref.field_path)
            elif vf.secret_key_ref is not None:
                s = self.h.core.read_namespaced_secret(vf.secret_key_ref.name, self.ns)
                env[e.name] = base64.b64decode((s.data or {})[vf.secret_key_ref.key]).decode()
            elif vf.config_map_key_ref is not None:
                cm = self.h.core.read_namespaced_config_map(vf.config_map_key_ref.name, self.ns)
                env[e.name] = (cm.data or {})[vf.config_map_key_ref.key]
        return env

    def field(self, path: str) -> str:
        values = {
            "spec.nodeName": NODE_NAME,
            "metadata.name": self.name,
            "metadata.namespace": self.ns,
            "metadata.uid": self.uid,
            "status.podIP": "127.0.0.1",
            "status.hostIP": "127.0.0.1",
            "spec.serviceAccountName": self.pod.spec.service_account_name or "default",
        }
        return values.get(path, "")

    def delete(self, grace: int) -> None:
        """Graceful deletion: SIGTERM, wait the grace period, SIGKILL, then remove the pod object."""
        if self.deleting:
            return
        self.deleting = True

        def run() -> None:
            proc = self.proc
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(max(grace, 1))
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            self.killed.set()
            with contextlib.suppress(ApiException):
                self.h.core.delete_namespaced_pod(
                    self.name,
                    self.ns,
                    grace_period_seconds=0,
                    body=client.V1DeleteOptions(grace_period_seconds=0, preconditions={"uid": self.uid}),
                )

        threading.Thread(target=run, daemon=True).start()

    def kill(self) -> None:
        self.killed.set()
        self.deleting = True
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)


STAGE_DIR = "/run/snapmover-harness-stage"


def mount_script(mounts: list[tuple[str, str, bool, str]]) -> str:
    """Shell lines run inside the pod's mount namespace to bind its volumes in place.

    Every source is first bound into a private tmpfs stage, so a volume mounted over a path that
    holds another volume's source (an emptyDir on /tmp, say) cannot hide it.
    """
    Path(STAGE_DIR).mkdir(parents=True, exist_ok=True)
    lines = ["set -e", "mount --make-rprivate /", f"mount -t tmpfs -o size=1m,mode=700 stage {STAGE_DIR}"]
    for i, (src, _target, _ro, kind) in enumerate(mounts):
        stage = f"{STAGE_DIR}/{i}"
        lines.append(f"mkdir {stage}" if kind == "dir" else f"touch {stage}")
        lines.append(f"mount --bind {shlex.quote(src)} {stage}")
    for i, (_src, target, read_only, kind) in enumerate(mounts):
        if hides_the_project(target):
            # e.g. an emptyDir on /tmp when the checkout lives under /tmp: the pod would lose the
            # interpreter its command runs from. The host directory stays writable instead.
            continue
        ensure_host_target(target, kind)
        q_target = shlex.quote(target)
        lines.append(f"mount --bind {STAGE_DIR}/{i} {q_target}")
        if read_only:
            lines.append(f"mount -o remount,bind,ro {q_target}")
    lines.append("set +e")
    return "\n".join(lines) + "\n"


PROTECTED_PATHS = tuple(Path(p).resolve() for p in {sys.prefix, sys.base_prefix, str(Path(__file__).parents[2])})


def hides_the_project(target: str) -> bool:
    """True when mounting at ``target`` would hide the project checkout or its Python."""
    t = Path(target).resolve()
    return any(t == p or t in p.parents for p in PROTECTED_PATHS)


def ensure_host_target(target: str, kind: str) -> None:
    """Create an empty mount point on the host (a directory, or a file for files/devices)."""
    path = Path(target)
    if path.exists():
        return
    if kind == "dir":
        path.mkdir(parents=True, exist_ok=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def affinity_ok(pod: Any, labels: dict[str, str]) -> bool:
    aff = pod.spec.affinity
    if aff is None or aff.node_affinity is None:
        return True
    req = aff.node_affinity.required_during_scheduling_ignored_during_execution
    if req is None:
        return True
    for term in req.node_selector_terms or []:
        ok = True
        for expr in term.match_expressions or []:
            value = labels.get(expr.key)
            if expr.operator == "In":
                ok &= value in (expr.values or [])
            elif expr.operator == "NotIn":
                ok &= value not in (expr.values or [])
            elif expr.operator == "Exists":
                ok &= value is not None
            elif expr.operator == "DoesNotExist":
                ok &= value is None
        if ok:
            return True
    return False


def on_node(node: str) -> dict[str, Any]:
    """A PV's nodeAffinity pinning it to ``node`` (what a `local` PV must have)."""
    term = {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}
    return {"required": {"nodeSelectorTerms": [term]}}


def pv_data(pv: Any) -> Path:
    """Where a provisioned PV's data lives on the host: its directory, or a Block PV's image file
    (the loop device's backing file)."""
    backing = (pv.metadata.annotations or {}).get(BACKING_FILE)
    return Path(backing) if backing else Path(pv.spec.host_path.path)


def copy_data(src: Path, dst: Path) -> None:
    """Copy a volume's data (directory tree or image file), keeping sparseness and metadata."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        dst.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", "--sparse=always", f"{src}/.", str(dst)], check=True)
    else:
        subprocess.run(["cp", "-a", "--sparse=always", str(src), str(dst)], check=True)


def remove_path(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def data_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def start_log_server(h: Harness) -> int:
    """HTTPS server for ``GET /containerLogs/{ns}/{pod}/{container}``; returns its port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            parts = url.path.strip("/").split("/")
            if len(parts) != 4 or parts[0] != "containerLogs":
                self.send_error(404)
                return
            _, ns, pod, container = parts
            query = urllib.parse.parse_qs(url.query)
            path = h.pod_dir(ns, pod) / f"{container}.log"
            if not path.exists():
                self.send_error(404, "no logs")
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            data = path.read_bytes()
            if "tailLines" in query:
                n = int(query["tailLines"][0])
                lines = data.splitlines(keepends=True)
                data = b"".join(lines[-n:]) if n > 0 else b""
            self.wfile.write(data)
            if query.get("follow", ["false"])[0] == "true":
                offset = path.stat().st_size
                runner = h.pods.get(f"{ns}/{pod}")
                while runner is not None and runner.proc is not None and runner.proc.poll() is None:
                    time.sleep(0.2)
                    size = path.stat().st_size
                    if size > offset:
                        with open(path, "rb") as f:
                            f.seek(offset)
                            self.wfile.write(f.read(size - offset))
                            self.wfile.flush()
                        offset = size
                size = path.stat().st_size
                if size > offset:
                    with open(path, "rb") as f:
                        f.seek(offset)
                        self.wfile.write(f.read())

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    pki = Path(os.environ["SNAPMOVER_CLUSTER_PKI"])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki / "server.crt", pki / "server.key")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return int(server.server_address[1])


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(threadName)s %(message)s")
    info = json.loads(Path(sys.argv[1]).read_text())
    harness = Harness(info["kubeconfig"], Path(info["data_root"]), int(info["api_port"]))
    signal.signal(signal.SIGTERM, lambda *_: harness.stop.set())
    harness.run(csi_only=bool(info.get("real_node")))


if __name__ == "__main__":
    main()
