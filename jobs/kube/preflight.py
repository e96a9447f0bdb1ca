"""The cluster half of ``snapmover doctor``: the launcher's RBAC and the VolumeSnapshotClasses.

``rbac_checks`` asks the API server, with one SelfSubjectAccessReview per permission, whether the
identity running the doctor (the launcher's ServiceAccount in ``manifests/examples/doctor-job.yaml``,
or ``kubectl --as`` style kubeconfigs) holds every permission the launcher uses.
:data:`LAUNCHER_PERMISSIONS` mirrors ``tests/rbac_inventory.py`` (a unit test keeps the two equal).
``snapshot_class_checks`` lists StorageClasses and VolumeSnapshotClasses and fails for every CSI
provisioner with no VolumeSnapshotClass of its driver (backups of its PVCs could not snapshot).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final, NamedTuple

from kubernetes import client
from kubernetes.client.rest import ApiException

from jobs.doctor import CheckResult


class Permission(NamedTuple):
    group: str
    resource: str
    verb: str
    scope: str  # "namespace" (the launcher's) or "cluster"
    name: str = ""


_V, _S, _RBAC = "velero.io", "snapshot.storage.k8s.io", "rbac.authorization.k8s.io"
_NS_VERBS: Final[dict[tuple[str, str], tuple[str, ...]]] = {
    (_V, "datauploads"): ("get", "list", "watch", "update", "patch"),
    (_V, "datadownloads"): ("get", "list", "watch", "update", "patch"),
    (_V, "backupstoragelocations"): ("get",),
    (_S, "volumesnapshots"): ("list", "watch", "create"),
    ("batch", "jobs"): ("list", "watch", "create", "delete"),
    ("", "pods"): ("list", "watch"),
    ("", "persistentvolumeclaims"): ("list", "watch", "create", "delete"),
    ("", "serviceaccounts"): ("create",),
    (_RBAC, "roles"): ("create",),
    (_RBAC, "rolebindings"): ("create",),
    ("", "secrets"): ("get", "create"),
    ("", "events"): ("create", "list"),
    ("coordination.k8s.io", "leases"): ("create",),
}
_CLUSTER_VERBS: Final[dict[tuple[str, str], tuple[str, ...]]] = {
    (_S, "volumesnapshots"): ("get", "delete"),
    (_S, "volumesnapshotcontents"): ("get", "create", "patch", "delete"),
    ("", "nodes"): ("list",),
    ("", "persistentvolumeclaims"): ("get",),
    ("", "persistentvolumes"): ("get", "list", "patch"),
    ("storage.k8s.io", "storageclasses"): ("get",),
}
LAUNCHER_PERMISSIONS: Final = frozenset(
    {Permission(g, r, v, "namespace") for (g, r), verbs in _NS_VERBS.items() for v in verbs}
    | {Permission(g, r, v, "cluster") for (g, r), verbs in _CLUSTER_VERBS.items() for v in verbs}
    | {
        Permission("", "configmaps", "get", "namespace", "snapmover-config"),
        Permission("coordination.k8s.io", "leases", "get", "namespace", "snapmover-launcher"),
        Permission("coordination.k8s.io", "leases", "update", "namespace", "snapmover-launcher"),
    }
)
SNAP_GROUP: Final = "snapshot.storage.k8s.io"
IN_TREE_PREFIX: Final = "kubernetes.io/"


def _describe(p: Permission, namespace: str) -> str:
    where = f"in namespace {namespace}" if p.scope == "namespace" else "in all namespaces"
    resource = f"{p.resource}.{p.group}" if p.group else p.resource
    return f"{p.verb} {resource}{'/' + p.name if p.name else ''} {where}"


def rbac_checks(api: Any, namespace: str) -> Iterator[CheckResult]:
    """One SelfSubjectAccessReview per launcher permission; one line for all granted, one per missing."""
    authz = client.AuthorizationV1Api(api)
    missing = []
    for p in sorted(LAUNCHER_PERMISSIONS):
        attrs = client.V1ResourceAttributes(
            group=p.group,
            resource=p.resource,
            verb=p.verb,
            namespace=namespace if p.scope == "namespace" else None,
            name=p.name or None,
        )
        review = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=attrs))
        try:
            answer = authz.create_self_subject_access_review(review)
        except ApiException as e:
            yield CheckResult(
                "launcher RBAC", False, f"cannot ask the API server ({e.status} {e.reason})", "check the kubeconfig"
            )
            return
        if not answer.status.allowed:
            missing.append(p)
    for p in missing:
        yield CheckResult(
            "launcher RBAC",
            False,
            f"not allowed to {_describe(p, namespace)}",
            "apply manifests/base/rbac.yaml (kubectl apply -k manifests) and run this as the launcher's ServiceAccount",
        )
    if not missing:
        yield CheckResult(
            "launcher RBAC", True, f"all {len(LAUNCHER_PERMISSIONS)} permissions the launcher uses are granted"
        )


def snapshot_class_checks(api: Any) -> Iterator[CheckResult]:
    """For every CSI provisioner of a StorageClass: a VolumeSnapshotClass for its driver exists."""
    try:
        classes = client.StorageV1Api(api).list_storage_class().items
        snapshot_classes = client.CustomObjectsApi(api).list_cluster_custom_object(
            SNAP_GROUP, "v1", "volumesnapshotclasses"
        )["items"]
    except ApiException as e:
        if e.status == 404:
            yield CheckResult(
                "VolumeSnapshotClasses", False, "the snapshot.storage.k8s.io/v1 API is not installed",
                "install the external-snapshotter CRDs and controller",
            )  # fmt: skip
            return
        yield CheckResult(
            "VolumeSnapshotClasses", False, f"cannot list them ({e.status} {e.reason})", "check the kubeconfig's RBAC"
        )
        return
    drivers = {str(c.get("driver")) for c in snapshot_classes}
    provisioners = sorted({sc.provisioner for sc in classes if not sc.provisioner.startswith(IN_TREE_PREFIX)})
    if not provisioners:
        yield CheckResult("VolumeSnapshotClasses", True, "no CSI StorageClass in the cluster")
    for driver in provisioners:
        if driver in drivers:
            yield CheckResult("VolumeSnapshotClasses", True, f"driver {driver} has a VolumeSnapshotClass")
        else:
            yield CheckResult(
                "VolumeSnapshotClasses",
                False,
                f"no VolumeSnapshotClass for CSI driver {driver}: its PVCs cannot be backed up",
                f"create a VolumeSnapshotClass with driver: {driver} (and label it for Velero if Velero selects one)",
            )


def cluster_checks(kubeconfig: str | None, namespace: str) -> Iterator[CheckResult]:
    """Load the kubeconfig (or the in-cluster config) and run the RBAC and snapshot-class checks."""
    from kubernetes import config

    try:
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig)
        else:
            config.load_incluster_config()
    except (config.ConfigException, OSError) as e:
        yield CheckResult("cluster access", False, f"no usable kubeconfig ({e})", "pass --kubeconfig or run in a pod")
        return
    api = client.ApiClient()
    try:
        yield from rbac_checks(api, namespace)
        yield from snapshot_class_checks(api)
    finally:
        api.close()
