"""``snapmover backup-pvc``: a scheduled backup of one PVC without Velero (run by a CronJob).

Creates a VolumeSnapshot of the PVC, then a DataUpload for it (datamover ``snapmover``, labels
naming the schedule and the PVC), optionally waits for a final phase (the exit code says which),
then applies retention: Completed DataUploads of the same schedule beyond ``--keep-last`` (and
outside the newest ``--keep-daily`` days / ``--keep-weekly`` ISO weeks) are deleted.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import click

from jobs.contract import (
    API_GROUP,
    API_VERSION,
    DATAUPLOAD_KIND,
    DATAUPLOAD_PLURAL,
    DEFAULT_DATAMOVER_NAME,
    DMC_EXCLUDES,
    TERMINAL_PHASES,
    ExitCode,
    Phase,
)

LABEL_SCHEDULE = "snapmover.io/schedule"
LABEL_PVC = "snapmover.io/pvc"
LABEL_PVC_NAMESPACE = "snapmover.io/pvc-namespace"
POLL_SECONDS = 2.0


def keep_names(items: Sequence[tuple[str, datetime]], keep_last: int, keep_daily: int, keep_weekly: int) -> set[str]:
    """Names to keep: the newest ``keep_last``, plus the newest of each of the newest days/weeks."""
    ordered = sorted(items, key=lambda i: i[1], reverse=True)
    keep = {name for name, _ in ordered[:keep_last]}
    for limit, period in ((keep_daily, "%Y-%m-%d"), (keep_weekly, "%G-W%V")):
        seen: set[str] = set()
        for name, when in ordered:
            key = when.strftime(period)
            if key not in seen and len(seen) < limit:
                seen.add(key)
                keep.add(name)
    return keep


def _label(value: str) -> str:
    return value[:63].strip("-_.")


@click.command("backup-pvc")
@click.option("--namespace", "pvc_namespace", required=True, help="Namespace of the PVC.")
@click.option("--pvc", required=True, help="PVC to back up.")
@click.option("--launcher-namespace", default="snapmover", show_default=True, help="Where DataUploads live.")
@click.option("--storage-location", default="default", show_default=True, help="Storage location name.")
@click.option("--snapshot-class", default=None, help="VolumeSnapshotClass (default: the cluster's default).")
@click.option("--schedule", default=None, help="Schedule name for retention (default: <namespace>-<pvc>).")
@click.option("--datamover", default=DEFAULT_DATAMOVER_NAME, show_default=True)
@click.option("--wait/--no-wait", default=False, help="Wait for the DataUpload to finish; exit code reflects it.")
@click.option("--timeout", default=3600, show_default=True, help="Seconds to wait with --wait.")
@click.option("--keep-last", type=click.IntRange(min=0), default=None, help="Keep this many newest Completed backups.")
@click.option("--keep-daily", type=click.IntRange(min=0), default=0, help="Also keep the newest of this many days.")
@click.option("--keep-weekly", type=click.IntRange(min=0), default=0, help="Also keep the newest of this many weeks.")
@click.option(
    "--exclude",
    "excludes",
    multiple=True,
    metavar="PATTERN",
    help="Exclude pattern (repeatable; rules: `snapmover upload --help`), sent as dataMoverConfig.excludes.",
)
@click.option("--kubeconfig", envvar="KUBECONFIG", default=None, help="kubeconfig (default: in-cluster).")
def backup_pvc(
    pvc_namespace: str,
    pvc: str,
    launcher_namespace: str,
    storage_location: str,
    snapshot_class: str | None,
    schedule: str | None,
    datamover: str,
    wait: bool,
    timeout: int,
    keep_last: int | None,
    keep_daily: int,
    keep_weekly: int,
    excludes: tuple[str, ...],
    kubeconfig: str | None,
) -> None:
    """Snapshot a PVC and back it up with a DataUpload (for CronJobs), then apply retention.

    The mover checks the --exclude patterns: a bad one fails the DataUpload naming it."""
    from kubernetes.client.rest import ApiException

    if any("\n" in p or "\r" in p for p in excludes):
        raise click.ClickException("an --exclude pattern cannot contain a line break (give one pattern per option)")
    core, custom = _api_clients(kubeconfig)
    schedule = _label(schedule or f"{pvc_namespace}-{pvc}")
    try:
        source = core.read_namespaced_persistent_volume_claim(pvc, pvc_namespace)
    except ApiException as e:
        raise click.ClickException(f"cannot read PVC {pvc_namespace}/{pvc}: {e.status} {e.reason}") from e
    labels = {LABEL_SCHEDULE: schedule, LABEL_PVC: _label(pvc), LABEL_PVC_NAMESPACE: _label(pvc_namespace)}
    try:
        vs = custom.create_namespaced_custom_object(
            "snapshot.storage.k8s.io",
            "v1",
            pvc_namespace,
            "volumesnapshots",
            volume_snapshot_body(pvc_namespace, pvc, labels, snapshot_class),
        )
        upload = DataUploadSpec(
            snapshot=vs["metadata"]["name"],
            storage_class=source.spec.storage_class_name or "",
            snapshot_class=snapshot_class,
            pvc=pvc,
            pvc_namespace=pvc_namespace,
            datamover=datamover,
            storage_location=storage_location,
            excludes=excludes,
        )
        du = custom.create_namespaced_custom_object(
            API_GROUP,
            API_VERSION,
            launcher_namespace,
            DATAUPLOAD_PLURAL,
            data_upload_body(upload, f"{schedule[:40]}-", launcher_namespace, labels),
        )
    except ApiException as e:
        raise click.ClickException(f"cannot create the snapshot or DataUpload: {e.status} {e.reason}") from e
    name = du["metadata"]["name"]
    click.echo(
        f"created VolumeSnapshot {pvc_namespace}/{vs['metadata']['name']} and DataUpload {launcher_namespace}/{name}"
    )
    code = ExitCode.OK
    if wait:
        phase, message = _wait(custom, launcher_namespace, name, timeout)
        click.echo(f"DataUpload {name}: {phase}{': ' + message if message else ''}")
        code = {Phase.COMPLETED: ExitCode.OK, Phase.CANCELED: ExitCode.CANCELED}.get(phase, ExitCode.FAILED)
    if keep_last is not None or keep_daily or keep_weekly:
        _retention(custom, launcher_namespace, schedule, keep_last or 0, keep_daily, keep_weekly)
    sys.exit(code)


def _api_clients(kubeconfig: str | None) -> tuple[Any, Any]:
    """The core and custom-objects API clients, from ``kubeconfig`` or the in-cluster config."""
    from kubernetes import client, config

    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig)
    else:
        config.load_incluster_config()
    from jobs import __version__

    api = client.ApiClient()
    api.user_agent = f"snapmover-backup-pvc/{__version__}"
    return client.CoreV1Api(api), client.CustomObjectsApi(api)


def volume_snapshot_body(
    namespace: str, pvc: str, labels: dict[str, str], snapshot_class: str | None
) -> dict[str, Any]:
    """The VolumeSnapshot of ``namespace/pvc`` to create (the cluster's default class unless named)."""
    body: dict[str, Any] = {
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": {"generateName": f"{pvc[:40]}-", "namespace": namespace, "labels": labels},
        "spec": {"source": {"persistentVolumeClaimName": pvc}},
    }
    if snapshot_class:
        body["spec"]["volumeSnapshotClassName"] = snapshot_class
    return body


@dataclass(frozen=True)
class DataUploadSpec:
    """What the DataUpload of one snapshotted PVC says."""

    snapshot: str  # the VolumeSnapshot's name
    storage_class: str
    snapshot_class: str | None
    pvc: str
    pvc_namespace: str
    datamover: str
    storage_location: str
    excludes: tuple[str, ...] = ()  # backup-side exclude patterns (dataMoverConfig.excludes)


def data_upload_body(
    spec: DataUploadSpec, generate_name: str, namespace: str, labels: dict[str, str]
) -> dict[str, Any]:
    """The DataUpload to create in ``namespace`` for ``spec``."""
    csi = {"volumeSnapshot": spec.snapshot, "storageClass": spec.storage_class}
    if spec.snapshot_class:
        csi["snapshotClass"] = spec.snapshot_class
    body: dict[str, Any] = {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": DATAUPLOAD_KIND,
        "metadata": {"generateName": generate_name, "namespace": namespace, "labels": labels},
        "spec": {
            "snapshotType": "CSI",
            "csiSnapshot": csi,
            "sourcePVC": spec.pvc,
            "sourceNamespace": spec.pvc_namespace,
            "datamover": spec.datamover,
            "backupStorageLocation": spec.storage_location,
            "operationTimeout": "10m0s",
        },
    }
    if spec.excludes:
        body["spec"]["dataMoverConfig"] = {DMC_EXCLUDES: "\n".join(spec.excludes)}
    return body


def _wait(custom: Any, namespace: str, name: str, timeout: int) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obj = custom.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, DATAUPLOAD_PLURAL, name)
        status = obj.get("status") or {}
        if status.get("phase") in TERMINAL_PHASES:
            return str(status["phase"]), str(status.get("message") or "")
        time.sleep(POLL_SECONDS)
    return "Timeout", f"not finished after {timeout}s"


def _retention(custom: Any, namespace: str, schedule: str, keep_last: int, keep_daily: int, keep_weekly: int) -> None:
    items = custom.list_namespaced_custom_object(
        API_GROUP, API_VERSION, namespace, DATAUPLOAD_PLURAL, label_selector=f"{LABEL_SCHEDULE}={schedule}"
    )["items"]
    done = [
        (o["metadata"]["name"], datetime.fromisoformat(o["metadata"]["creationTimestamp"].replace("Z", "+00:00")))
        for o in items
        if (o.get("status") or {}).get("phase") == Phase.COMPLETED
    ]
    keep = keep_names(done, keep_last, keep_daily, keep_weekly)
    for name, _when in done:
        if name not in keep:
            custom.delete_namespaced_custom_object(API_GROUP, API_VERSION, namespace, DATAUPLOAD_PLURAL, name)
            click.echo(f"retention: deleted DataUpload {namespace}/{name}")
