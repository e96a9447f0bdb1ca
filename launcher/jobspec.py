"""Pure builders of the objects the launcher creates for one CR (DESIGN §4): no API calls here.

``build_job`` returns the mover Job for a DataUpload/DataDownload; ``build_rbac`` its
ServiceAccount, Role (get/watch/patch/update on that one CR, by ``resourceNames``) and
RoleBinding; ``repository_url`` the mover's repository for a storage location. Every object is
owned by the CR, so Kubernetes garbage-collects it with the CR.
"""

from __future__ import annotations

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
    ENV_CACHE_DIR,
    ENV_CR_KIND,
    ENV_CR_NAME,
    ENV_CR_NAMESPACE,
    ENV_CR_UID,
    ENV_DATAMOVER_CONFIG,
    ENV_LOG_FORMAT,
    ENV_NODE_NAME,
    ENV_PARALLEL,
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


def build_rbac(cr: dict[str, Any], namespace: str, owner: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """ServiceAccount + Role (its own CR only) + RoleBinding for the mover Job, owned by ``owner``
    (the launcher passes the mover's PVC, so they go away with it) or else by the CR."""
    meta = metadata(cr, namespace)
    if owner is not None:
        meta["ownerReferences"] = [owner]
    plural = DATAUPLOAD_PLURAL if cr["kind"] == DATAUPLOAD_KIND else DATADOWNLOAD_PLURAL
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta, "automountServiceAccountToken": True},
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


def mover_security_context(upload: bool) -> dict[str, Any]:
    """The mover container's security context (DESIGN §4): UID 0 (Kubernetes grants added
    capabilities only to it) with every capability dropped but the role's few, no privilege
    escalation, a read-only root file system."""
    return {
        "runAsUser": 0,
        "runAsNonRoot": False,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"], "add": UPLOAD_CAPABILITIES if upload else DOWNLOAD_CAPABILITIES},
    }


def build_job(
    cr: dict[str, Any],
    config: LauncherConfig,
    *,
    claim: str,
    volume_mode: str,
    location: StorageLocation,
    source_namespace: str,
    source_pvc: str = "",
) -> dict[str, Any]:
    """The mover Job for one DataUpload/DataDownload."""
    upload = cr["kind"] == DATAUPLOAD_KIND
    spec = cr.get("spec") or {}
    labels = {**config.job_labels, **common_labels(cr)}
    block = volume_mode == VOLUME_MODE_BLOCK
    volume_path = BLOCK_DEVICE_PATH if block else FILESYSTEM_MOUNT_PATH
    meta_labels = cr["metadata"].get("labels") or {}
    tags = {
        k: v
        for k, v in (
            (TAG_BACKUP_NAME, meta_labels.get(TAG_BACKUP_NAME)),
            (TAG_OPERATION_ID, meta_labels.get(TAG_OPERATION_ID)),
        )
        if v
    }
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
        {"name": ENV_TAGS, "value": json.dumps(tags, sort_keys=True)},
        {"name": ENV_DATAMOVER_CONFIG, "value": json.dumps(spec.get("dataMoverConfig") or {}, sort_keys=True)},
        {"name": ENV_CACHE_DIR, "value": CACHE_DIR_PATH},
        {"name": ENV_LOG_FORMAT, "value": config.log_format},
        {"name": ENV_NODE_NAME, "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "HOME", "value": "/tmp"},
    ]
    if not upload:
        env.append({"name": ENV_SNAPSHOT_ID, "value": str(spec.get("snapshotID", ""))})
    if config.parallelism:
        env.append({"name": ENV_PARALLEL, "value": str(config.parallelism)})
    volumes: list[dict[str, Any]] = [
        {"name": "data", "persistentVolumeClaim": {"claimName": claim, "readOnly": upload}},
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
    devices: list[dict[str, Any]] = []
    if block:
        devices.append({"name": "data", "devicePath": BLOCK_DEVICE_PATH})
    else:
        mounts.append({"name": "data", "mountPath": FILESYSTEM_MOUNT_PATH, "readOnly": upload})
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
    container: dict[str, Any] = {
        "name": "mover",
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["snapmover", "job", ROLE_UPLOAD if upload else ROLE_DOWNLOAD],
        "env": env,
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": mover_security_context(upload),
    }
    if devices:
        container["volumeDevices"] = devices
    if config.job_resources:
        container["resources"] = config.job_resources
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": object_name(cr),
        "containers": [container],
        "volumes": volumes,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "terminationGracePeriodSeconds": 30,
    }
    if config.priority_class_name:
        pod_spec["priorityClassName"] = config.priority_class_name
    if config.node_selector:
        pod_spec["nodeSelector"] = config.node_selector
    if config.tolerations:
        pod_spec["tolerations"] = config.tolerations
    meta = metadata(cr, config.namespace)
    meta["labels"] = labels
    if config.job_annotations:
        meta["annotations"] = dict(config.job_annotations)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": BACKOFF_LIMIT,
            "activeDeadlineSeconds": config.job_deadline_seconds,
            "template": {"metadata": {"labels": labels, "annotations": dict(config.job_annotations)}, "spec": pod_spec},
        },
    }


