"""A fault-injecting HTTP proxy for S3 tests (stdlib only, 127.0.0.1).

It forwards every request to the real S3 server behind it and, for a seeded fraction of them,
answers with a 500 or 503, resets the connection, sends a truncated body, or delays the answer
by one to ``max_delay`` seconds.
``mode="outage"`` answers 503 to everything (a persistent outage). Bounded: delays are at most
``max_delay`` seconds, and the proxy runs until ``stop``.
"""

from __future__ import annotations

import http.client
import http.server
import random
import socket
import struct
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

FAULTS = ("500", "503", "reset", "truncate", "delay")


class QuietServer(http.server.ThreadingHTTPServer):
    """Clients reset connections on purpose here; no tracebacks for that."""

    def handle_error(self, request: object, client_address: object) -> None:
        pass


class FaultProxy:
    """Start with ``start()``; ``url`` is the endpoint to give clients; ``counts`` what happened."""

    def __init__(
        self, upstream: str, *, fraction: float = 0.05, seed: int = 1, mode: str = "faults", max_delay: float = 2.0
    ) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.fraction = fraction
        self.rng = random.Random(seed)
        self.mode = mode
        self.max_delay = max_delay
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.server = QuietServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FaultProxy:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _pick(self) -> str:
        with self.lock:
            self.counts["requests"] += 1
            if self.mode == "outage":
                self.counts["503"] += 1
                return "503"
            if self.rng.random() >= self.fraction:
                return "pass"
            fault = self.rng.choice(FAULTS)
            self.counts[fault] += 1
            return fault

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                fault = proxy._pick()
                if fault in ("500", "503"):
                    payload = (
                        b"<Error><Code>InternalError</Code></Error>"
                        if fault == "500"
                        else b"<Error><Code>SlowDown</Code></Error>"
                    )
                    self.send_response(int(fault))
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if fault == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                if fault == "delay":  # multi-second, bounded
                    time.sleep(min(proxy.max_delay, 1.0 + proxy.rng.random() * proxy.max_delay))
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "expect")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if fault == "truncate" and len(data) > 1:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.connection.close()
                    self.close_connection = True
                    return
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        return Handler
