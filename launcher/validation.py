"""Checks every field of a DataUpload/DataDownload before anything is done for it (pure, no I/O).

``launcher.phases.accept`` calls :func:`spec_problem` on a New CR: a CR with an invalid value
fails at once with a message naming the field and the value, instead of waiting for a timeout
(a ``sourceNamespace`` of ``../../kube-system`` can never exist, so there is nothing to wait
for). Names are checked the way the API server validates them (RFC 1123 DNS labels for
namespaces, DNS subdomains for object names), durations the way Go's ``time.ParseDuration``
bounds them, snapshot ids as the repository writes them (64 lower-case hex digits, see
``jobs/FORMAT.md``; a DataUpload's ``parentSnapshot`` is one or auto/none, see
``jobs.contract.parent_snapshot_problem``: whether that snapshot exists only the mover can tell)
and ``dataMoverConfig`` with the mover's own rules (``jobs.contract.datamover_config_problem``).
Unit-tested in ``tests/unit/launcher/test_validation.py``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from jobs.contract import DATAUPLOAD_KIND, SNAPSHOT_ID_PATTERN, datamover_config_problem, parent_snapshot_problem
from launcher.config import ConfigurationError, parse_duration

DNS_LABEL_MAX = 63
DNS_SUBDOMAIN_MAX = 253
LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
MAX_DURATION_SECONDS = 2562047 * 3600.0  # Go's time.Duration ends at ~2562047h (int64 nanoseconds)
SHOWN_CHARS = 70  # longer values are cut in messages (the CR still holds the whole value)
NODE_OS_VALUES = ("", "auto", "linux")  # Velero's nodeOS; a Windows volume cannot be mounted by the Linux mover

LABEL_RULE = "a namespace name has only lower-case letters, digits and '-', and starts and ends with a letter or digit"
SUBDOMAIN_RULE = (
    "an object name has only lower-case letters, digits, '-' and '.', and starts and ends with a letter or digit"
)

Obj = Mapping[str, Any]


def shown(value: Any) -> str:
    """``value`` for a message: quoted, control characters escaped, cut when long."""
    text = str(value)
    if len(text) > SHOWN_CHARS:
        return f"{text[:SHOWN_CHARS]!r}… ({len(text)} characters)"
    return repr(text)


def rule_problem(value: str, pattern: re.Pattern[str], limit: int, rule: str) -> str:
    """Why ``value`` breaks a DNS naming rule ('' when it keeps it)."""
    if len(value) > limit:
        return f"longer than {limit} characters"
    return "" if pattern.fullmatch(value) else rule


def label_problem(value: str) -> str:
    """Why ``value`` is not an RFC 1123 DNS label (a namespace name) — '' when it is one."""
    return rule_problem(value, LABEL, DNS_LABEL_MAX, LABEL_RULE)


def subdomain_problem(value: str) -> str:
    """Why ``value`` is not an RFC 1123 DNS subdomain (an object name) — '' when it is one."""
    return rule_problem(value, SUBDOMAIN, DNS_SUBDOMAIN_MAX, SUBDOMAIN_RULE)


NAME_CHECKS: dict[str, tuple[str, Callable[[str], str]]] = {
    "namespace": ("namespace name", label_problem),
    "name": ("object name", subdomain_problem),
}


def field_of(spec: Obj, path: str) -> Any:
    """The value at a dotted ``path`` of the spec (None when any part is missing)."""
    value: Any = spec
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def name_problem(spec: Obj, path: str, kind: str, *, required: bool = True) -> str:
    """Why ``spec.<path>`` is not a valid ``kind`` ("namespace" or "name") — '' when it is."""
    value = field_of(spec, path)
    if value in (None, ""):
        return f"spec.{path} is empty" if required else ""
    if not isinstance(value, str):
        return f"spec.{path} must be a string, not {shown(value)}"
    what, check = NAME_CHECKS[kind]
    why = check(value)
    return f"spec.{path} {shown(value)} is not a valid {what}: {why}" if why else ""


def duration_problem(spec: Obj, path: str) -> str:
    """Why ``spec.<path>`` is not a positive duration Go (and so Velero) can hold — '' when it is."""
    value = spec.get(path)
    if value in (None, ""):
        return ""
    try:
        seconds = parse_duration(str(value), f"spec.{path}")
    except ConfigurationError as e:
        return str(e)
    if seconds <= 0:
        return f"spec.{path} {shown(value)} must be longer than 0s"
    if seconds > MAX_DURATION_SECONDS:
        return f"spec.{path} {shown(value)} is longer than a duration can be (at most 2562047h)"
    return ""


def first(*problems: str) -> str:
    return next((p for p in problems if p), "")


def upload_problem(spec: Obj) -> str:
    """What is wrong with a DataUpload's own fields ('' when nothing)."""
    snapshot_type = spec.get("snapshotType", "CSI")
    if snapshot_type != "CSI":
        return f"spec.snapshotType {shown(snapshot_type)} is not supported (only CSI)"
    if not isinstance(spec.get("csiSnapshot"), Mapping):
        return "spec.csiSnapshot.volumeSnapshot is empty (spec.csiSnapshot is missing)"
    return first(
        name_problem(spec, "sourceNamespace", "namespace"),
        name_problem(spec, "sourcePVC", "name"),
        parent_snapshot_problem(spec.get("parentSnapshot")),
        name_problem(spec, "csiSnapshot.volumeSnapshot", "name"),
        name_problem(spec, "csiSnapshot.storageClass", "name", required=False),
        name_problem(spec, "csiSnapshot.snapshotClass", "name", required=False),
    )


def download_problem(spec: Obj) -> str:
    """What is wrong with a DataDownload's own fields ('' when nothing)."""
    target = spec.get("targetVolume")
    if not isinstance(target, Mapping) or not target.get("pvc") or not target.get("namespace"):
        return "spec.targetVolume.pvc and spec.targetVolume.namespace are required"
    snapshot_id = spec.get("snapshotID")
    if not snapshot_id:
        return "spec.snapshotID is empty"
    if not isinstance(snapshot_id, str) or not SNAPSHOT_ID_PATTERN.fullmatch(snapshot_id):
        return f"spec.snapshotID {shown(snapshot_id)} is not a snapmover snapshot id (64 hex digits)"
    node_os = spec.get("nodeOS") or ""
    if node_os not in NODE_OS_VALUES:
        return f"spec.nodeOS {shown(node_os)} is not supported (snapmover restores Linux volumes: linux or auto)"
    size = spec.get("snapshotSize")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        return f"spec.snapshotSize {shown(size)} must be a whole number of bytes"
    return first(
        name_problem(spec, "targetVolume.namespace", "namespace"),
        name_problem(spec, "targetVolume.pvc", "name"),
        name_problem(spec, "targetVolume.pv", "name", required=False),
        name_problem(spec, "sourceNamespace", "namespace"),
    )


def spec_problem(cr: Obj) -> str:
    """Why the CR can never work ('' when it can): the first bad field, named with its value."""
    spec = cr.get("spec") or {}
    upload = cr.get("kind") == DATAUPLOAD_KIND
    dmc = spec.get("dataMoverConfig") or {}
    if not isinstance(dmc, Mapping):
        return "spec.dataMoverConfig must be a map of strings"
    return first(
        name_problem(spec, "backupStorageLocation", "name"),
        upload_problem(spec) if upload else download_problem(spec),
        duration_problem(spec, "operationTimeout"),
        datamover_config_problem(dict(dmc), "upload" if upload else "download"),
    )
