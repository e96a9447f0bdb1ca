"""Pure builders of the objects the launcher creates for one CR (DESIGN §4): no API calls here.

``build_job`` returns the mover Job for a DataUpload/DataDownload; ``build_rbac`` its
ServiceAccount, Role (get/watch/patch/update on that one CR, by ``resourceNames``) and
RoleBinding; ``repository_url`` the mover's repository for a storage location. Every object is
owned by the CR, so Kubernetes garbage-collects it with the CR.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from jobs.contract import (
    API_GROUP,
    API_VERSION,
    BLOCK_DEVICE_PATH,
    CACHE_DIR_PATH,
    CLOUD_CREDENTIALS_MOUNT_PATH,
    DATADOWNLOAD_PLURAL,
    DATAUPLOAD_KIND,
    DATAUPLOAD_PLURAL,
    ENV_AWS_CREDENTIALS_FILE,
    ENV_AWS_PROFILE,
    ENV_CA_CERT,
    ENV_CACHE_DIR,
    ENV_CR_KIND,
    ENV_CR_NAME,
    ENV_CR_NAMESPACE,
    ENV_CR_UID,
    ENV_DATAMOVER_CONFIG,
    ENV_LOG_FORMAT,
    ENV_NODE_NAME,
    ENV_PARALLEL,
    ENV_PARENT_SNAPSHOT,
    ENV_PASSWORD_FILE,
    ENV_REPOSITORY,
    ENV_SNAPSHOT_ID,
    ENV_SOURCE_NAMESPACE,
    ENV_SOURCE_PVC,
    ENV_TAGS,
    ENV_VOLUME_MODE,
    ENV_VOLUME_PATH,
    FILESYSTEM_MOUNT_PATH,
    LABEL_APP,
    LABEL_APP_VALUE,
    LABEL_OWNER_KIND,
    LABEL_OWNER_NAME,
    LABEL_OWNER_UID,
    LABEL_ROLE,
    PASSWORD_FILE_PATH,
    PROXY_ENV_NAMES,
    ROLE_DOWNLOAD,
    ROLE_UPLOAD,
    SECRETS_MOUNT_PATH,
    TAG_BACKUP_NAME,
    TAG_OPERATION_ID,
    TERMINATION_MESSAGE_PATH,
    VOLUME_MODE_BLOCK,
    job_name,
)
from launcher.config import LauncherConfig, StorageLocation

PASSWORD_SECRET = "snapmover-repo-credentials"  # noqa: S105 - a Secret's name
PASSWORD_KEY = "repository-password"  # noqa: S105 - a key name
REPOSITORY_MOUNT_PATH = "/repository"
BACKOFF_LIMIT = 0
FORGET_RETRIES = 3  # bounded: then the CR is released with a Warning Event
UPLOAD_CAPABILITIES = ["DAC_READ_SEARCH"]
DOWNLOAD_CAPABILITIES = ["CHOWN", "FOWNER", "DAC_OVERRIDE", "SETFCAP", "MKNOD"]


def label_value(text: str) -> str:
    """A string shortened to a valid label value (≤ 63 chars, alphanumeric ends)."""
    return text[:63].strip("-_.")


def owner_reference(cr: dict[str, Any]) -> dict[str, Any]:
    """Owner reference making Kubernetes delete the object with the CR."""
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": cr["kind"],
        "name": cr["metadata"]["name"],
        "uid": cr["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": False,
    }


def object_name(cr: dict[str, Any]) -> str:
    """The name shared by every object the launcher creates for this CR (Job, PVC, SA, …)."""
    return job_name(cr["kind"], cr["metadata"]["name"])


def common_labels(cr: dict[str, Any]) -> dict[str, str]:
    """Labels on every object created for the CR."""
    role = ROLE_UPLOAD if cr["kind"] == DATAUPLOAD_KIND else ROLE_DOWNLOAD
    return {
        LABEL_APP: LABEL_APP_VALUE,
        LABEL_ROLE: role,
        LABEL_OWNER_KIND: cr["kind"],
        LABEL_OWNER_NAME: label_value(cr["metadata"]["name"]),
        LABEL_OWNER_UID: cr["metadata"]["uid"],
    }


def metadata(cr: dict[str, Any], namespace: str) -> dict[str, Any]:
    """Name, namespace, labels and owner reference for a created object."""
    return {
        "name": object_name(cr),
        "namespace": namespace,
        "labels": common_labels(cr),
        "ownerReferences": [owner_reference(cr)],
    }


def repository_url(location: StorageLocation, source_namespace: str) -> str:
    """The mover's repository URL: ``<prefix>/snapmover/<source namespace>`` in the location."""
    path = "/".join(p for p in (location.prefix.strip("/"), "snapmover", source_namespace) if p)
    if location.provider == "filesystem":
        return f"file://{REPOSITORY_MOUNT_PATH}/{path}"
    query = []
    if location.s3_url:
        query.append(f"endpoint={location.s3_url}")
    if location.region:
        query.append(f"region={location.region}")
    if location.path_style:
        query.append("path_style=true")
    if location.insecure:
        query.append("insecure=true")
    return f"s3://{location.bucket}/{path}" + ("?" + "&".join(query) if query else "")


