"""Every Kubernetes API call the launcher makes, and the RBAC permission each one needs.

The single list behind manifests/base/rbac.yaml: tests/unit/test_manifests.py checks that the
kubernetes-client methods called in launcher/ are exactly the ones listed here and that the
rendered Role + ClusterRole grant exactly these permissions (nothing more); tests/e2e/
test_install.py asks `kubectl auth can-i` for each on the local cluster. When the launcher starts
calling something new, add it here and to rbac.yaml.

Scope ``namespace`` is the launcher's own namespace (the Role); ``cluster`` covers other
namespaces or cluster-scoped objects (the ClusterRole). ``names`` limits a rule to resourceNames.
"""

from __future__ import annotations

from typing import NamedTuple

VELERO = "velero.io"
SNAPSHOT = "snapshot.storage.k8s.io"
# The launcher code lives in these modules (backup_pvc.py runs in CronJobs under its own RBAC,
# manifests/examples/cronjob-backup.yaml).
LAUNCHER_MODULES = (
    "launcher/controller.py",
    "launcher/exposure.py",
    "launcher/maintenance.py",
    "launcher/api.py",
    "launcher/informer.py",
    "launcher/leader.py",
    "launcher/cli.py",
)
VERB_OF_PREFIX = {"read": "get", "get": "get", "list": "list", "create": "create", "replace": "update",
                  "patch": "patch", "delete": "delete"}  # fmt: skip


class Permission(NamedTuple):
    group: str
    resource: str
    verb: str
    scope: str  # "namespace" (the launcher's) or "cluster"
    names: tuple[str, ...] = ()


class Use(NamedTuple):
    group: str
    resource: str
    scope: str
    names: tuple[str, ...] = ()


CRS = [Use(VELERO, "datauploads", "namespace"), Use(VELERO, "datadownloads", "namespace")]

