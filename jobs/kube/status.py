"""The mover's view of its own CR: read it, change its phase safely, patch progress.

Every phase change is a resourceVersion-checked replace of the whole object (the CRDs have no
status subresource): on 409 the CR is re-read and the decision taken again, so a cancel and a
completion can never both win, and a terminal CR is never changed. Progress goes out as a merge
patch that touches only ``status.progress``. The ServiceAccount the Job runs as may only
get/watch/patch/update this one CR.

Requests are kept few (every mover of a 200-volume backup talks to the same API server): the
last version seen — from a read, a watch event or the response to our own write — is the base
of the next update, so a phase change is one request unless someone else changed the CR in
between (then 409, re-read, decide again); cancel requests arrive through one watch instead of
polling.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from jobs import __version__
from jobs.contract import (
    API_GROUP,
    API_VERSION,
    DATADOWNLOAD_PLURAL,
    DATAUPLOAD_KIND,
    DATAUPLOAD_PLURAL,
    TERMINAL_PHASES,
    ExitCode,
    newer_or_equal,
)
from jobs.errors import MoverError

log = logging.getLogger(__name__)
CONFLICT_RETRIES = 10
WATCH_SECONDS = 300
WATCH_FIRST_EVENT_SECONDS = 3.0


def api_message(e: ApiException) -> str:
    """The API server's own explanation of an error (it names fields, never secrets)."""
    try:
        return str(json.loads(e.body).get("message", e.reason))[:500]
    except (TypeError, ValueError):
        return str(e.reason)


def rfc3339_now() -> str:
    """Kubernetes Time format (seconds precision, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class CRClientError(MoverError):
    """The Kubernetes API refused the mover's request about its own CR."""


class KubernetesUnavailableError(MoverError):
    """The Kubernetes API server could not be reached or did not answer (not the storage's fault)."""

    exit_code = ExitCode.KUBERNETES_UNAVAILABLE


UNAVAILABLE_STATUSES = frozenset({408, 429})


def api_error(e: ApiException, what: str) -> MoverError:
    """The mover's error for an ApiException: an outage (5xx, throttling) or a refusal (other 4xx)."""
    status = int(e.status or 0)
    if status == 0 or status >= 500 or status in UNAVAILABLE_STATUSES:
        return KubernetesUnavailableError(f"the Kubernetes API server is unavailable ({status}) to {what}")
    return CRClientError(f"cannot {what}: {status} {api_message(e)}")


class CRStatus:
    """Reads and updates one DataUpload/DataDownload from inside its Job."""

    def __init__(self, kind: str, namespace: str, name: str, uid: str = "") -> None:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        api = client.ApiClient()
        api.user_agent = f"snapmover-mover/{__version__}"  # tells our requests apart in audit logs
        self._api = client.CustomObjectsApi(api)
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.uid = uid
        self.plural = DATAUPLOAD_PLURAL if kind == DATAUPLOAD_KIND else DATADOWNLOAD_PLURAL
        self._last: dict[str, Any] | None = None  # the newest version seen
        self._lock = threading.Lock()
        self._watching = False
        self._seen = threading.Event()

    def _remember(self, obj: dict[str, Any]) -> None:
        if self.uid and obj.get("metadata", {}).get("uid") != self.uid:
            return
        rv = str(obj.get("metadata", {}).get("resourceVersion", ""))
        with self._lock:
            old = str((self._last or {}).get("metadata", {}).get("resourceVersion", ""))
            if newer_or_equal(rv, old):
                self._last = obj
        self._seen.set()

    def latest(self) -> dict[str, Any]:
        """A copy of the newest version seen, read from the API server when none was seen yet
        (a watch just opened delivers the CR first: wait a moment for it)."""
        if self._watching:
            self._seen.wait(WATCH_FIRST_EVENT_SECONDS)
        with self._lock:
            last = copy.deepcopy(self._last)
        return last if last is not None else self.get()

    def watch(self, stop: threading.Event) -> Iterator[dict[str, Any]]:
        """The CR each time it changes (a watch on this one object, by name) until ``stop``."""
        w = watch.Watch()
        rv = ""
        self._watching = True
        while not stop.is_set():
            kwargs: dict[str, Any] = {"field_selector": f"metadata.name={self.name}", "timeout_seconds": WATCH_SECONDS}
            if rv:
                kwargs["resource_version"] = rv
            for event in w.stream(
                self._api.list_namespaced_custom_object, API_GROUP, API_VERSION, self.namespace, self.plural, **kwargs
            ):
                obj = event["object"]
                rv = str(obj["metadata"].get("resourceVersion", rv))
                if event["type"] != "DELETED":
                    self._remember(obj)
                yield obj
                if stop.is_set():
                    w.stop()
                    break

    def get(self) -> dict[str, Any]:
        """The current CR; raises when it is gone or belongs to another object with our name."""
        try:
            obj: dict[str, Any] = self._api.get_namespaced_custom_object(
                API_GROUP, API_VERSION, self.namespace, self.plural, self.name
            )
        except ApiException as e:
            raise api_error(e, f"read {self.kind} {self.namespace}/{self.name}") from e
        except HTTPError as e:
            raise KubernetesUnavailableError(f"cannot reach the Kubernetes API: {e}") from e
        if self.uid and obj["metadata"].get("uid") != self.uid:
            raise CRClientError(f"{self.kind} {self.name} was replaced by another object (uid changed)")
        self._remember(obj)
        return copy.deepcopy(obj)

    def transition(self, decide: Callable[[dict[str, Any]], dict[str, Any] | None]) -> dict[str, Any] | None:
        """Apply ``decide(cr) -> status changes`` with a resourceVersion-checked update.

        ``decide`` returns the fields to set in ``status`` or None to leave the CR alone; it is
        called again on every conflict. Terminal CRs are never changed. Returns the updated CR.
        """
        obj = self.latest()
        for _ in range(CONFLICT_RETRIES):
            status = obj.get("status") or {}
            if status.get("phase") in TERMINAL_PHASES:
                return None
            changes = decide(obj)
            if changes is None:
                return None
            obj["status"] = {**status, **changes}
            try:
                updated: dict[str, Any] = self._api.replace_namespaced_custom_object(
                    API_GROUP, API_VERSION, self.namespace, self.plural, self.name, obj
                )
                self._remember(updated)
                return updated
            except ApiException as e:
                if e.status == 409:
                    obj = self.get()
                    continue
                raise api_error(e, f"update {self.kind} {self.name}") from e
            except HTTPError as e:
                raise KubernetesUnavailableError(f"cannot reach the Kubernetes API: {e}") from e
        raise CRClientError(f"{self.kind} {self.name} kept changing; gave up after {CONFLICT_RETRIES} conflicts")

    def patch_progress(self, total_bytes: int, bytes_done: int) -> None:
        """Merge-patch ``status.progress`` (never fails the run: progress is best effort)."""
        body = {"status": {"progress": {"totalBytes": total_bytes, "bytesDone": bytes_done}}}
        for attempt in range(3):
            try:
                self._remember(
                    self._api.patch_namespaced_custom_object(
                        API_GROUP, API_VERSION, self.namespace, self.plural, self.name, body
                    )
                )
                return
            except (ApiException, HTTPError) as e:
                log.warning("progress update failed (%s); will retry", getattr(e, "reason", e))
                time.sleep(0.5 * (attempt + 1))
