"""Watch-fed caches of the objects the launcher reconciles (a small informer).

An ``Informer`` lists one resource once, then follows it with a watch from the listed
resourceVersion and keeps every object in memory. The controller reads CRs, Jobs, pods, PVCs and
VolumeSnapshots from these stores instead of asking the API server on every reconcile, so the
requests a CR costs do not grow with how long it waits or how many other CRs wait beside it.

A watch that the server ends (its timeout) resumes from the last resourceVersion seen; a failed
one (410 Gone, a network error) relists. After a write the controller stores the API server's
response at once (``put``), so the next reconcile sees its own write before the watch event
arrives; a stored object is never replaced by an older resourceVersion.

``Recent`` is the other half: a time-bounded memo for the few reads that have no watch (the
password Secret, storage locations, the repository PVC, the Ready nodes).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from kubernetes import watch

from jobs.contract import newer_or_equal
from launcher import metrics

log = logging.getLogger("snapmover.launcher")

WATCH_SECONDS = 300  # the server ends each watch after this long; it then resumes without a relist


def meta_of(obj: Any) -> tuple[str, str, str, dict[str, str]]:
    """(namespace, name, resourceVersion, labels) of a typed model or a custom-object dict."""
    if isinstance(obj, dict):
        m = obj.get("metadata") or {}
        return m.get("namespace") or "", m.get("name") or "", m.get("resourceVersion") or "", m.get("labels") or {}
    m = obj.metadata
    return m.namespace or "", m.name or "", m.resource_version or "", m.labels or {}


class Informer:
    """List + watch one resource into memory; ``on_change`` is called for every object that changed."""

    def __init__(
        self,
        name: str,
        lister: Callable[..., Any],
        *args: Any,
        on_change: Callable[[Any], None] | None = None,
        **kwargs: Any,
    ) -> None:
        self.name = name
        self.lister = lister
        self.args = args
        self.kwargs = kwargs
        self.on_change = on_change or (lambda _obj: None)
        self.synced = threading.Event()
        self._objects: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    # --- reads -----------------------------------------------------------------------------------

    def get(self, name: str, namespace: str = "") -> Any | None:
        with self._lock:
            return self._objects.get((namespace, name))

    def items(self, labels: dict[str, str] | None = None) -> list[Any]:
        """Every stored object, or those carrying all of ``labels``."""
        with self._lock:
            objects = list(self._objects.values())
        if not labels:
            return objects
        return [o for o in objects if all(meta_of(o)[3].get(k) == v for k, v in labels.items())]

    # --- writes from the controller ----------------------------------------------------------

    def put(self, obj: Any) -> None:
        """Store an object the API server just returned for our own write."""
        self._store(obj, deleted=False)

    def forget(self, name: str, namespace: str = "") -> None:
        """Drop an object we just deleted (the watch confirms it later)."""
        with self._lock:
            self._objects.pop((namespace, name), None)

    # --- the list/watch loop -----------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        rv = ""
        while not stop.is_set():
            try:
                if not rv:
                    rv = self._relist()
                rv = self._follow(rv, stop)
            except Exception as e:  # noqa: BLE001 - relist after any failure (410 Gone, network)
                metrics.API_ERRORS.inc()
                log.debug("watch of %s failed, relisting: %s", self.name, e)
                rv = ""
                stop.wait(1)

    def _relist(self) -> str:
        listing = self.lister(*self.args, **self.kwargs)
        if isinstance(listing, dict):
            objects, rv = list(listing.get("items") or []), str(listing["metadata"]["resourceVersion"])
        else:
            objects, rv = list(listing.items or []), str(listing.metadata.resource_version)
        fresh = {meta_of(o)[:2]: o for o in objects}
        with self._lock:
            gone = [o for key, o in self._objects.items() if key not in fresh]
            self._objects = fresh
        self.synced.set()
        for o in objects:
            metrics.observe_cr(o)
        for o in gone:
            metrics.observe_cr(o, deleted=True)
        self._notify([*objects, *gone])
        return rv

    def _follow(self, rv: str, stop: threading.Event) -> str:
        w = watch.Watch()
        for event in w.stream(
            self.lister, *self.args, resource_version=rv, timeout_seconds=WATCH_SECONDS, **self.kwargs
        ):
            obj = event["object"]
            self._store(obj, deleted=event["type"] == "DELETED")
            metrics.observe_cr(obj, deleted=event["type"] == "DELETED")
            rv = meta_of(obj)[2] or rv
            self._notify([obj])
            if stop.is_set():
                w.stop()
        return rv

    def _store(self, obj: Any, *, deleted: bool) -> None:
        ns, name, rv, _labels = meta_of(obj)
        with self._lock:
            if deleted:
                self._objects.pop((ns, name), None)
                return
            old = self._objects.get((ns, name))
            if old is None or newer_or_equal(rv, meta_of(old)[2]):
                self._objects[(ns, name)] = obj

    def _notify(self, objects: Iterable[Any]) -> None:
        for obj in objects:
            try:
                self.on_change(obj)
            except Exception as e:  # noqa: BLE001 - a bad object must not stop the watch
                log.warning("handling a change of %s %s failed: %s", self.name, meta_of(obj)[1], e)


class Recent:
    """Remembers successful reads for ``ttl`` seconds; failures are never remembered."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._values: dict[tuple[str, ...], tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, ...], fetch: Callable[[], Any]) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._values.get(key)
            if hit is not None and now - hit[0] < self.ttl:
                return hit[1]
        value = fetch()
        with self._lock:
            self._values[key] = (now, value)
            if len(self._values) > 1000:  # names come from CRs: keep the memo bounded
                self._values = {k: v for k, v in self._values.items() if now - v[0] < self.ttl}
        return value
