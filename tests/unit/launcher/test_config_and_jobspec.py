"""Unit tests of the launcher's pure parts: ConfigMap validation and the Job/RBAC builders."""

from __future__ import annotations

import json

import pytest

from jobs.contract import (
    BLOCK_DEVICE_PATH,
    ENV_PARENT_SNAPSHOT,
    ENV_REPOSITORY,
    ENV_SNAPSHOT_ID,
    ENV_TAGS,
    FILESYSTEM_MOUNT_PATH,
    MAX_NAME_LENGTH,
    job_name,
)
from launcher.config import ConfigurationError, StorageLocation, load_config, parse_duration
from launcher.exposure import LocationError, location_from_bsl
from launcher.jobspec import build_job, build_rbac, repository_url
from launcher.phases import validate_spec

DU = {
    "apiVersion": "velero.io/v2alpha1",
    "kind": "DataUpload",
    "metadata": {
        "name": "backup-1-abcde",
        "namespace": "snapmover",
        "uid": "uid-1",
        "labels": {"velero.io/backup-name": "backup-1", "velero.io/async-operation-id": "du-x.y"},
    },
    "spec": {
        "snapshotType": "CSI",
        "csiSnapshot": {"volumeSnapshot": "vs", "storageClass": "sc"},
        "sourcePVC": "data",
        "sourceNamespace": "app",
        "datamover": "snapmover",
        "backupStorageLocation": "default",
        "operationTimeout": "10m0s",
        "dataMoverConfig": {"ParallelFilesUpload": "3"},
    },
}
DD = {
    "apiVersion": "velero.io/v2alpha1",
    "kind": "DataDownload",
    "metadata": {"name": "restore-1-xyz", "namespace": "snapmover", "uid": "uid-2"},
    "spec": {
        "targetVolume": {"pvc": "data", "pv": "", "namespace": "app"},
        "backupStorageLocation": "default",
        "datamover": "snapmover",
        "snapshotID": "abc123",
        "sourceNamespace": "app",
        "operationTimeout": "1m",
    },
}
S3 = StorageLocation(
    name="default",
    provider="aws",
    bucket="b",
    prefix="cluster-1",
    region="eu-west-1",
    s3_url="http://minio:9000",
    path_style=True,
    credential_secret="cloud-credentials",
)
FS = StorageLocation(name="fs", provider="filesystem", pvc="repo-pvc")


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("10m0s", 600), ("1h30m", 5400), ("45s", 45), ("90", 90)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, "x") == seconds


