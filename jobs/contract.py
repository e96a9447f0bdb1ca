"""The Job contract: the one module the launcher and the mover both import.

The launcher builds mover Jobs from these names; the mover (``snapmover job upload|download``)
reads its whole configuration from the environment variables and mounted files named here and
reports back through the exit codes and the termination message defined here. Nothing in this
module does I/O or imports anything outside the standard library.
"""

from __future__ import annotations

import hashlib
import json
import re
from enum import IntEnum
from typing import Final, TypedDict

# --- Custom resources -------------------------------------------------------------------------

API_GROUP: Final = "velero.io"
API_VERSION: Final = "v2alpha1"
DATAUPLOAD_KIND: Final = "DataUpload"
DATADOWNLOAD_KIND: Final = "DataDownload"
DATAUPLOAD_PLURAL: Final = "datauploads"
DATADOWNLOAD_PLURAL: Final = "datadownloads"
DEFAULT_DATAMOVER_NAME: Final = "snapmover"
FINALIZER: Final = "snapmover.io/cleanup"


class Phase:
    """CR phases (Velero's enum). An empty phase means NEW."""

    NEW: Final = "New"
    ACCEPTED: Final = "Accepted"
    PREPARED: Final = "Prepared"
    IN_PROGRESS: Final = "InProgress"
    CANCELING: Final = "Canceling"
    CANCELED: Final = "Canceled"
    COMPLETED: Final = "Completed"
    FAILED: Final = "Failed"


TERMINAL_PHASES: Final = frozenset({Phase.COMPLETED, Phase.FAILED, Phase.CANCELED})

# --- Exit codes -------------------------------------------------------------------------------


class ExitCode(IntEnum):
    """Process exit codes of every ``snapmover`` command (the mover Job and the CLI)."""

    OK = 0
    FAILED = 1  # anything not covered below
    USAGE = 2  # bad input: malformed URL, missing password, invalid option or CR field
    INTEGRITY = 3  # wrong password, corrupted or tampered repository object
    STORAGE_UNAVAILABLE = 4  # storage endpoint unreachable / persistent storage errors
    CANCELED = 5  # spec.cancel was set or SIGTERM received
    NOT_FOUND = 6  # unknown snapshot id, repository not initialised, missing object
    VOLUME_IO = 7  # the source/target volume is missing or cannot be read/written
    LOCKED = 8  # the repository is exclusively locked by another process
    KUBERNETES_UNAVAILABLE = 9  # the mover could not reach the Kubernetes API server (its CR's status)


# --- Labels and names -------------------------------------------------------------------------

LABEL_APP: Final = "app.kubernetes.io/name"
LABEL_APP_VALUE: Final = "snapmover"
LABEL_ROLE: Final = "snapmover.io/role"
LABEL_OWNER_KIND: Final = "snapmover.io/owner-kind"
LABEL_OWNER_NAME: Final = "snapmover.io/owner-name"
LABEL_OWNER_UID: Final = "snapmover.io/owner-uid"
ROLE_UPLOAD: Final = "upload"
ROLE_DOWNLOAD: Final = "download"

# Snapshot tags written by the mover; `--parent auto` matches on the source tags.
TAG_SOURCE_NAMESPACE: Final = "source-namespace"
TAG_SOURCE_PVC: Final = "source-pvc"
TAG_DATAUPLOAD: Final = "dataupload"
TAG_OPERATION_ID: Final = "velero.io/async-operation-id"
TAG_BACKUP_NAME: Final = "velero.io/backup-name"
SOURCE_TAGS: Final = (TAG_SOURCE_NAMESPACE, TAG_SOURCE_PVC)

MAX_NAME_LENGTH: Final = 63  # Job names become pod label values: keep them DNS labels


def newer_or_equal(new_rv: str, old_rv: str) -> bool:
    """Whether resourceVersion ``new_rv`` is not older than ``old_rv`` (etcd revisions; forms that
    are not plain numbers count as newer). Launcher caches and the mover keep the newest CR seen."""
    if new_rv.isdigit() and old_rv.isdigit():
        return int(new_rv) >= int(old_rv)
    return True


