"""Launcher configuration: one ConfigMap, validated at start (DESIGN §8).

Every key is a string in the ConfigMap's ``data``; JSON-valued keys hold JSON text. Unknown keys
and bad values stop the launcher at start with a message naming the key, so a typo never turns
into silent default behaviour. See README "Launcher configuration" for the reference.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any

from jobs.contract import DEFAULT_DATAMOVER_NAME


class ConfigurationError(Exception):
    """The launcher ConfigMap is invalid; the message names the key."""


DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(value: str, what: str) -> float:
    """Seconds from a Go-style duration (``30m``, ``10m0s``, ``1h30m``, ``45s``) or plain seconds."""
    text = str(value).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    m = DURATION.match(text)
    if not text or m is None or not any(m.groups()):
        raise ConfigurationError(f"{what}: {value!r} is not a duration like 30m, 10m0s or 45s")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in m.groups())
    return hours * 3600 + minutes * 60 + seconds


@dataclass(frozen=True)
class StorageLocation:
    """Where one repository location lives (a BackupStorageLocation or a ConfigMap entry)."""

    name: str
    provider: str  # "aws" (any S3-compatible store) or "filesystem"
    bucket: str = ""
    prefix: str = ""
    region: str = ""
    s3_url: str = ""
    path_style: bool = False
    insecure: bool = False
    credential_secret: str = ""
    credential_key: str = "cloud"
    profile: str = ""
    pvc: str = ""  # filesystem: an RWX PVC in the launcher namespace mounted by every mover Job
    ca_cert: str = ""  # PEM of the CA signing the S3 endpoint (decoded from Velero's base64 caCert)


@dataclass(frozen=True)
class LauncherConfig:
    """Validated launcher settings."""

    namespace: str
    datamover_name: str = DEFAULT_DATAMOVER_NAME
    image: str = "snapmover:latest"
    image_pull_policy: str = "IfNotPresent"
    max_concurrent_jobs: int = 4
    max_jobs_per_node: int = 2
    prepare_queue_length: int = 10
    prepare_timeout_seconds: float = 1800.0
    pod_start_timeout_seconds: float = 300.0
    job_deadline_seconds: int = 86400
    job_retention_seconds: int = 300
    parallelism: int = 0  # 0 = the mover's default (CPU count)
    priority_class_name: str = ""
    job_resources: dict[str, Any] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    job_labels: dict[str, str] = field(default_factory=dict)
    job_annotations: dict[str, str] = field(default_factory=dict)
    backup_pvc_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    restore_ignore_delay_binding: bool = False
    log_format: str = "text"
    storage_locations: dict[str, StorageLocation] = field(default_factory=dict)
    resync_seconds: float = 10.0
    maintenance_interval_seconds: float = 86400.0  # 0 disables scheduled maintenance
    maintenance_jobs_kept: int = 3
    mover_retries: int = 2  # new Jobs for a mover that died without a result (DESIGN §3)
    http_proxy: str = ""
    https_proxy: str = ""
    no_proxy: str = ""
    mover_service_account_annotations: dict[str, str] = field(default_factory=dict)
    image_pull_secrets: list[str] = field(default_factory=list)


_INT_KEYS = {
    "maxConcurrentJobs": "max_concurrent_jobs",
    "maxJobsPerNode": "max_jobs_per_node",
    "prepareQueueLength": "prepare_queue_length",
    "jobDeadlineSeconds": "job_deadline_seconds",
    "jobRetentionSeconds": "job_retention_seconds",
    "parallelism": "parallelism",
    "maintenanceJobsKept": "maintenance_jobs_kept",
    "moverRetries": "mover_retries",
}
_DURATION_KEYS = {
    "prepareTimeout": "prepare_timeout_seconds",
    "podStartTimeout": "pod_start_timeout_seconds",
    "resyncPeriod": "resync_seconds",
    "maintenanceInterval": "maintenance_interval_seconds",
}
_STRING_KEYS = {
    "datamoverName": "datamover_name",
    "image": "image",
    "imagePullPolicy": "image_pull_policy",
    "priorityClassName": "priority_class_name",
    "logFormat": "log_format",
    "httpProxy": "http_proxy",
    "httpsProxy": "https_proxy",
    "noProxy": "no_proxy",
}
_JSON_KEYS = {
    "jobResources": ("job_resources", dict),
    "nodeSelector": ("node_selector", dict),
    "tolerations": ("tolerations", list),
    "jobLabels": ("job_labels", dict),
    "jobAnnotations": ("job_annotations", dict),
    "backupPVCOverrides": ("backup_pvc_overrides", dict),
    "moverServiceAccountAnnotations": ("mover_service_account_annotations", dict),
    "imagePullSecrets": ("image_pull_secrets", list),
}
KNOWN_KEYS = (
    set(_INT_KEYS)
    | set(_DURATION_KEYS)
    | set(_STRING_KEYS)
    | set(_JSON_KEYS)
    | {"restoreIgnoreDelayBinding", "storageLocations"}
)


def _bool(value: str, key: str) -> bool:
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise ConfigurationError(f"{key}: must be true or false, not {value!r}")
    return text == "true"


def decode_ca_cert(value: Any, what: str) -> str:
    """Velero's ``caCert`` (base64 of a PEM bundle) as PEM text; '' when absent."""
    if not value:
        return ""
    try:
        pem = base64.b64decode(str(value), validate=True).decode("ascii")
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigurationError(f"{what}: not base64 of a PEM certificate bundle") from e
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise ConfigurationError(f"{what}: the decoded value holds no PEM certificate")
    return pem


