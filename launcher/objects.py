"""Pure builders of the exposure objects and small bodies the launcher writes (no API calls here).

``launcher.exposure`` creates what these return: the backup PVC (from the cloned VolumeSnapshot),
the restore PVC (copying the target's class, modes and size), the cloned VolumeSnapshot and
VolumeSnapshotContent of a snapshot takeover; ``launcher.controller`` the Events and the password
Secret; ``launcher.phases`` the PersistentVolume patches of a restore's rebinding. The mover Job
and its RBAC come from ``launcher.jobspec``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from launcher.jobspec import PASSWORD_KEY, PASSWORD_SECRET, common_labels, owner_reference

SNAP_GROUP, SNAP_VERSION = "snapshot.storage.k8s.io", "v1"
SNAP_API_VERSION = f"{SNAP_GROUP}/{SNAP_VERSION}"
DEFAULT_SIZE = "1Gi"
EVENT_MESSAGE_LIMIT_CHARS = 1000
EVENT_NAME_PREFIX_CHARS = 200
EVENT_SOURCE = "snapmover-launcher"
ORIGINAL_RECLAIM = "snapmover.io/original-reclaim-policy"
RESTORED_FOR_LABEL = "snapmover.io/restored-for"
SELECTED_NODE = "volume.kubernetes.io/selected-node"  # set by kube-scheduler on a WaitForFirstConsumer PVC
NODE_AFFINITY_ANNOTATION = "snapmover.io/node-affinity"  # a backup PVC: where its source volume can be mounted


def owned_metadata(cr: Mapping[str, Any], name: str, namespace: str) -> dict[str, Any]:
    """Name, namespace, the CR's labels and an owner reference to it."""
    return {
        "name": name,
        "namespace": namespace,
        "labels": common_labels(dict(cr)),
        "ownerReferences": [owner_reference(dict(cr))],
    }


def claim(
    cr: Mapping[str, Any],
    name: str,
    namespace: str,
    *,
    mode: str,
    access_modes: list[str],
    size: str | None,
    storage_class: str | None,
) -> dict[str, Any]:
    """A PVC owned by the CR (``size`` defaults to DEFAULT_SIZE; no class: the cluster default)."""
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": owned_metadata(cr, name, namespace),
        "spec": {
            "accessModes": access_modes,
            "volumeMode": mode,
            "resources": {"requests": {"storage": size or DEFAULT_SIZE}},
        },
    }
    if storage_class:
        body["spec"]["storageClassName"] = storage_class
    return body


def backup_claim(
    cr: Mapping[str, Any],
    name: str,
    namespace: str,
    *,
    mode: str,
    size: str | None,
    storage_class: str | None,
    read_only: bool,
    source_affinity: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The PVC a backup mounts, provisioned from the cloned VolumeSnapshot ``name``.

    ``source_affinity`` is the source PV's ``spec.nodeAffinity.required`` (a ``local`` PV's node):
    recorded on the PVC, so the mover Job runs where the volume can be mounted (:func:`claim_placement`)."""
    access = ["ReadOnlyMany"] if read_only else ["ReadWriteOnce"]
    body = claim(cr, name, namespace, mode=mode, access_modes=access, size=size, storage_class=storage_class)
    body["spec"]["dataSource"] = {"apiGroup": SNAP_GROUP, "kind": "VolumeSnapshot", "name": name}
    if source_affinity:
        body["metadata"]["annotations"] = {NODE_AFFINITY_ANNOTATION: json.dumps(dict(source_affinity), sort_keys=True)}
    return body


def restore_claim(
    cr: Mapping[str, Any],
    name: str,
    namespace: str,
    *,
    mode: str,
    access_modes: list[str] | None,
    size: str | None,
    storage_class: str | None,
    selected_node: str | None = None,
) -> dict[str, Any]:
    """The PVC a restore writes into; its PV is handed to the target PVC afterwards.

    ``selected_node`` is the target PVC's selected node (WaitForFirstConsumer): the restore PVC
    carries it too, so its volume is provisioned there and the mover Job is pinned to it."""
    access = access_modes or ["ReadWriteOnce"]
    body = claim(cr, name, namespace, mode=mode, access_modes=access, size=size, storage_class=storage_class)
    if selected_node:
        body["metadata"]["annotations"] = {SELECTED_NODE: selected_node}
    return body


def node_pin(node: str) -> dict[str, Any]:
    """A required NodeSelector matching exactly the node named ``node`` (its name, not a label)."""
    return {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}


def claim_placement(annotations: Mapping[str, str] | None) -> dict[str, Any] | None:
    """The required NodeSelector a mover Job gets from its exposure PVC's annotations: the selected
    node of a restore PVC, the source volume's node affinity of a backup PVC; None: anywhere."""
    annotations = annotations or {}
    if annotations.get(SELECTED_NODE):
        return node_pin(annotations[SELECTED_NODE])
    recorded = annotations.get(NODE_AFFINITY_ANNOTATION)
    if not recorded:
        return None
    affinity = json.loads(recorded)
    return affinity if isinstance(affinity, dict) and affinity.get("nodeSelectorTerms") else None


