"""``snapmover backup-pvc``'s pure parts: the objects it creates and which backups retention keeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from jobs.contract import API_GROUP, API_VERSION, DATAUPLOAD_KIND
from launcher.backup_pvc import DataUploadSpec, data_upload_body, keep_names, volume_snapshot_body

LABELS = {"snapmover.io/schedule": "ns-data"}


def spec(snapshot_class: str | None) -> DataUploadSpec:
    return DataUploadSpec(
        snapshot="data-abcde",
        storage_class="fast",
        snapshot_class=snapshot_class,
        pvc="data",
        pvc_namespace="ns",
        datamover="snapmover",
        storage_location="default",
    )


def test_the_data_upload_names_the_snapshot_and_its_class_only_when_given() -> None:
    body = data_upload_body(spec("csi-snap"), "ns-data-", "snapmover", LABELS)
    assert body["apiVersion"] == f"{API_GROUP}/{API_VERSION}" and body["kind"] == DATAUPLOAD_KIND
    assert body["metadata"] == {"generateName": "ns-data-", "namespace": "snapmover", "labels": LABELS}
    assert body["spec"] == {
        "snapshotType": "CSI",
        "csiSnapshot": {"volumeSnapshot": "data-abcde", "storageClass": "fast", "snapshotClass": "csi-snap"},
        "sourcePVC": "data",
        "sourceNamespace": "ns",
        "datamover": "snapmover",
        "backupStorageLocation": "default",
        "operationTimeout": "10m0s",
    }
    without = data_upload_body(spec(None), "ns-data-", "snapmover", LABELS)
    assert without["spec"]["csiSnapshot"] == {"volumeSnapshot": "data-abcde", "storageClass": "fast"}


def test_the_volume_snapshot_uses_the_default_class_unless_one_is_named() -> None:
    body = volume_snapshot_body("ns", "data", LABELS, None)
    assert body["metadata"] == {"generateName": "data-", "namespace": "ns", "labels": LABELS}
    assert body["spec"] == {"source": {"persistentVolumeClaimName": "data"}}
    named = volume_snapshot_body("ns", "data", LABELS, "csi-snap")
    assert named["spec"]["volumeSnapshotClassName"] == "csi-snap"


def test_retention_keeps_the_newest_and_one_per_day() -> None:
    now = datetime(2026, 3, 10, 12, tzinfo=UTC)
    items = [(f"b{i}", now - timedelta(hours=8 * i)) for i in range(9)]  # 10 March 12:00 back to 7 March 20:00
    assert keep_names(items, keep_last=2, keep_daily=0, keep_weekly=0) == {"b0", "b1"}
    kept = keep_names(items, keep_last=1, keep_daily=3, keep_weekly=0)
    assert kept == {"b0", "b2", "b5"}  # the newest of 10, 9 and 8 March; 7 March is a fourth day
