"""Topology: a restore into a PVC with a selected node, and a backup of a `local` volume, run on
that node (launcher.objects / launcher.jobspec builders and launcher.exposure, with small fakes)."""

from __future__ import annotations

import copy
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from jobs.contract import LABEL_OWNER_UID
from launcher import objects
from launcher.config import LauncherConfig, StorageLocation
from launcher.exposure import Exposer
from launcher.informer import Recent
from launcher.jobspec import build_job, object_name
from launcher.phases import Exposed

DU = {
    "apiVersion": "velero.io/v2alpha1",
    "kind": "DataUpload",
    "metadata": {"name": "b1", "namespace": "velero", "uid": "uid-du", "creationTimestamp": "2026-01-01T00:00:00Z"},
    "spec": {
        "snapshotType": "CSI",
        "csiSnapshot": {"volumeSnapshot": "vs", "storageClass": "standard"},
        "sourcePVC": "data",
        "sourceNamespace": "app",
        "backupStorageLocation": "default",
        "operationTimeout": "10m",
    },
}
DD = {
    "apiVersion": "velero.io/v2alpha1",
    "kind": "DataDownload",
    "metadata": {"name": "r1", "namespace": "velero", "uid": "uid-dd", "creationTimestamp": "2026-01-01T00:00:00Z"},
    "spec": {
        "targetVolume": {"pvc": "data", "pv": "", "namespace": "app"},
        "backupStorageLocation": "default",
        "snapshotID": "abc123",
        "sourceNamespace": "app",
        "operationTimeout": "10m",
    },
}
FS = StorageLocation(name="fs", provider="filesystem", pvc="repo-pvc")
LOCAL_AFFINITY = {
    "nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-2"]}]}
    ]
}


