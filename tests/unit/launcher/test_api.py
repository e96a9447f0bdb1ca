"""launcher.api: ApiException mapped once — 404/409 only where expected, 4xx permanent, 5xx retried."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from launcher import api


def raising(status: int, message: str = "boom") -> Any:
    def call(*_: Any, **__: Any) -> Any:
        e = ApiException(status=status, reason="Reason")
        e.body = json.dumps({"kind": "Status", "message": message})
        raise e

    return call


def test_create_if_absent_ignores_only_409() -> None:
    assert api.create_if_absent("Job x", raising(409)) is None
    with pytest.raises(api.ApiRejectedError):
        api.create_if_absent("Job x", raising(404))  # a 404 on create (namespace gone) is not "exists"
    with pytest.raises(api.ApiRejectedError, match=r"rejected Job x \(422\): spec.template: Invalid value"):
        api.create_if_absent("Job x", raising(422, "spec.template: Invalid value"))


def test_delete_if_present_ignores_only_404() -> None:
    assert api.delete_if_present("PVC x", raising(404)) is False
    assert api.delete_if_present("PVC x", lambda: None) is True
    with pytest.raises(api.ApiRejectedError, match="forbidden"):
        api.delete_if_present("PVC x", raising(403, "pvc is forbidden"))


def test_read_or_none_maps_404_to_none() -> None:
    assert api.read_or_none("Secret x", raising(404)) is None
    with pytest.raises(api.ApiRejectedError):
        api.read_or_none("Secret x", raising(403))


@pytest.mark.parametrize("status", [0, 408, 429, 500, 503])
def test_server_trouble_is_retryable(status: int) -> None:
    with pytest.raises(api.ApiUnavailableError):
        api.call("x", raising(status))


def test_a_body_that_is_not_json_keeps_the_reason() -> None:
    e = ApiException(status=400, reason="Bad Request")
    e.body = "<html>"
    assert "Bad Request" in str(api.translate(e, "x"))