def _string_lists_and_maps(values: dict[str, Any]) -> None:
    pull = values.get("image_pull_secrets", [])
    if not all(isinstance(n, str) and n for n in pull):
        raise ConfigurationError('imagePullSecrets: must be a JSON list of Secret names, e.g. ["regcred"]')
    notes = values.get("mover_service_account_annotations", {})
    if not all(isinstance(v, str) for v in notes.values()):
        raise ConfigurationError("moverServiceAccountAnnotations: values must be strings")


def parse_location(name: str, raw: Any) -> StorageLocation:
    """One ``storageLocations`` entry."""
    if not isinstance(raw, dict):
        raise ConfigurationError(f"storageLocations.{name}: must be an object")
    provider = str(raw.get("provider", "aws"))
    if provider not in ("aws", "filesystem"):
        raise ConfigurationError(f"storageLocations.{name}.provider: use aws or filesystem, not {provider!r}")
    loc = StorageLocation(
        name=name,
        provider=provider,
        bucket=str(raw.get("bucket", "")),
        prefix=str(raw.get("prefix", "")),
        region=str(raw.get("region", "")),
        s3_url=str(raw.get("s3Url", "")),
        path_style=_bool(str(raw.get("s3ForcePathStyle", "false")), f"storageLocations.{name}.s3ForcePathStyle"),
        insecure=_bool(
            str(raw.get("insecureSkipTLSVerify", "false")), f"storageLocations.{name}.insecureSkipTLSVerify"
        ),
        credential_secret=str((raw.get("credential") or {}).get("name", "")),
        credential_key=str((raw.get("credential") or {}).get("key", "cloud")),
        profile=str(raw.get("profile", "")),
        pvc=str(raw.get("pvc", "")),
        ca_cert=decode_ca_cert(raw.get("caCert"), f"storageLocations.{name}.caCert"),
    )
    if provider == "aws" and not loc.bucket:
        raise ConfigurationError(f"storageLocations.{name}.bucket is required for provider aws")
    if provider == "filesystem" and not loc.pvc:
        raise ConfigurationError(f"storageLocations.{name}.pvc is required for provider filesystem")
    return loc


def _number(key: str, text: str) -> int:
    try:
        number = int(text)
    except ValueError as e:
        raise ConfigurationError(f"{key}: {text!r} is not a whole number") from e
    if number < 0 or (number == 0 and key not in ("parallelism", "jobRetentionSeconds", "moverRetries")):
        raise ConfigurationError(f"{key}: must be positive, not {number}")
    return number


def _json(key: str, text: str, kind: type) -> Any:
    try:
        parsed = json.loads(text)
    except ValueError as e:
        raise ConfigurationError(f"{key}: not valid JSON ({e})") from e
    if not isinstance(parsed, kind):
        what = "a JSON object of name -> location" if key == "storageLocations" else f"a JSON {kind.__name__}"
        raise ConfigurationError(f"{key}: must be {what}")
    return parsed


def load_config(data: dict[str, str], namespace: str) -> LauncherConfig:
    """Validate a ConfigMap's data into a LauncherConfig; ConfigurationError names the bad key."""
    unknown = sorted(set(data) - KNOWN_KEYS)
    if unknown:
        raise ConfigurationError(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(KNOWN_KEYS))})")
    values: dict[str, Any] = {"namespace": namespace}
    values.update({attr: _number(key, data[key]) for key, attr in _INT_KEYS.items() if key in data})
    values.update({attr: parse_duration(data[key], key) for key, attr in _DURATION_KEYS.items() if key in data})
    values.update({attr: data[key].strip() for key, attr in _STRING_KEYS.items() if key in data})
    if values.get("log_format", "text") not in ("text", "json"):
        raise ConfigurationError("logFormat: use text or json")
    values.update({attr: _json(key, data[key], kind) for key, (attr, kind) in _JSON_KEYS.items() if key in data})
    _string_lists_and_maps(values)
    if "restoreIgnoreDelayBinding" in data:
        values["restore_ignore_delay_binding"] = _bool(data["restoreIgnoreDelayBinding"], "restoreIgnoreDelayBinding")
    if "storageLocations" in data:
        raw = _json("storageLocations", data["storageLocations"], dict)
        values["storage_locations"] = {name: parse_location(name, loc) for name, loc in raw.items()}
    return LauncherConfig(**values)
