"""Clouds and networks in the launcher's pure parts: the object store's CA (Velero's base64
caCert, from a BSL or the ConfigMap) reaches the mover as PEM and becomes AWS_CA_BUNDLE there;
proxies are passed in both cases; mover ServiceAccounts carry the configured annotations (IRSA,
workload identity); imagePullSecrets reach the pod; bad values name their key."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from jobs.contract import ENV_CA_CERT
from jobs.kube.commands import install_ca_bundle
from launcher.config import ConfigurationError, load_config
from launcher.exposure import LocationError, location_from_bsl
from launcher.jobspec import build_job, build_rbac
from tests.unit.launcher.test_config_and_jobspec import DU, S3

PEM = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n"
B64 = base64.b64encode(PEM.encode()).decode()


def env_of(job: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_configmap_location_ca_and_network_keys() -> None:
    cfg = load_config(
        {
            "storageLocations": json.dumps({"default": {"bucket": "b", "s3Url": "https://s3.corp", "caCert": B64}}),
            "httpsProxy": "http://proxy.corp:3128",
            "noProxy": "10.0.0.0/8,.svc",
            "moverServiceAccountAnnotations": json.dumps({"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}),
            "imagePullSecrets": '["regcred"]',
        },
        "snapmover",
    )
    loc = cfg.storage_locations["default"]
    assert loc.ca_cert == PEM
    job = build_job(DU, cfg, claim="c", volume_mode="Filesystem", location=loc, source_namespace="app")
    env = env_of(job)
    assert env[ENV_CA_CERT] == PEM
    assert env["HTTPS_PROXY"] == env["https_proxy"] == "http://proxy.corp:3128"
    assert env["NO_PROXY"] == env["no_proxy"] == "10.0.0.0/8,.svc"
    assert "HTTP_PROXY" not in env  # not configured: not passed
    assert job["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    sa, role, binding = build_rbac(DU, "snapmover", annotations=cfg.mover_service_account_annotations)
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}
    assert "annotations" not in role["metadata"] and "annotations" not in binding["metadata"]


def test_defaults_add_nothing() -> None:
    cfg = load_config({}, "snapmover")
    job = build_job(DU, cfg, claim="c", volume_mode="Filesystem", location=S3, source_namespace="app")
    env = env_of(job)
    assert not {ENV_CA_CERT, "HTTPS_PROXY", "https_proxy", "NO_PROXY"} & set(env)
    assert "imagePullSecrets" not in job["spec"]["template"]["spec"]
    assert "annotations" not in build_rbac(DU, "snapmover")[0]["metadata"]


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (
            {"storageLocations": json.dumps({"d": {"bucket": "b", "caCert": "not base64!"}})},
            "storageLocations.d.caCert",
        ),
        (
            {"storageLocations": json.dumps({"d": {"bucket": "b", "caCert": base64.b64encode(b"hi").decode()}})},
            "no PEM",
        ),
        ({"imagePullSecrets": '"regcred"'}, "imagePullSecrets"),
        ({"imagePullSecrets": "[1]"}, "imagePullSecrets"),
        ({"moverServiceAccountAnnotations": '{"a": 1}'}, "moverServiceAccountAnnotations"),
    ],
)
def test_bad_values_name_the_key(data: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        load_config(data, "snapmover")


def bsl(ca: str | None) -> dict[str, Any]:
    storage: dict[str, Any] = {"bucket": "b"}
    if ca is not None:
        storage["caCert"] = ca
    return {"metadata": {"name": "default"}, "spec": {"provider": "aws", "objectStorage": storage, "config": {}}}


def test_bsl_ca_cert() -> None:
    assert location_from_bsl(bsl(B64)).ca_cert == PEM
    assert location_from_bsl(bsl(None)).ca_cert == ""
    with pytest.raises(LocationError, match=r"BackupStorageLocation default: objectStorage\.caCert"):
        location_from_bsl(bsl("%%%"))


def test_mover_turns_the_pem_into_aws_ca_bundle(tmp_path: Path) -> None:
    environ = {ENV_CA_CERT: PEM.rstrip("\n")}
    path = install_ca_bundle(environ, str(tmp_path))
    assert path is not None and environ["AWS_CA_BUNDLE"] == path
    assert Path(path).read_text() == PEM and os.path.dirname(path) == str(tmp_path)
    untouched: dict[str, str] = {}
    assert install_ca_bundle(untouched, str(tmp_path)) is None and untouched == {}
