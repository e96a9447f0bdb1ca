"""jobs.kube.status: a Kubernetes API outage is its own error and exit code, not "storage unreachable"."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes.client.rest import ApiException

from jobs.contract import ExitCode
from jobs.kube import status
from jobs.kube.status import CRClientError, CRStatus, KubernetesUnavailableError, api_error


@pytest.mark.parametrize("status", [0, 429, 500, 503])
def test_server_trouble_is_a_kubernetes_outage(status: int) -> None:
    error = api_error(ApiException(status=status, reason="x"), "read DataUpload a/b")
    assert isinstance(error, KubernetesUnavailableError) and error.exit_code == ExitCode.KUBERNETES_UNAVAILABLE


def test_a_refusal_is_a_client_error_with_the_servers_message() -> None:
    e = ApiException(status=403, reason="Forbidden")
    e.body = '{"message": "datauploads.velero.io \\"b\\" is forbidden"}'
    error = api_error(e, "update DataUpload b")
    assert isinstance(error, CRClientError) and "forbidden" in str(error) and error.exit_code == ExitCode.FAILED


def test_an_unreachable_api_server_is_a_kubernetes_outage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:1'}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\nusers: [{name: u, user: {}}]\n"
    )
    load = status.config.load_kube_config
    monkeypatch.setattr(status.config, "load_kube_config", lambda: load(config_file=str(kubeconfig)))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    cr = CRStatus("DataUpload", "velero", "b")
    cr._api.api_client.configuration.retries = 0
    with pytest.raises(KubernetesUnavailableError) as info:
        cr.get()
    assert info.value.exit_code == ExitCode.KUBERNETES_UNAVAILABLE


def test_the_movers_start_decision_refuses_any_phase_but_accepted_or_prepared() -> None:
    from jobs.errors import MoverError
    from jobs.kube import decisions

    start = decisions.start("node-a")
    assert start({"status": {"phase": "Prepared"}})["phase"] == "InProgress"
    assert start({"status": {"phase": "Accepted"}})["node"] == "node-a"
    with pytest.raises(MoverError, match="InProgress"):
        start({"status": {"phase": "InProgress"}})
    assert decisions.failed("boom")({})["message"] == "boom"