def build_forget_job(
    cr: dict[str, Any], config: LauncherConfig, *, location: StorageLocation, source_namespace: str
) -> dict[str, Any]:
    """A Job forgetting the snapshot of a deleted, Completed DataUpload (no volume, no API access)."""
    job = build_job(
        cr, config, claim="unused", volume_mode="Filesystem", location=location, source_namespace=source_namespace
    )
    job["metadata"]["name"] = forget_job_name(cr)
    job["metadata"]["ownerReferences"] = []  # the CR is going away; the launcher deletes this Job
    job["spec"]["backoffLimit"] = FORGET_RETRIES
    pod = job["spec"]["template"]["spec"]
    pod.pop("serviceAccountName")
    pod["automountServiceAccountToken"] = False
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "data"]
    container = pod["containers"][0]
    container["command"] = ["snapmover", "job", "forget"]
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != "data"]
    container["securityContext"]["capabilities"]["add"] = []
    container["env"] = [e for e in container["env"] if e["name"] != ENV_SNAPSHOT_ID]
    container["env"].append({"name": ENV_SNAPSHOT_ID, "value": str((cr.get("status") or {}).get("snapshotID", ""))})
    return job


def forget_job_name(cr: dict[str, Any]) -> str:
    """Name of the Job forgetting a deleted DataUpload's snapshot."""
    return job_name(cr["kind"], "forget-" + cr["metadata"]["name"])


MAINTENANCE_LABEL = "snapmover.io/maintenance"


def maintenance_key(location: str, source_namespace: str) -> str:
    """A label-safe key naming one repository (storage location + source namespace)."""
    import hashlib

    return hashlib.sha256(f"{location}/{source_namespace}".encode()).hexdigest()[:16]


def build_maintenance_job(
    config: LauncherConfig, *, location: StorageLocation, source_namespace: str, suffix: str
) -> dict[str, Any]:
    """A Job pruning one repository (no volume, no API access), kept for its logs."""
    key = maintenance_key(location.name, source_namespace)
    fake_cr = {
        "kind": DATAUPLOAD_KIND,
        "metadata": {"name": f"maintain-{key}-{suffix}", "namespace": config.namespace, "uid": key},
        "spec": {},
    }
    job = build_forget_job(fake_cr, config, location=location, source_namespace=source_namespace)
    labels = {
        LABEL_APP: LABEL_APP_VALUE,
        MAINTENANCE_LABEL: key,
        "snapmover.io/source-namespace": label_value(source_namespace),
        "snapmover.io/storage-location": label_value(location.name),
    }
    job["metadata"]["name"] = f"snapmover-maintain-{key}-{suffix}"
    job["metadata"]["labels"] = labels
    job["spec"]["backoffLimit"] = 0
    template = job["spec"]["template"]
    template["metadata"]["labels"] = labels
    container = template["spec"]["containers"][0]
    container["command"] = ["snapmover", "job", "maintain"]
    container["env"] = [e for e in container["env"] if e["name"] != ENV_SNAPSHOT_ID]
    return job
