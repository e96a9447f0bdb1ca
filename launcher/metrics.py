"""Prometheus metrics of the launcher and its ``/metrics`` + ``/healthz`` HTTP server.

Names follow the Prometheus conventions: a ``snapmover_`` prefix, base units (seconds, bytes) as
the last word before ``_total`` for counters, ``_timestamp_seconds`` for points in time. The
controller counts what it does (transitions, API errors, maintenance Jobs, queue depth); the CR
observation path (:func:`observe_cr`, called by the CR informers for every object they see, leader
or not) derives what the alerts of ``manifests/monitoring/`` need from the CRs themselves, so a
restarted launcher rebuilds them from the cluster: the last successful backup per source PVC, the
results per kind/phase, failures by cause, and the CRs that are not terminal yet.

``EXPORTED`` lists every series name a scrape shows; tests check that the monitoring kit uses
only those.
"""

from __future__ import annotations

import http.server
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from jobs.contract import (
    DATADOWNLOAD_KIND,
    DATAUPLOAD_KIND,
    DEFAULT_DATAMOVER_NAME,
    TERMINAL_PHASES,
    Phase,
)

CRS = Gauge("snapmover_crs", "DataUploads/DataDownloads of this data mover by phase", ["kind", "phase"])
TRANSITIONS = Counter("snapmover_phase_transitions_total", "Phase changes made by the launcher", ["kind", "phase"])
PHASE_SECONDS = Histogram(
    "snapmover_phase_duration_seconds",
    "Time spent in a phase before leaving it",
    ["kind", "phase"],
    buckets=(1, 5, 15, 60, 300, 900, 3600, 14400, 86400),
)
BYTES_MOVED = Counter("snapmover_moved_bytes_total", "Logical bytes of completed uploads/downloads", ["kind"])
QUEUE_DEPTH = Gauge("snapmover_queue_depth", "Keys waiting in the launcher work queue")
API_ERRORS = Counter("snapmover_api_errors_total", "Kubernetes API calls that failed")
MAINTENANCE = Counter("snapmover_maintenance_jobs_total", "Finished repository maintenance Jobs", ["result"])
MOVER_RETRIES = Counter(
    "snapmover_mover_retries_total", "New mover Jobs started because the previous mover died", ["kind"]
)
MOVER_PHASES = Counter(
    "snapmover_mover_phases_total", "Phases the mover wrote to its CR, as the launcher saw them", ["kind", "phase"]
)
LEADER = Gauge("snapmover_leader", "1 when this launcher holds the leader lease")
RESULTS = Counter(
    "snapmover_results_total", "CRs seen reaching a terminal phase since the launcher started", ["kind", "phase"]
)
FAILURES = Counter("snapmover_failures_total", "Failed CRs by cause (see failure_cause)", ["kind", "cause"])
LAST_BACKUP = Gauge(
    "snapmover_last_successful_backup_timestamp_seconds",
    "Completion time of the newest Completed DataUpload per source namespace/PVC",
    ["source_namespace", "pvc"],
)
ACTIVE_CREATED = Gauge(
    "snapmover_active_cr_created_timestamp_seconds",
    "Creation time of each CR not in a terminal phase yet (the series goes when it ends)",
    ["kind", "name", "phase"],
)
ACTIVE_DONE = Gauge(
    "snapmover_active_cr_done_bytes", "progress.bytesDone of each CR not in a terminal phase yet", ["kind", "name"]
)

EXPORTED: Final = frozenset(
    {
        "snapmover_crs",
        "snapmover_phase_transitions_total",
        "snapmover_phase_duration_seconds_bucket",
        "snapmover_phase_duration_seconds_sum",
        "snapmover_phase_duration_seconds_count",
        "snapmover_moved_bytes_total",
        "snapmover_queue_depth",
        "snapmover_api_errors_total",
        "snapmover_maintenance_jobs_total",
        "snapmover_mover_retries_total",
        "snapmover_mover_phases_total",
        "snapmover_leader",
        "snapmover_results_total",
        "snapmover_failures_total",
        "snapmover_last_successful_backup_timestamp_seconds",
        "snapmover_active_cr_created_timestamp_seconds",
        "snapmover_active_cr_done_bytes",
    }
)

ALL_PHASES: Final = ("New", "Accepted", "Prepared", "InProgress", "Canceling", "Canceled", "Completed", "Failed")
RESULTS_REMEMBERED: Final = 10_000  # uids of terminal CRs already counted (bounded: names come from users)
STARTUP_SLACK_SECONDS: Final = 60.0  # a result completed this long before start still counts once

# Ordered: the first pattern found in a Failed CR's message names its cause.
FAILURE_CAUSES: Final = (
    ("timeout", re.compile(r"timed? ?out|deadline", re.I)),
    ("repository", re.compile(r"password|integrity|corrupt|tamper|repository", re.I)),
    ("scheduling", re.compile(r"unschedulable|imagepull|errimage|image|evicted|oomkilled", re.I)),
    ("storage", re.compile(r"storage|bucket|s3|endpoint|credential|access denied|tls|certificate", re.I)),
    ("volume", re.compile(r"snapshot|persistentvolume|pvc|volume|device", re.I)),
    ("configuration", re.compile(r"invalid|config|usage|unknown|missing", re.I)),
)

