"""The test cluster's CSI driver stand-in: provisioning and snapshots, in one test process.

Test infrastructure only (never shipped in the product image). No CSI driver is packaged for this
machine, so this plays the controller side of one (``hostpath.snapmover.test``); everything a node
does — scheduling, containers, mounts, logs, exec — is the real kube-scheduler and kubelet of
tests/cluster/node.py. It provides:

* **provisioner** — a ``hostPath`` directory (mode 0777, as csi-driver-host-path makes them) per
  Filesystem PV; a ``local`` PV on a loop device over a sparse image file per Block PV, pinned to
  the node (detached when the PV is deleted; see tests/cluster/loopdev.py); pre-filled from a
  VolumeSnapshot when the PVC's ``dataSource`` names one. PVCs carrying ``spec.selector`` or
  ``spec.volumeName`` are left alone (Velero's restore relies on that); ``WaitForFirstConsumer``
  waits for kube-scheduler's ``selected-node`` annotation;
* **reclaimer** — released PVs with reclaim policy Delete are deleted with their data;
* **snapshot controller** — VolumeSnapshots of a PVC copy its data; pre-provisioned contents
  (``snapshotHandle``) are bound; ``deletionPolicy`` is honoured; the annotation
  ``snapmover-test.io/never-ready`` keeps a snapshot from ever becoming ready.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
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
    """The CSI driver stand-in; ``run()`` blocks until ``stop`` is set."""

    def __init__(self, kubeconfig: str, data_root: Path) -> None:
        config.load_kube_config(config_file=kubeconfig)
        self.api = client.ApiClient()
        self.core = client.CoreV1Api(self.api)
        self.storage = client.StorageV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.data_root = data_root
        self.stop = threading.Event()
        for sub in ("pv", "snapshots"):
            (data_root / sub).mkdir(parents=True, exist_ok=True)

    def run(self) -> None:
        """Run the CSI driver's parts (provisioner, reclaimer, snapshots) until ``stop`` is set."""
        loop("provisioner", self.provisioner, self.stop)
        loop("pv-reclaimer", self.reclaimer, self.stop)
        loop("snapshots", self.snapshotter, self.stop)
        loop("snapshot-contents", self.content_deleter, self.stop)
        print("harness ready", flush=True)
        self.stop.wait()

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
            path.chmod(0o777)  # any pod user may write it, as with csi-driver-host-path
        if block and path.stat().st_size < size:
            os.truncate(path, size)
        annotations = {"pv.kubernetes.io/provisioned-by": PROVISIONER}
        volume: dict[str, Any] = {"hostPath": {"path": str(path)}}
        if block:
            # a kubelet hands block devices only from `local` (or CSI) PVs: a loop device over the image
            annotations[BACKING_FILE] = str(path)
            volume = {"local": {"path": loopdev.attach(path)}, "nodeAffinity": on_node(NODE_NAME)}
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
                **volume,
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


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(threadName)s %(message)s")
    info = json.loads(Path(sys.argv[1]).read_text())
    harness = Harness(info["kubeconfig"], Path(info["data_root"]))
    signal.signal(signal.SIGTERM, lambda *_: harness.stop.set())
    harness.run()


if __name__ == "__main__":
    main()