def job_name(cr_kind: str, cr_name: str) -> str:
    """Deterministic Job name for a CR: ``snapmover-du-<name>`` / ``snapmover-dd-<name>``.

    Long or unusual names are shortened and suffixed with a hash of the full name so two CRs
    never share a Job, and the result is always a valid DNS label of at most 63 characters.
    """
    short = "du" if cr_kind == DATAUPLOAD_KIND else "dd"
    prefix = f"snapmover-{short}-"
    cleaned = re.sub(r"[^a-z0-9-]", "-", cr_name.lower()).strip("-")
    candidate = prefix + cleaned
    if cleaned == cr_name and len(candidate) <= MAX_NAME_LENGTH:
        return candidate
    digest = hashlib.sha256(cr_name.encode()).hexdigest()[:8]
    room = MAX_NAME_LENGTH - len(prefix) - len(digest) - 1
    return f"{prefix}{cleaned[:room].strip('-')}-{digest}".replace("--", "-")


# --- Volume paths inside the Job --------------------------------------------------------------

VOLUME_MODE_FILESYSTEM: Final = "Filesystem"
VOLUME_MODE_BLOCK: Final = "Block"
FILESYSTEM_MOUNT_PATH: Final = "/data"
BLOCK_DEVICE_PATH: Final = "/dev/snapmover-data"
SECRETS_MOUNT_PATH: Final = "/etc/snapmover/secrets"
PASSWORD_FILE_PATH: Final = SECRETS_MOUNT_PATH + "/repository-password"
CLOUD_CREDENTIALS_MOUNT_PATH: Final = "/etc/snapmover/cloud"
CACHE_DIR_PATH: Final = "/var/cache/snapmover"
TERMINATION_MESSAGE_PATH: Final = "/dev/termination-log"

# --- Environment of the mover Job -------------------------------------------------------------

ENV_CR_KIND: Final = "SNAPMOVER_CR_KIND"  # DataUpload | DataDownload
ENV_CR_NAMESPACE: Final = "SNAPMOVER_CR_NAMESPACE"
ENV_CR_NAME: Final = "SNAPMOVER_CR_NAME"
ENV_CR_UID: Final = "SNAPMOVER_CR_UID"
ENV_VOLUME_PATH: Final = "SNAPMOVER_VOLUME_PATH"  # /data or /dev/snapmover-data
ENV_VOLUME_MODE: Final = "SNAPMOVER_VOLUME_MODE"  # Filesystem | Block
ENV_REPOSITORY: Final = "SNAPMOVER_REPOSITORY"  # file:///... or s3://bucket/prefix?endpoint=...
ENV_PASSWORD_FILE: Final = "SNAPMOVER_PASSWORD_FILE"  # noqa: S105 - a path, not a secret
ENV_PASSWORD: Final = "SNAPMOVER_PASSWORD"  # noqa: S105 - CLI convenience; never set by the launcher
ENV_SOURCE_NAMESPACE: Final = "SNAPMOVER_SOURCE_NAMESPACE"
ENV_SOURCE_PVC: Final = "SNAPMOVER_SOURCE_PVC"
ENV_SNAPSHOT_ID: Final = "SNAPMOVER_SNAPSHOT_ID"  # restore only
ENV_PARENT_SNAPSHOT: Final = "SNAPMOVER_PARENT_SNAPSHOT"  # backup only: DataUpload spec.parentSnapshot
ENV_TAGS: Final = "SNAPMOVER_TAGS"  # JSON object of extra snapshot tags
ENV_PARALLEL: Final = "SNAPMOVER_PARALLEL"
ENV_DATAMOVER_CONFIG: Final = "SNAPMOVER_DATAMOVER_CONFIG"  # JSON of spec.dataMoverConfig
ENV_PACK_SIZE_MIB: Final = "SNAPMOVER_PACK_SIZE_MIB"
ENV_CACHE_DIR: Final = "SNAPMOVER_CACHE_DIR"
ENV_LOG_FORMAT: Final = "SNAPMOVER_LOG_FORMAT"  # text | json
ENV_CA_CERT: Final = (
    "SNAPMOVER_CA_CERT"  # PEM of the object store's CA (not a secret); the mover makes it AWS_CA_BUNDLE
)
PROXY_ENV_NAMES: Final = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")  # passed to movers as given (and lowercase)
ENV_NODE_NAME: Final = "SNAPMOVER_NODE_NAME"  # from fieldRef spec.nodeName
ENV_TERMINATION_MESSAGE_PATH: Final = "SNAPMOVER_TERMINATION_MESSAGE_PATH"
# boto3 reads the mounted Velero-format credentials file from this standard variable.
ENV_AWS_CREDENTIALS_FILE: Final = "AWS_SHARED_CREDENTIALS_FILE"
ENV_AWS_PROFILE: Final = "AWS_PROFILE"
ENV_AWS_REGION: Final = "AWS_DEFAULT_REGION"

