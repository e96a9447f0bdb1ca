"""The mover's phase decisions: pure ``decide(cr) -> status changes`` for ``CRStatus.transition``.

Each function returns the fields to write (or raises MoverError to refuse); the runner applies
them rv-guarded, so a decision is retried on the fresh CR after a conflict and a terminal phase
is never changed (``CRStatus.transition``). Used by ``jobs.kube.runner``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jobs.contract import Phase
from jobs.errors import MoverError
from jobs.kube.status import rfc3339_now

Decide = Callable[[dict[str, Any]], dict[str, Any]]


def start(node: str) -> Decide:
    """Accepted/Prepared -> InProgress on ``node`` (any other phase: refuse to start)."""

    def decide(obj: dict[str, Any]) -> dict[str, Any]:
        phase = (obj.get("status") or {}).get("phase") or Phase.NEW
        if phase not in (Phase.ACCEPTED, Phase.PREPARED):
            raise MoverError(f"the CR is in phase {phase}, not Accepted/Prepared; refusing to start")
        return {"phase": Phase.IN_PROGRESS, "startTimestamp": rfc3339_now(), "node": node, "nodeOS": "linux"}

    return decide


def canceling(reason: str) -> Decide:
    return lambda obj: {"phase": Phase.CANCELING, "message": reason}


def canceled(reason: str) -> Decide:
    return lambda obj: {"phase": Phase.CANCELED, "message": reason, "completionTimestamp": rfc3339_now()}


def failed(message: str) -> Decide:
    return lambda obj: {"phase": Phase.FAILED, "message": message, "completionTimestamp": rfc3339_now()}