def network_env(config: LauncherConfig, location: StorageLocation) -> list[dict[str, Any]]:
    """The mover's proxy variables (upper and lower case: tools differ in which they read) and
    the object store's CA (PEM, which the mover turns into AWS_CA_BUNDLE)."""
    env: list[dict[str, Any]] = []
    for name, value in zip(PROXY_ENV_NAMES, (config.http_proxy, config.https_proxy, config.no_proxy), strict=True):
        if value:
            env += [{"name": name, "value": value}, {"name": name.lower(), "value": value}]
    if location.provider == "aws" and location.ca_cert:
        env.append({"name": ENV_CA_CERT, "value": location.ca_cert})
    return env


def build_rbac(
    cr: dict[str, Any],
    namespace: str,
    owner: dict[str, str] | None = None,
    *,
    annotations: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """ServiceAccount + Role (its own CR only) + RoleBinding for the mover Job, owned by ``owner``
    (the launcher passes the mover's PVC, so they go away with it) or else by the CR.
    ``annotations`` go on the ServiceAccount only (IRSA, GKE/Azure workload identity)."""
    meta = metadata(cr, namespace)
    if owner is not None:
        meta["ownerReferences"] = [owner]
    sa_meta = {**meta, "annotations": dict(annotations)} if annotations else meta
    plural = DATAUPLOAD_PLURAL if cr["kind"] == DATAUPLOAD_KIND else DATADOWNLOAD_PLURAL
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": sa_meta, "automountServiceAccountToken": True},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": [
                {
                    "apiGroups": [API_GROUP],
                    "resources": [plural],
                    "resourceNames": [cr["metadata"]["name"]],
                    "verbs": ["get", "watch", "patch", "update"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": meta["name"]},
            "subjects": [{"kind": "ServiceAccount", "name": meta["name"], "namespace": namespace}],
        },
    ]


def storage_parts(location: StorageLocation) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts, env) that give a mover its storage location: credentials or repository PVC."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    env: list[dict[str, Any]] = []
    if location.provider == "aws" and location.credential_secret:
        volumes.append(
            {"name": "cloud-credentials", "secret": {"secretName": location.credential_secret, "defaultMode": 0o400}}
        )
        mounts.append({"name": "cloud-credentials", "mountPath": CLOUD_CREDENTIALS_MOUNT_PATH, "readOnly": True})
        env.append(
            {"name": ENV_AWS_CREDENTIALS_FILE, "value": f"{CLOUD_CREDENTIALS_MOUNT_PATH}/{location.credential_key}"}
        )
        if location.profile:
            env.append({"name": ENV_AWS_PROFILE, "value": location.profile})
    if location.provider == "filesystem":
        volumes.append({"name": "repository", "persistentVolumeClaim": {"claimName": location.pvc}})
        mounts.append({"name": "repository", "mountPath": REPOSITORY_MOUNT_PATH})
    return volumes, mounts, env


def base_volumes() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts) every mover has: the password Secret, ``/tmp`` and the cache."""
    volumes: list[dict[str, Any]] = [
        {
            "name": "repository-password",
            "secret": {
                "secretName": PASSWORD_SECRET,
                "defaultMode": 0o400,
                "items": [{"key": PASSWORD_KEY, "path": "repository-password"}],
            },
        },
        {"name": "tmp", "emptyDir": {}},
        {"name": "cache", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "repository-password", "mountPath": SECRETS_MOUNT_PATH, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "cache", "mountPath": CACHE_DIR_PATH},
    ]
    return volumes, mounts


def security_context(capabilities: list[str]) -> dict[str, Any]:
    """A mover container's security context (DESIGN §4): UID 0 (Kubernetes grants added
    capabilities only to it) with every capability dropped but ``capabilities``, no privilege
    escalation, a read-only root file system."""
    return {
        "runAsUser": 0,
        "runAsNonRoot": False,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"], "add": list(capabilities)},
    }


def mover_security_context(upload: bool) -> dict[str, Any]:
    """The security context of a backup (``upload``) or restore mover."""
    return security_context(UPLOAD_CAPABILITIES if upload else DOWNLOAD_CAPABILITIES)


def mover_container(
    config: LauncherConfig,
    command: str,
    env: list[dict[str, Any]],
    mounts: list[dict[str, Any]],
    capabilities: list[str],
) -> dict[str, Any]:
    """The hardened mover container running ``snapmover job <command>``."""
    container: dict[str, Any] = {
        "name": "mover",
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["snapmover", "job", command],
        "env": env,
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": security_context(capabilities),
    }
    if config.job_resources:
        container["resources"] = config.job_resources
    return container


def job_body(
    config: LauncherConfig, meta: dict[str, Any], pod_spec: dict[str, Any], backoff_limit: int
) -> dict[str, Any]:
    """The Job around ``pod_spec`` with the configured scheduling, labels and annotations."""
    pod_spec = {
        **pod_spec,
        "restartPolicy": "Never",
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "terminationGracePeriodSeconds": 30,
    }
    if config.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in config.image_pull_secrets]
    if config.priority_class_name:
        pod_spec["priorityClassName"] = config.priority_class_name
    if config.node_selector:
        pod_spec["nodeSelector"] = config.node_selector
    if config.tolerations:
        pod_spec["tolerations"] = config.tolerations
    if config.job_annotations:
        meta = {**meta, "annotations": dict(config.job_annotations)}
    template_meta = {"labels": meta["labels"], "annotations": dict(config.job_annotations)}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": backoff_limit,
            "activeDeadlineSeconds": config.job_deadline_seconds,
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }


def cr_tags(cr: dict[str, Any]) -> dict[str, str]:
    """The Velero backup name / operation id labels of the CR, as snapshot tags."""
    meta_labels = cr["metadata"].get("labels") or {}
    return {k: meta_labels[k] for k in (TAG_BACKUP_NAME, TAG_OPERATION_ID) if meta_labels.get(k)}


def build_job(
    cr: dict[str, Any],
    config: LauncherConfig,
    *,
    claim: str,
    volume_mode: str,
    location: StorageLocation,
    source_namespace: str,
    source_pvc: str = "",
    placement: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The mover Job for one DataUpload/DataDownload; ``placement`` (a required NodeSelector) pins
    it where its volume can be mounted (``launcher.objects.claim_placement``)."""
    upload = cr["kind"] == DATAUPLOAD_KIND
    spec = cr.get("spec") or {}
    block = volume_mode == VOLUME_MODE_BLOCK
    volume_path = BLOCK_DEVICE_PATH if block else FILESYSTEM_MOUNT_PATH
    env: list[dict[str, Any]] = [
        {"name": ENV_CR_KIND, "value": cr["kind"]},
        {"name": ENV_CR_NAMESPACE, "value": cr["metadata"]["namespace"]},
        {"name": ENV_CR_NAME, "value": cr["metadata"]["name"]},
        {"name": ENV_CR_UID, "value": cr["metadata"]["uid"]},
        {"name": ENV_VOLUME_PATH, "value": volume_path},
        {"name": ENV_VOLUME_MODE, "value": volume_mode},
        {"name": ENV_REPOSITORY, "value": repository_url(location, source_namespace)},
        {"name": ENV_PASSWORD_FILE, "value": PASSWORD_FILE_PATH},
        {"name": ENV_SOURCE_NAMESPACE, "value": source_namespace},
        {"name": ENV_SOURCE_PVC, "value": source_pvc},
        {"name": ENV_TAGS, "value": json.dumps(cr_tags(cr), sort_keys=True)},
        {"name": ENV_DATAMOVER_CONFIG, "value": json.dumps(spec.get("dataMoverConfig") or {}, sort_keys=True)},
        {"name": ENV_CACHE_DIR, "value": CACHE_DIR_PATH},
        {"name": ENV_LOG_FORMAT, "value": config.log_format},
        {"name": ENV_NODE_NAME, "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "HOME", "value": "/tmp"},
    ]
    if not upload:
        env.append({"name": ENV_SNAPSHOT_ID, "value": str(spec.get("snapshotID", ""))})
    elif spec.get("parentSnapshot"):
        env.append({"name": ENV_PARENT_SNAPSHOT, "value": str(spec["parentSnapshot"])})
    if config.parallelism:
        env.append({"name": ENV_PARALLEL, "value": str(config.parallelism)})
    volumes, mounts = base_volumes()
    volumes.insert(0, {"name": "data", "persistentVolumeClaim": {"claimName": claim, "readOnly": upload}})
    if not block:
        mounts.append({"name": "data", "mountPath": FILESYSTEM_MOUNT_PATH, "readOnly": upload})
    storage_volumes, storage_mounts, storage_env = storage_parts(location)
    capabilities = UPLOAD_CAPABILITIES if upload else DOWNLOAD_CAPABILITIES
    container = mover_container(
        config,
        ROLE_UPLOAD if upload else ROLE_DOWNLOAD,
        env + storage_env + network_env(config, location),
        mounts + storage_mounts,
        capabilities,
    )
    if block:
        container["volumeDevices"] = [{"name": "data", "devicePath": BLOCK_DEVICE_PATH}]
    pod_spec: dict[str, Any] = {
        "serviceAccountName": object_name(cr),
        "containers": [container],
        "volumes": volumes + storage_volumes,
    }
    if placement:
        pod_spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": placement}}
    meta = metadata(cr, config.namespace)
    meta["labels"] = {**config.job_labels, **common_labels(cr)}
    return job_body(config, meta, pod_spec, BACKOFF_LIMIT)


def build_repository_job(
    config: LauncherConfig,
    *,
    meta: dict[str, Any],
    location: StorageLocation,
    source_namespace: str,
    command: str,
    backoff_limit: int,
    snapshot_id: str | None = None,
) -> dict[str, Any]:
    """A Job working on one repository only (forget, maintain): no volume, no API access."""
    env: list[dict[str, Any]] = [
        {"name": ENV_REPOSITORY, "value": repository_url(location, source_namespace)},
        {"name": ENV_PASSWORD_FILE, "value": PASSWORD_FILE_PATH},
        {"name": ENV_SOURCE_NAMESPACE, "value": source_namespace},
        {"name": ENV_CACHE_DIR, "value": CACHE_DIR_PATH},
        {"name": ENV_LOG_FORMAT, "value": config.log_format},
        {"name": "HOME", "value": "/tmp"},
    ]
    if snapshot_id is not None:
        env.append({"name": ENV_SNAPSHOT_ID, "value": snapshot_id})
    volumes, mounts = base_volumes()
    storage_volumes, storage_mounts, storage_env = storage_parts(location)
    container = mover_container(
        config, command, env + storage_env + network_env(config, location), mounts + storage_mounts, []
    )
    pod_spec = {"automountServiceAccountToken": False, "containers": [container], "volumes": volumes + storage_volumes}
    return job_body(config, meta, pod_spec, backoff_limit)


def build_forget_job(
    cr: dict[str, Any], config: LauncherConfig, *, location: StorageLocation, source_namespace: str
) -> dict[str, Any]:
    """A Job forgetting the snapshot of a deleted, Completed DataUpload (no volume, no API access)."""
    meta = {
        "name": forget_job_name(cr),
        "namespace": config.namespace,
        "labels": {**config.job_labels, **common_labels(cr)},
        "ownerReferences": [],  # the CR is going away; the launcher deletes this Job
    }
    return build_repository_job(
        config,
        meta=meta,
        location=location,
        source_namespace=source_namespace,
        command="forget",
        backoff_limit=FORGET_RETRIES,
        snapshot_id=str((cr.get("status") or {}).get("snapshotID", "")),
    )


def forget_job_name(cr: dict[str, Any]) -> str:
    """Name of the Job forgetting a deleted DataUpload's snapshot."""
    return job_name(cr["kind"], "forget-" + cr["metadata"]["name"])


MAINTENANCE_LABEL = "snapmover.io/maintenance"


def maintenance_key(location: str, source_namespace: str) -> str:
    """A label-safe key naming one repository (storage location + source namespace)."""
    return hashlib.sha256(f"{location}/{source_namespace}".encode()).hexdigest()[:16]


def build_maintenance_job(
    config: LauncherConfig, *, location: StorageLocation, source_namespace: str, suffix: str
) -> dict[str, Any]:
    """A Job pruning one repository (no volume, no API access), kept for its logs."""
    key = maintenance_key(location.name, source_namespace)
    labels = {
        LABEL_APP: LABEL_APP_VALUE,
        MAINTENANCE_LABEL: key,
        "snapmover.io/source-namespace": label_value(source_namespace),
        "snapmover.io/storage-location": label_value(location.name),
    }
    meta = {"name": f"snapmover-maintain-{key}-{suffix}", "namespace": config.namespace, "labels": labels}
    return build_repository_job(
        config, meta=meta, location=location, source_namespace=source_namespace, command="maintain", backoff_limit=0
    )
