"""Leader election on a coordination.k8s.io/v1 Lease: only the leader reconciles.

The holder renews every ``RENEW_SECONDS``; a lease not renewed for ``LEASE_SECONDS`` may be taken
over by another launcher. Lease times are MicroTime, sent as strings with microseconds (the
Python client drops the fraction of a datetime with zero microseconds and the server rejects it).
Updates are resourceVersion-checked, so two candidates never both win.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from launcher import metrics

log = logging.getLogger("snapmover.leader")
LEASE_NAME = "snapmover-launcher"
LEASE_SECONDS = 15
RENEW_SECONDS = 3.0


def micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).replace("Z", "+00:00")
    return datetime.fromisoformat(text)


class LeaderElector:
    """Keeps trying to hold the Lease; sets/clears ``is_leader``."""

    def __init__(self, api: client.ApiClient, namespace: str, identity: str, is_leader: threading.Event) -> None:
        self.api = client.CoordinationV1Api(api)
        self.ns = namespace
        self.identity = identity
        self.is_leader = is_leader

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                leading = self.try_acquire_or_renew()
            except ApiException as e:
                log.warning("lease update failed: %s", e.reason)
                leading = False
            if leading and not self.is_leader.is_set():
                log.info("became the leader (%s)", self.identity)
            if not leading and self.is_leader.is_set():
                log.warning("lost the leader lease")
            (self.is_leader.set if leading else self.is_leader.clear)()
            metrics.LEADER.set(1 if leading else 0)
            stop.wait(RENEW_SECONDS)
        self.release()

    def try_acquire_or_renew(self) -> bool:
        try:
            lease = self.api.read_namespaced_lease(LEASE_NAME, self.ns)
        except ApiException as e:
            if e.status != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": LEASE_NAME, "namespace": self.ns},
                "spec": {
                    "holderIdentity": self.identity,
                    "leaseDurationSeconds": LEASE_SECONDS,
                    "acquireTime": micro_now(),
                    "renewTime": micro_now(),
                    "leaseTransitions": 0,
                },
            }
            try:
                self.api.create_namespaced_lease(self.ns, body, _preload_content=False)
                return True
            except ApiException as e2:
                if e2.status == 409:
                    return False
                raise
        spec = lease.spec
        holder = spec.holder_identity
        renewed = parse_micro(spec.renew_time)
        expired = renewed is None or (datetime.now(UTC) - renewed).total_seconds() > (
            spec.lease_duration_seconds or LEASE_SECONDS
        )
        if holder not in (self.identity, None, "") and not expired:
            return False
        new_spec = {"holderIdentity": self.identity, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": micro_now()}
        if holder != self.identity:
            new_spec["acquireTime"] = micro_now()
            new_spec["leaseTransitions"] = (spec.lease_transitions or 0) + 1
        else:
            new_spec["acquireTime"] = (
                spec.acquire_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if spec.acquire_time else micro_now()
            )
            new_spec["leaseTransitions"] = spec.lease_transitions or 0
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": LEASE_NAME, "namespace": self.ns, "resourceVersion": lease.metadata.resource_version},
            "spec": new_spec,
        }
        try:
            self.api.replace_namespaced_lease(LEASE_NAME, self.ns, body, _preload_content=False)
            return True
        except ApiException as e:
            if e.status == 409:
                return False
            raise

    def release(self) -> None:
        if not self.is_leader.is_set():
            return
        try:
            lease = self.api.read_namespaced_lease(LEASE_NAME, self.ns)
            if lease.spec.holder_identity == self.identity:
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": LEASE_NAME,
                        "namespace": self.ns,
                        "resourceVersion": lease.metadata.resource_version,
                    },
                    "spec": {
                        "holderIdentity": "",
                        "leaseDurationSeconds": LEASE_SECONDS,
                        "renewTime": micro_now(),
                        "leaseTransitions": lease.spec.lease_transitions or 0,
                    },
                }
                self.api.replace_namespaced_lease(LEASE_NAME, self.ns, body, _preload_content=False)
        except ApiException as e:
            log.warning("could not release the lease: %s", e.reason)
        self.is_leader.clear()
