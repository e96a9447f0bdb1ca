"""The launcher's one mapping of Kubernetes API errors (every write and most reads go through here).

``ApiException`` is translated once, by status:

* create-if-absent ignores only 409 (it exists already), delete-if-present only 404 (gone already),
  read-or-none turns only 404 into ``None``;
* 408, 429, 5xx and transport errors (no status) become ``ApiUnavailableError``: the reconcile is
  retried with backoff (the work queue's), nothing is decided from it;
* every other 4xx (400 bad body, 403 forbidden, 422 invalid, …) becomes ``ApiRejectedError``, a
  permanent failure carrying the API server's own message, so the CR fails with that message
  instead of retrying the same rejected body until a timeout.

Used by ``launcher.controller``, ``launcher.exposure`` and ``launcher.maintenance``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes.client.rest import ApiException

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({408, 429})
MESSAGE_LIMIT_CHARS = 600


class ApiUnavailableError(Exception):
    """The API server could not answer now (5xx, throttling, a network error): retry later."""


class ApiRejectedError(Exception):
    """The API server refused the request for good (4xx other than the expected 404/409)."""

    def __init__(self, what: str, status: int, message: str) -> None:
        super().__init__(f"the API server rejected {what} ({status}): {message}")
        self.status = status


def server_message(e: ApiException) -> str:
    """The ``message`` of the Status the API server returned (its reason phrase when there is none)."""
    try:
        body = json.loads(e.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])[:MESSAGE_LIMIT_CHARS]
    return str(e.reason or "no message")[:MESSAGE_LIMIT_CHARS]


def translate(e: ApiException, what: str) -> Exception:
    """The launcher's exception for ``e`` (call ``raise translate(e, what) from e``)."""
    status = int(e.status or 0)
    if status == 0 or status >= 500 or status in RETRYABLE_STATUSES:
        return ApiUnavailableError(f"{what}: API server unavailable ({status or 'no answer'}): {server_message(e)}")
    return ApiRejectedError(what, status, server_message(e))


def call(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` with every ApiException translated."""
    try:
        return fn(*args, **kwargs)
    except ApiException as e:
        raise translate(e, what) from e


def create_if_absent(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Create; ``None`` when it exists already (409). Anything else is translated."""
    try:
        return fn(*args, **kwargs)
    except ApiException as e:
        if e.status == 409:
            return None
        raise translate(e, what) from e


def delete_if_present(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    """Delete; False when it was gone already (404). Anything else is translated."""
    try:
        fn(*args, **kwargs)
    except ApiException as e:
        if e.status == 404:
            return False
        raise translate(e, what) from e
    return True


def read_or_none(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Read; ``None`` when it does not exist (404). Anything else is translated."""
    try:
        return fn(*args, **kwargs)
    except ApiException as e:
        if e.status == 404:
            return None
        raise translate(e, what) from e
