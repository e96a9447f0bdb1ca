"""Prometheus metrics of the launcher and its ``/metrics`` + ``/healthz`` HTTP server."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

CRS = Gauge("snapmover_crs", "DataUploads/DataDownloads of this data mover by phase", ["kind", "phase"])
TRANSITIONS = Counter("snapmover_phase_transitions_total", "Phase changes made by the launcher", ["kind", "phase"])
PHASE_SECONDS = Histogram(
    "snapmover_phase_duration_seconds",
    "Time spent in a phase before leaving it",
    ["kind", "phase"],
    buckets=(1, 5, 15, 60, 300, 900, 3600, 14400, 86400),
)
BYTES_MOVED = Counter("snapmover_bytes_moved_total", "Logical bytes of completed uploads/downloads", ["kind"])
QUEUE_DEPTH = Gauge("snapmover_queue_depth", "Keys waiting in the launcher work queue")
API_ERRORS = Counter("snapmover_api_errors_total", "Kubernetes API calls that failed")
MAINTENANCE = Counter("snapmover_maintenance_jobs_total", "Finished repository maintenance Jobs", ["result"])
LEADER = Gauge("snapmover_leader", "1 when this launcher holds the leader lease")


def set_phase_counts(kind: str, counts: dict[str, int]) -> None:
    """Publish the number of CRs per phase (all phases, zero when absent)."""
    for phase in ("New", "Accepted", "Prepared", "InProgress", "Canceling", "Canceled", "Completed", "Failed"):
        CRS.labels(kind, phase).set(counts.get(phase, 0))


def observe_phase(kind: str, phase: str, seconds: float) -> None:
    """Record how long a CR spent in ``phase``."""
    PHASE_SECONDS.labels(kind, phase).observe(max(seconds, 0.0))


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