# Velero dataMoverConfig keys honoured by the mover.
DMC_PARALLEL_FILES_UPLOAD: Final = "ParallelFilesUpload"
DMC_PARALLEL_FILES_DOWNLOAD: Final = "ParallelFilesDownload"
DMC_WRITE_SPARSE_FILES: Final = "WriteSparseFiles"
# snapmover's own key: exclude patterns, one a line (the exclude-file format; see the README).
DMC_EXCLUDES: Final = "excludes"
PARALLEL_MAX: Final = 1024  # the most worker threads a mover takes (parallelism, ParallelFiles*)


def whole_number_problem(value: object, what: str) -> str:
    """Why ``value`` is not a worker count from 1 to PARALLEL_MAX ('' when it is one)."""
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if 1 <= number <= PARALLEL_MAX:
        return ""
    return f"{what} must be a whole number from 1 to {PARALLEL_MAX}, not {str(value)[:80]!r}"


def datamover_config_problem(dmc: dict[str, object], role: str) -> str:
    """Why a CR's ``dataMoverConfig`` cannot work for ``role`` (upload|download); '' when it can.

    Checked by the launcher before it accepts a CR and by the mover before it starts, so both
    give the same message. Keys the mover does not use are ignored (Velero passes its own); an
    empty or null value means the default.
    """
    key = DMC_PARALLEL_FILES_UPLOAD if role == "upload" else DMC_PARALLEL_FILES_DOWNLOAD
    if dmc.get(key) not in (None, ""):
        problem = whole_number_problem(dmc[key], f"dataMoverConfig.{key}")
        if problem:
            return problem
    sparse = dmc.get(DMC_WRITE_SPARSE_FILES)
    if sparse not in (None, "") and str(sparse).strip().lower() not in ("true", "false"):
        return f"dataMoverConfig.{DMC_WRITE_SPARSE_FILES} must be true or false, not {str(sparse)[:80]!r}"
    return ""


# DataUpload spec.parentSnapshot: "" or "auto" = the latest snapshot of the same source namespace/PVC,
# "none" = a full backup, or the 64 hex digits of a snapshot id (the mover checks that it exists).
PARENT_SNAPSHOT_FIELD: Final = "spec.parentSnapshot"
PARENT_SNAPSHOT_WORDS: Final = ("", "auto", "none")
SNAPSHOT_ID_PATTERN: Final = re.compile(r"[0-9a-f]{64}")

# Keys of a DataUpload's status.dataMoverResult the mover writes about its parent.
RESULT_BACKUP_MODE: Final = "backupMode"  # "full" | "incremental"
RESULT_PARENT: Final = "parent"  # the parent snapshot id (incremental only)
RESULT_FULL_REASON: Final = "fullBackupReason"  # why the backup had no parent (full only)


def parent_snapshot_problem(value: object) -> str:
    """Why ``value`` cannot be a DataUpload's spec.parentSnapshot ('' when it can).

    Checked by the launcher before it accepts a CR and by the mover before it starts."""
    if value is None or value in PARENT_SNAPSHOT_WORDS:
        return ""
    if isinstance(value, str) and SNAPSHOT_ID_PATTERN.fullmatch(value):
        return ""
    return f"{PARENT_SNAPSHOT_FIELD} {str(value)[:80]!r} is not auto, none or a snapmover snapshot id (64 hex digits)"


PROGRESS_INTERVAL_SECONDS: Final = 5.0
CANCEL_DEADLINE_SECONDS: Final = 10.0


class TerminationMessage(TypedDict, total=False):
    """The one JSON line a mover Job writes to its termination message file."""

    phase: str
    snapshotID: str
    message: str
    totalBytes: int
    incrementalBytes: int


def encode_termination_message(msg: TerminationMessage) -> str:
    """Serialize the termination message as one compact JSON line (Kubernetes keeps 4 KiB)."""
    text = json.dumps(dict(msg), separators=(",", ":"), sort_keys=True)
    if len(text) > 4000 and "message" in msg:
        trimmed = dict(msg)
        trimmed["message"] = msg["message"][:2000] + "…"
        text = json.dumps(trimmed, separators=(",", ":"), sort_keys=True)
    return text


def decode_termination_message(text: str) -> TerminationMessage | None:
    """Parse a termination message; None when it is not ours (e.g. log fallback text)."""
    last = text.strip().splitlines()[-1] if text.strip() else ""
    try:
        data = json.loads(last)
    except ValueError:
        return None
    if not isinstance(data, dict) or "phase" not in data:
        return None
    msg: TerminationMessage = {}
    for key in TerminationMessage.__annotations__:
        if key in data:
            msg[key] = data[key]  # type: ignore[literal-required]
    return msg
