"""launcher.exposure: what the backup-PVC wait reads (class, binding mode, last Event), with small fakes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from launcher.config import LauncherConfig
from launcher.exposure import Exposer
from launcher.informer import Recent
from launcher.phases import ClaimBinding


class FakeCore:
    """list_namespaced_event over a fixed list (or a refusal), counting calls."""

    def __init__(self, events: list[client.CoreV1Event], refuse: int = 0) -> None:
        self.api_client = client.ApiClient()
        self.events, self.refuse, self.calls = events, refuse, 0

    def list_namespaced_event(self, namespace: str, field_selector: str) -> client.CoreV1EventList:
        self.calls += 1
        if self.refuse:
            raise ApiException(status=self.refuse, reason="Forbidden")
        name = field_selector.rsplit("=", 1)[-1]
        return client.CoreV1EventList(items=[e for e in self.events if e.involved_object.name == name])


class FakeStorage:
    def __init__(self, classes: dict[str, client.V1StorageClass]) -> None:
        self.classes = classes

    def read_storage_class(self, name: str) -> client.V1StorageClass:
        if name not in self.classes:
            raise ApiException(status=404, reason="Not Found")
        return self.classes[name]


def exposer(core: FakeCore, classes: dict[str, client.V1StorageClass]) -> Exposer:
    none: Any = None
    return Exposer(core, none, FakeStorage(classes), none, none, Recent(ttl=15), LauncherConfig(namespace="sm"))  # type: ignore[arg-type]


def claim(phase: str, sc: str | None, age_seconds: float = 60) -> client.V1PersistentVolumeClaim:
    created = datetime.now(UTC) - timedelta(seconds=age_seconds)
    return client.V1PersistentVolumeClaim(
        metadata=client.V1ObjectMeta(name="snapmover-du-b1", namespace="sm", creation_timestamp=created),
        spec=client.V1PersistentVolumeClaimSpec(storage_class_name=sc),
        status=client.V1PersistentVolumeClaimStatus(phase=phase),
    )


def event(reason: str, message: str, seconds_ago: float, kind: str = "Warning") -> client.CoreV1Event:
    when = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    return client.CoreV1Event(
        metadata=client.V1ObjectMeta(name=f"e-{reason}"),
        involved_object=client.V1ObjectReference(kind="PersistentVolumeClaim", name="snapmover-du-b1"),
        reason=reason,
        message=message,
        type=kind,
        last_timestamp=when,
    )


SLOW = client.V1StorageClass(
    metadata=client.V1ObjectMeta(name="slow"), provisioner="rbd.csi.ceph.com", volume_binding_mode="Immediate"
)
LOCAL = client.V1StorageClass(
    metadata=client.V1ObjectMeta(name="local"), provisioner="x", volume_binding_mode="WaitForFirstConsumer"
)


def test_a_pending_pvc_reports_its_class_and_newest_event_of_any_type() -> None:
    core = FakeCore(
        [
            event("ProvisioningFailed", "rpc error: timeout", 30),
            event("Provisioning", "External provisioner is provisioning volume for claim", 5, kind="Normal"),
        ]
    )
    found = exposer(core, {"slow": SLOW}).claim_binding(claim("Pending", "slow"))
    assert found == ClaimBinding(
        "Pending", "slow", "Immediate", "rbd.csi.ceph.com", "Provisioning: External provisioner is provisioning "
        "volume for claim"
    )  # fmt: skip


def test_a_bound_or_young_pvc_costs_no_event_read() -> None:
    core = FakeCore([event("ProvisioningFailed", "x", 1)])
    expose = exposer(core, {"slow": SLOW, "local": LOCAL})
    assert expose.claim_binding(claim("Bound", "slow")) == ClaimBinding("Bound", "slow")
    young = expose.claim_binding(claim("Pending", "local", age_seconds=2))
    assert young == ClaimBinding("Pending", "local", "WaitForFirstConsumer", "x", "") and core.calls == 0


def test_a_missing_class_and_unreadable_events_still_give_a_binding() -> None:
    found = exposer(FakeCore([], refuse=403), {}).claim_binding(claim("Pending", "gone"))
    assert found == ClaimBinding("Pending", "gone", "", "", "")