@pytest.mark.parametrize("text", ["", "soon", "10 minutes", "m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_duration(text, "prepareTimeout")


def test_config_defaults_and_values() -> None:
    cfg = load_config(
        {
            "maxConcurrentJobs": "3",
            "prepareTimeout": "5m",
            "restoreIgnoreDelayBinding": "true",
            "storageLocations": json.dumps({"fs": {"provider": "filesystem", "pvc": "p"}}),
        },
        "ns",
    )
    assert cfg.max_concurrent_jobs == 3 and cfg.prepare_timeout_seconds == 300 and cfg.restore_ignore_delay_binding
    assert cfg.storage_locations["fs"].pvc == "p" and cfg.datamover_name == "snapmover"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"maxConcurentJobs": "3"}, "unknown key"),
        ({"maxConcurrentJobs": "-1"}, "maxConcurrentJobs"),
        ({"maxConcurrentJobs": "many"}, "maxConcurrentJobs"),
        ({"jobResources": "{"}, "jobResources"),
        ({"tolerations": "{}"}, "tolerations"),
        ({"logFormat": "xml"}, "logFormat"),
        ({"storageLocations": json.dumps({"x": {"provider": "gcs"}})}, "provider"),
        ({"storageLocations": json.dumps({"x": {"provider": "aws"}})}, "bucket"),
        ({"restoreIgnoreDelayBinding": "yes"}, "restoreIgnoreDelayBinding"),
    ],
)
def test_bad_config_names_the_key(data: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        load_config(data, "ns")


def test_repository_urls() -> None:
    assert repository_url(S3, "app") == (
        "s3://b/cluster-1/snapmover/app?endpoint=http://minio:9000&region=eu-west-1&path_style=true"
    )
    assert repository_url(FS, "app") == "file:///repository/snapmover/app"


def env_of(job: dict[str, object]) -> dict[str, object]:
    container = job["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_upload_job_is_hardened_and_carries_the_contract() -> None:
    cfg = load_config({"image": "reg/snapmover:1", "jobDeadlineSeconds": "600"}, "snapmover")
    job = build_job(
        DU, cfg, claim="pvc-x", volume_mode="Filesystem", location=S3, source_namespace="app", source_pvc="data"
    )
    assert job["metadata"]["name"] == job_name("DataUpload", "backup-1-abcde")
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    spec = job["spec"]
    assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] == 600
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["snapmover", "job", "upload"] and container["image"] == "reg/snapmover:1"
    sc = container["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["DAC_READ_SEARCH"]}
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[FILESYSTEM_MOUNT_PATH]["readOnly"] is True
    env = env_of(job)
    assert str(env[ENV_REPOSITORY]).startswith("s3://b/cluster-1/snapmover/app")
    assert json.loads(str(env[ENV_TAGS])) == {
        "velero.io/backup-name": "backup-1",
        "velero.io/async-operation-id": "du-x.y",
    }
    assert "AWS_SHARED_CREDENTIALS_FILE" in env
    assert not any("secret" in str(v).lower() and "key" in str(v).lower() for v in env.values())


@pytest.mark.parametrize(("parent", "expected"), [(None, None), ("", None), ("none", "none"), ("a" * 64, "a" * 64)])
def test_upload_job_passes_spec_parent_snapshot(parent: str | None, expected: str | None) -> None:
    cr = json.loads(json.dumps(DU))
    if parent is not None:
        cr["spec"]["parentSnapshot"] = parent
    cfg = load_config({}, "snapmover")
    job = build_job(cr, cfg, claim="pvc-x", volume_mode="Filesystem", location=S3, source_namespace="app")
    assert env_of(job).get(ENV_PARENT_SNAPSHOT) == expected
    dd = json.loads(json.dumps(DD))
    dd["spec"]["parentSnapshot"] = "none"  # not a DataDownload field: never passed
    job = build_job(dd, cfg, claim="pvc-y", volume_mode="Filesystem", location=FS, source_namespace="app")
    assert ENV_PARENT_SNAPSHOT not in env_of(job)


def test_download_job_for_a_block_volume() -> None:
    cfg = load_config({}, "snapmover")
    job = build_job(DD, cfg, claim="pvc-y", volume_mode="Block", location=FS, source_namespace="app")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][-1] == "download"
    assert container["volumeDevices"] == [{"name": "data", "devicePath": BLOCK_DEVICE_PATH}]
    assert "CHOWN" in container["securityContext"]["capabilities"]["add"]
    assert env_of(job)[ENV_SNAPSHOT_ID] == "abc123"
    assert any(
        v.get("persistentVolumeClaim", {}).get("claimName") == "repo-pvc"
        for v in job["spec"]["template"]["spec"]["volumes"]
    )


def test_rbac_is_limited_to_the_own_cr() -> None:
    sa, role, binding = build_rbac(DU, "snapmover")
    (rule,) = role["rules"]
    assert rule["resourceNames"] == ["backup-1-abcde"] and rule["resources"] == ["datauploads"]
    assert sorted(rule["verbs"]) == ["get", "patch", "update", "watch"]
    assert binding["subjects"][0]["name"] == sa["metadata"]["name"]
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == "uid-1" for o in (sa, role, binding))


@pytest.mark.parametrize("name", ["a" * 253, "Ünïcode-name", "x..y", "-lead-and-trail-"])
def test_job_names_are_valid_dns_labels(name: str) -> None:
    result = job_name("DataUpload", name)
    assert len(result) <= MAX_NAME_LENGTH and result.replace("-", "").isalnum() and result.islower()
    assert not result.endswith("-")


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"backupStorageLocation": ""}, "backupStorageLocation"),
        ({"sourcePVC": ""}, "sourcePVC"),
        ({"snapshotType": "Restic"}, "snapshotType"),
        ({"csiSnapshot": {}}, "volumeSnapshot"),
        ({"operationTimeout": "forever"}, "operationTimeout"),
    ],
)
def test_invalid_dataupload_specs(patch: dict[str, object], needle: str) -> None:
    cr = {**DU, "spec": {**DU["spec"], **patch}}  # type: ignore[dict-item]
    assert needle in validate_spec(cr)
    assert validate_spec(DU) == ""


def test_bsl_mapping_and_unsupported_provider() -> None:
    bsl = {
        "metadata": {"name": "default"},
        "spec": {
            "provider": "velero.io/aws",
            "objectStorage": {"bucket": "b", "prefix": "p"},
            "config": {"region": "r", "s3Url": "http://s3", "s3ForcePathStyle": "true"},
            "credential": {"name": "creds", "key": "cloud"},
        },
    }
    loc = location_from_bsl(bsl)
    assert (loc.bucket, loc.prefix, loc.region, loc.s3_url, loc.path_style, loc.credential_secret) == (
        "b",
        "p",
        "r",
        "http://s3",
        True,
        "creds",
    )
    with pytest.raises(LocationError, match="not supported"):
        location_from_bsl({"metadata": {"name": "g"}, "spec": {"provider": "gcp", "objectStorage": {"bucket": "b"}}})


def test_mover_retries_default_zero_and_bad_values() -> None:
    assert load_config({}, "ns").mover_retries == 2
    assert load_config({"moverRetries": "0"}, "ns").mover_retries == 0
    with pytest.raises(ConfigurationError, match="moverRetries"):
        load_config({"moverRetries": "-1"}, "ns")
    with pytest.raises(ConfigurationError, match="moverRetries"):
        load_config({"moverRetries": "two"}, "ns")