def snapshot_content_clone(
    cr: Mapping[str, Any], name: str, namespace: str, *, content: Mapping[str, Any], handle: str
) -> dict[str, Any]:
    """A pre-provisioned VolumeSnapshotContent for the same storage snapshot, bound to our clone."""
    spec = content.get("spec") or {}
    return {
        "apiVersion": SNAP_API_VERSION,
        "kind": "VolumeSnapshotContent",
        "metadata": {"name": clone_content_name(cr, name), "labels": common_labels(dict(cr))},
        "spec": {
            "deletionPolicy": "Delete",
            "driver": spec.get("driver", ""),
            "volumeSnapshotClassName": spec.get("volumeSnapshotClassName"),
            "source": {"snapshotHandle": handle},
            "volumeSnapshotRef": {
                "apiVersion": SNAP_API_VERSION,
                "kind": "VolumeSnapshot",
                "name": name,
                "namespace": namespace,
            },
        },
    }


def clone_content_name(cr: Mapping[str, Any], name: str) -> str:
    """Name of the cloned VolumeSnapshotContent (cluster-scoped, so the CR's uid disambiguates)."""
    return f"{name}-{cr['metadata']['uid'][:8]}"


def snapshot_clone(cr: Mapping[str, Any], name: str, namespace: str, *, content: Mapping[str, Any]) -> dict[str, Any]:
    """The VolumeSnapshot in the launcher namespace bound to the cloned content."""
    return {
        "apiVersion": SNAP_API_VERSION,
        "kind": "VolumeSnapshot",
        "metadata": owned_metadata(cr, name, namespace),
        "spec": {
            "source": {"volumeSnapshotContentName": clone_content_name(cr, name)},
            "volumeSnapshotClassName": (content.get("spec") or {}).get("volumeSnapshotClassName"),
        },
    }


def retain_content_patch() -> dict[str, Any]:
    """Make the original VolumeSnapshotContent keep the storage snapshot when it is deleted."""
    return {"spec": {"deletionPolicy": "Retain"}}


def event(
    involved: Mapping[str, str], namespace: str, kind: str, reason: str, message: str, timestamp: str
) -> dict[str, Any]:
    """A core/v1 Event about ``involved`` (``kubectl describe`` tells the story from these)."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{involved['name'][:EVENT_NAME_PREFIX_CHARS]}.", "namespace": namespace},
        "involvedObject": dict(involved),
        "reason": reason,
        "message": message[:EVENT_MESSAGE_LIMIT_CHARS],
        "type": kind,
        "source": {"component": EVENT_SOURCE},
        "firstTimestamp": timestamp,
        "lastTimestamp": timestamp,
        "count": 1,
    }


def password_secret(namespace: str, password: str) -> dict[str, Any]:
    """The repository password Secret."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": PASSWORD_SECRET, "namespace": namespace},
        "type": "Opaque",
        "stringData": {PASSWORD_KEY: password},
    }


def reclaim_patch(policy: str) -> dict[str, Any]:
    """Set a PV's reclaim policy (back to the original once the target PVC is bound)."""
    return {"spec": {"persistentVolumeReclaimPolicy": policy}}


def retain_volume_patch(original_policy: str | None, owner_uid: str) -> dict[str, Any]:
    """Keep the restored PV when the restore PVC goes, remembering the original policy."""
    return {
        "metadata": {
            "annotations": {ORIGINAL_RECLAIM: original_policy},
            "labels": {RESTORED_FOR_LABEL: owner_uid},
        },
        "spec": {"persistentVolumeReclaimPolicy": "Retain"},
    }


def claim_ref_patch(target: Mapping[str, Any]) -> dict[str, Any]:
    """Point a PV at the target PVC, carrying the target's selector labels (Velero's dynamic-pv-restore)."""
    meta, spec = target.get("metadata") or {}, target.get("spec") or {}
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    return {
        "metadata": {"labels": dict(selector)},
        "spec": {
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta.get("namespace"),
                "name": meta.get("name"),
                "uid": meta.get("uid"),
            }
        },
    }