def pinned_to(job: dict[str, Any]) -> Any:
    """The Job's required node selector (None: it may run anywhere)."""
    affinity = job["spec"]["template"]["spec"].get("affinity") or {}
    return (affinity.get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")


def test_a_restore_claim_carries_the_selected_node_and_pins_its_job() -> None:
    body = objects.restore_claim(
        DD, "r", "sm", mode="Filesystem", access_modes=None, size="1Gi", storage_class="wfc", selected_node="node-2"
    )
    assert body["metadata"]["annotations"] == {objects.SELECTED_NODE: "node-2"}
    placement = objects.claim_placement(body["metadata"]["annotations"])
    job = build_job(
        DD, LauncherConfig(namespace="sm"), claim="r", volume_mode="Filesystem", location=FS, source_namespace="app",
        placement=placement,
    )  # fmt: skip
    term = pinned_to(job)["nodeSelectorTerms"][0]
    assert term == {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-2"]}]}


def test_a_backup_claim_records_the_source_affinity_for_its_job() -> None:
    body = objects.backup_claim(
        DU, "b", "sm", mode="Block", size=None, storage_class="standard", read_only=False,
        source_affinity=LOCAL_AFFINITY,
    )  # fmt: skip
    assert objects.claim_placement(body["metadata"]["annotations"]) == LOCAL_AFFINITY


def test_no_node_means_no_affinity() -> None:
    plain = objects.restore_claim(DD, "r", "sm", mode="Filesystem", access_modes=None, size=None, storage_class=None)
    assert "annotations" not in plain["metadata"]
    assert objects.claim_placement(None) is None
    assert objects.claim_placement({objects.NODE_AFFINITY_ANNOTATION: "{}"}) is None
    job = build_job(
        DU, LauncherConfig(namespace="sm"), claim="b", volume_mode="Filesystem", location=FS, source_namespace="app"
    )
    assert pinned_to(job) is None


# --- launcher.exposure, with fakes of the API and the caches -------------------------------------


class FakeCache:
    """The part of an Informer the exposer uses: get/put by (namespace, name)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], Any] = {}

    def get(self, name: str, namespace: str = "") -> Any:
        return self.objects.get((namespace, name))

    def put(self, obj: Any) -> None:
        meta = obj["metadata"] if isinstance(obj, dict) else obj.metadata
        key = (meta["namespace"], meta["name"]) if isinstance(obj, dict) else (meta.namespace, meta.name)
        self.objects[key] = obj


class FakeCore:
    """PVC/PV reads from fixed objects; a PVC create is recorded and returned as a typed object."""

    def __init__(self, claims: dict[tuple[str, str], client.V1PersistentVolumeClaim], pvs: dict[str, Any]) -> None:
        self.api_client = client.ApiClient()
        self.claims, self.pvs = claims, pvs
        self.created: list[dict[str, Any]] = []

    def read_namespaced_persistent_volume_claim(self, name: str, namespace: str) -> client.V1PersistentVolumeClaim:
        if (namespace, name) not in self.claims:
            raise ApiException(status=404, reason="Not Found")
        return self.claims[(namespace, name)]

    def read_persistent_volume(self, name: str) -> client.V1PersistentVolume:
        if name not in self.pvs:
            raise ApiException(status=404, reason="Not Found")
        pv: client.V1PersistentVolume = self.pvs[name]
        return pv

    def create_namespaced_persistent_volume_claim(self, namespace: str, body: dict[str, Any]) -> Any:
        self.created.append(copy.deepcopy(body))
        meta = body["metadata"]
        return client.V1PersistentVolumeClaim(
            metadata=client.V1ObjectMeta(
                name=meta["name"], namespace=namespace, labels=meta["labels"], annotations=meta.get("annotations")
            ),
            spec=client.V1PersistentVolumeClaimSpec(volume_mode=body["spec"]["volumeMode"]),
        )


class FakeStorage:
    def read_storage_class(self, name: str) -> client.V1StorageClass:
        return client.V1StorageClass(
            metadata=client.V1ObjectMeta(name=name), provisioner="p", volume_binding_mode="WaitForFirstConsumer"
        )


def make_exposer(core: FakeCore, snapshots: FakeCache | None = None) -> tuple[Exposer, FakeCache]:
    claims = FakeCache()
    exposer = Exposer(
        core, None, FakeStorage(), claims, snapshots or FakeCache(), Recent(ttl=15), LauncherConfig(namespace="sm"),  # type: ignore[arg-type]
    )  # fmt: skip
    return exposer, claims


def pvc(annotations: dict[str, str] | None, *, volume: str | None = None, phase: str = "Pending") -> Any:
    return client.V1PersistentVolumeClaim(
        metadata=client.V1ObjectMeta(name="data", namespace="app", annotations=annotations),
        spec=client.V1PersistentVolumeClaimSpec(
            storage_class_name="wfc",
            access_modes=["ReadWriteOnce"],
            volume_mode="Filesystem",
            volume_name=volume,
            resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}),
        ),
        status=client.V1PersistentVolumeClaimStatus(phase=phase),
    )


def test_a_restore_is_pinned_to_the_target_pvcs_selected_node() -> None:
    core = FakeCore({("app", "data"): pvc({objects.SELECTED_NODE: "node-2"})}, {})
    exposer, _ = make_exposer(core)
    exposed = exposer.expose_restore(DD, now=0)
    assert isinstance(exposed, Exposed)
    assert exposed.placement == objects.node_pin("node-2")
    assert core.created[0]["metadata"]["annotations"] == {objects.SELECTED_NODE: "node-2"}


def test_a_backup_of_a_local_volume_runs_where_the_volume_is() -> None:
    local_pv = client.V1PersistentVolume(
        metadata=client.V1ObjectMeta(name="pv-local"),
        spec=client.V1PersistentVolumeSpec(
            local=client.V1LocalVolumeSource(path="/dev/loop7"),
            node_affinity=client.V1VolumeNodeAffinity(
                required=client.V1NodeSelector(
                    node_selector_terms=[
                        client.V1NodeSelectorTerm(
                            match_expressions=[
                                client.V1NodeSelectorRequirement(
                                    key="kubernetes.io/hostname", operator="In", values=["node-2"]
                                )
                            ]
                        )
                    ]
                )
            ),
        ),
    )
    core = FakeCore({("app", "data"): pvc(None, volume="pv-local", phase="Bound")}, {"pv-local": local_pv})
    snapshots = FakeCache()
    name = object_name(DU)
    snapshots.put({"metadata": {"name": name, "namespace": "sm"}, "status": {"readyToUse": True, "restoreSize": "1Gi"}})
    exposer, claims = make_exposer(core, snapshots)
    first = exposer.expose_backup(DU, now=0)
    assert isinstance(first, Exposed)
    assert first.placement == LOCAL_AFFINITY
    # the next reconcile finds the backup PVC in the cache and reads the placement back from it
    cached = claims.get(name, "sm")
    cached.metadata.labels = {**(cached.metadata.labels or {}), LABEL_OWNER_UID: DU["metadata"]["uid"]}  # type: ignore[index]
    again = exposer.expose_backup(DU, now=0)
    assert isinstance(again, Exposed)
    assert again.placement == LOCAL_AFFINITY
    assert len(core.created) == 1