_state_lock = threading.Lock()
_counted: OrderedDict[str, None] = OrderedDict()
_last_backup: dict[tuple[str, str], float] = {}
_active: dict[tuple[str, str], str] = {}  # (kind, name) -> phase label currently exported
_settings: dict[str, Any] = {"datamover": DEFAULT_DATAMOVER_NAME, "started": time.time()}


def configure(datamover_name: str, started: float | None = None) -> None:
    """Tell the observation path which CRs are ours (and, for tests, when the launcher started)."""
    with _state_lock:
        _settings["datamover"] = datamover_name
        _settings["started"] = time.time() if started is None else started


def set_phase_counts(kind: str, counts: dict[str, int]) -> None:
    """Publish the number of CRs per phase (all phases, zero when absent)."""
    for phase in ALL_PHASES:
        CRS.labels(kind, phase).set(counts.get(phase, 0))


def observe_phase(kind: str, phase: str, seconds: float) -> None:
    """Record how long a CR spent in ``phase``."""
    PHASE_SECONDS.labels(kind, phase).observe(max(seconds, 0.0))


def failure_cause(message: str) -> str:
    """A coarse cause of a failure from its message: timeout, repository, storage, scheduling,
    volume, configuration or other."""
    for cause, pattern in FAILURE_CAUSES:
        if pattern.search(message):
            return cause
    return "other"


def epoch_seconds(timestamp: Any) -> float | None:
    """An RFC 3339 timestamp (``2026-01-02T03:04:05Z``) as Unix seconds; None if absent/malformed."""
    if not isinstance(timestamp, str) or not timestamp:
        return None
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).astimezone(UTC).timestamp()
    except ValueError:
        return None


def observe_cr(obj: Any, *, deleted: bool = False) -> None:
    """Derive the CR series from one DataUpload/DataDownload the launcher saw (idempotent).

    Anything else (Jobs, pods, other data movers' CRs) is ignored, so informers may pass every object.
    """
    if not isinstance(obj, dict) or obj.get("kind") not in (DATAUPLOAD_KIND, DATADOWNLOAD_KIND):
        return
    spec, status, meta = obj.get("spec") or {}, obj.get("status") or {}, obj.get("metadata") or {}
    if spec.get("datamover") != _settings["datamover"]:
        return
    kind, name = str(obj["kind"]), str(meta.get("name") or "")
    uid = str(meta.get("uid") or name)
    phase = str(status.get("phase") or Phase.NEW)
    with _state_lock:
        terminal = phase in TERMINAL_PHASES
        _set_active(kind, name, None if deleted or terminal else phase, meta, status)
        if not terminal or deleted:
            return
        if kind == DATAUPLOAD_KIND and phase == Phase.COMPLETED:
            done = epoch_seconds(status.get("completionTimestamp"))
            pvc = (str(spec.get("sourceNamespace") or ""), str(spec.get("sourcePVC") or ""))
            if done is not None and done > _last_backup.get(pvc, 0.0):
                _last_backup[pvc] = done
                LAST_BACKUP.labels(*pvc).set(done)
        if uid in _counted:
            return
        _counted[uid] = None
        if len(_counted) > RESULTS_REMEMBERED:
            _counted.popitem(last=False)
        done = epoch_seconds(status.get("completionTimestamp"))
        if done is not None and done < float(_settings["started"]) - STARTUP_SLACK_SECONDS:
            return  # finished before this launcher started: counted by an earlier one, if at all
        RESULTS.labels(kind, phase).inc()
        if phase == Phase.FAILED:
            FAILURES.labels(kind, failure_cause(str(status.get("message") or ""))).inc()


def _set_active(kind: str, name: str, phase: str | None, meta: dict[str, Any], status: dict[str, Any]) -> None:
    old = _active.pop((kind, name), None)
    if old is not None and old != phase:
        ACTIVE_CREATED.remove(kind, name, old)
    if phase is None:
        if old is not None:
            ACTIVE_DONE.remove(kind, name)
        return
    _active[(kind, name)] = phase
    created = epoch_seconds(meta.get("creationTimestamp"))
    ACTIVE_CREATED.labels(kind, name, phase).set(created if created is not None else time.time())
    ACTIVE_DONE.labels(kind, name).set(float((status.get("progress") or {}).get("bytesDone") or 0))


def serve(port: int, healthy: Callable[[], bool]) -> http.server.ThreadingHTTPServer:
    """Serve ``/metrics`` and ``/healthz`` on ``port`` (0 = any free port) in a daemon thread."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                body, ctype, code = generate_latest(), CONTENT_TYPE_LATEST, 200
            elif self.path.startswith("/healthz"):
                ok = healthy()
                body, ctype, code = (b"ok\n" if ok else b"unhealthy\n"), "text/plain", 200 if ok else 503
            else:
                body, ctype, code = b"not found\n", "text/plain", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler)  # noqa: S104 - scraped in-cluster
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