# kubernetes-client method → what it touches (the verb follows from the method's prefix).
LAUNCHER_API_CALLS: dict[str, list[Use]] = {
    # DataUploads/DataDownloads: listed and watched, read, updated (status through the main resource)
    "list_namespaced_custom_object": [  # the watch caches (launcher/informer.py)
        Use(VELERO, "datauploads", "namespace"),
        Use(VELERO, "datadownloads", "namespace"),
        Use(SNAPSHOT, "volumesnapshots", "namespace"),
    ],
    "get_namespaced_custom_object": [
        Use(VELERO, "backupstoragelocations", "namespace"),
        Use(SNAPSHOT, "volumesnapshots", "cluster"),  # the source snapshot in the application namespace
    ],
    "replace_namespaced_custom_object": [
        Use(VELERO, "datauploads", "namespace"),
        Use(VELERO, "datadownloads", "namespace"),
    ],
    # snapshot takeover: clone VolumeSnapshotContent + VolumeSnapshot into the launcher namespace
    "create_namespaced_custom_object": [Use(SNAPSHOT, "volumesnapshots", "namespace")],
    "delete_namespaced_custom_object": [Use(SNAPSHOT, "volumesnapshots", "cluster")],  # original and clone
    "get_cluster_custom_object": [Use(SNAPSHOT, "volumesnapshotcontents", "cluster")],
    "create_cluster_custom_object": [Use(SNAPSHOT, "volumesnapshotcontents", "cluster")],
    "patch_cluster_custom_object": [Use(SNAPSHOT, "volumesnapshotcontents", "cluster")],
    "delete_cluster_custom_object": [Use(SNAPSHOT, "volumesnapshotcontents", "cluster")],
    # mover Jobs and their pods
    "list_namespaced_job": [Use("batch", "jobs", "namespace")],
    "create_namespaced_job": [Use("batch", "jobs", "namespace")],
    "delete_namespaced_job": [Use("batch", "jobs", "namespace")],
    "list_namespaced_pod": [Use("", "pods", "namespace")],
    "list_node": [Use("", "nodes", "cluster")],  # the per-node limit counts Ready nodes
    # volumes: source/target PVCs anywhere, the mover's PVC here, PV rebinding on restore
    "read_namespaced_persistent_volume_claim": [Use("", "persistentvolumeclaims", "cluster")],
    "list_namespaced_persistent_volume_claim": [Use("", "persistentvolumeclaims", "namespace")],
    "create_namespaced_persistent_volume_claim": [Use("", "persistentvolumeclaims", "namespace")],
    "delete_namespaced_persistent_volume_claim": [Use("", "persistentvolumeclaims", "namespace")],
    "read_persistent_volume": [Use("", "persistentvolumes", "cluster")],
    "list_persistent_volume": [Use("", "persistentvolumes", "cluster")],
    "patch_persistent_volume": [Use("", "persistentvolumes", "cluster")],
    "read_storage_class": [Use("storage.k8s.io", "storageclasses", "cluster")],
    # the per-CR mover identity (ServiceAccount + Role on its own CR + RoleBinding)
    "create_namespaced_service_account": [Use("", "serviceaccounts", "namespace")],
    "create_namespaced_role": [Use("rbac.authorization.k8s.io", "roles", "namespace")],
    "create_namespaced_role_binding": [Use("rbac.authorization.k8s.io", "rolebindings", "namespace")],
    # repository password (created when absent) and storage credentials; config; Events; Lease
    "read_namespaced_secret": [Use("", "secrets", "namespace")],
    "create_namespaced_secret": [Use("", "secrets", "namespace")],
    "read_namespaced_config_map": [Use("", "configmaps", "namespace", ("snapmover-config",))],
    "create_namespaced_event": [Use("", "events", "namespace")],
    "list_namespaced_event": [Use("", "events", "namespace")],  # why a mover pod / backup PVC is stuck
    "read_namespaced_lease": [Use("coordination.k8s.io", "leases", "namespace", ("snapmover-launcher",))],
    "replace_namespaced_lease": [Use("coordination.k8s.io", "leases", "namespace", ("snapmover-launcher",))],
    "create_namespaced_lease": [Use("coordination.k8s.io", "leases", "namespace")],
}

# Permissions that no single method name shows.
EXTRA_PERMISSIONS: dict[Permission, str] = {
    Permission(VELERO, "datauploads", "watch", "namespace"): "watch.Watch().stream(list_namespaced_custom_object)",
    Permission(VELERO, "datadownloads", "watch", "namespace"): "watch.Watch().stream(list_namespaced_custom_object)",
    Permission("batch", "jobs", "watch", "namespace"): "watch.Watch().stream(list_namespaced_job)",
    Permission("", "pods", "watch", "namespace"): "watch.Watch().stream(list_namespaced_pod)",
    Permission("", "persistentvolumeclaims", "watch", "namespace"): "watch of list_namespaced_persistent_volume_claim",
    Permission(
        SNAPSHOT, "volumesnapshots", "watch", "namespace"
    ): "watch.Watch().stream(list_namespaced_custom_object)",
    Permission(VELERO, "datauploads", "get", "namespace"): "granted to mover Roles",
    Permission(VELERO, "datadownloads", "get", "namespace"): "granted to mover Roles",
    # RBAC's escalation rule: the launcher may only grant what it holds, and each mover's Role
    # grants get/watch/patch/update on its own CR.
    Permission(VELERO, "datauploads", "patch", "namespace"): "granted to mover Roles",
    Permission(VELERO, "datadownloads", "patch", "namespace"): "granted to mover Roles",
}


def launcher_permissions() -> set[Permission]:
    """Every permission the launcher needs (the inventory above, expanded)."""
    needed = set(EXTRA_PERMISSIONS)
    for method, uses in LAUNCHER_API_CALLS.items():
        verb = VERB_OF_PREFIX[method.split("_", 1)[0]]
        needed |= {Permission(u.group, u.resource, verb, u.scope, u.names) for u in uses}
    return needed
