"""`snapmover doctor` against the real S3 test server (moto) and a file repository: every check
passes on a healthy location (with and without a repository), and each kind of breakage fails its
own check with one line naming the fix and a non-zero exit — never a traceback, never a secret."""

from __future__ import annotations

import json
import os
from pathlib import Path

import boto3
import pytest

from tests.fixtures.s3 import FAKE_CREDENTIALS
from tests.integration.test_cli_data import snapmover

pytestmark = pytest.mark.integration


def env_for(tmp_path: Path, password: str = "doctor password") -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("SNAPMOVER_", "AWS_"))}
    e.update(FAKE_CREDENTIALS)
    pw = tmp_path / f"password-{len(password)}"
    pw.write_text(password)
    e["SNAPMOVER_PASSWORD_FILE"] = str(pw)
    return e


def checks(out: str) -> dict[str, bool]:
    return {c["name"]: c["ok"] for c in json.loads(out)["checks"]}


def test_healthy_s3_location_without_and_with_a_repository(s3_url: str, tmp_path: Path) -> None:
    e = env_for(tmp_path)
    first = snapmover("doctor", "-r", s3_url, env=e)
    lines = first.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["ok"] * 3, first.stdout
    assert "the first backup creates it" in lines[-1]
    snapmover("repo", "init", "-r", s3_url, env=e)
    result = snapmover("doctor", "-r", s3_url, "--json", env=e)
    assert checks(result.stdout) == {"storage access": True, "write/read/delete": True, "repository": True}
    assert "the password opens the repository" in result.stdout
    # the probe object is gone again
    bucket = s3_url.split("/")[2]
    endpoint = s3_url.split("endpoint=")[1]
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_keys())
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys and not any("doctor-probe-" in k for k in keys)


def _keys() -> dict[str, str]:
    return {
        "aws_access_key_id": FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    }


def test_wrong_password_fails_the_repository_check(s3_url: str, tmp_path: Path) -> None:
    snapmover("repo", "init", "-r", s3_url, env=env_for(tmp_path))
    result = snapmover("doctor", "-r", s3_url, env=env_for(tmp_path, "not the password"), expect=1)
    last = result.stdout.splitlines()[-1]
    assert last.startswith("FAIL repository:") and "fix: use the password" in last
    assert "not the password" not in result.stdout + result.stderr


def test_missing_bucket_fails_storage_access(s3_server: str, tmp_path: Path) -> None:
    result = snapmover(
        "doctor", "-r", f"s3://no-such-bucket-x/repo?endpoint={s3_server}", env=env_for(tmp_path), expect=1
    )
    assert result.stdout.splitlines() == [result.stdout.splitlines()[0]]
    assert result.stdout.startswith("FAIL storage access:") and "fix: create the bucket" in result.stdout


def test_missing_credentials_fail_with_the_fix(s3_url: str, tmp_path: Path) -> None:
    e = env_for(tmp_path)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        e.pop(key)
    e["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "none")
    e["AWS_CONFIG_FILE"] = str(tmp_path / "none")
    e["AWS_EC2_METADATA_DISABLED"] = "true"  # never ask a metadata address
    result = snapmover("doctor", "-r", s3_url, env=e, expect=1)
    assert result.stdout.startswith("FAIL storage access:") and "fix: check the credentials" in result.stdout


def test_unreachable_endpoint_and_bad_url(tmp_path: Path) -> None:
    e = env_for(tmp_path)
    down = snapmover("doctor", "-r", "s3://b/repo?endpoint=http://127.0.0.1:9", env=e, expect=1, timeout=300)
    assert down.stdout.startswith("FAIL storage access:") and "fix: check the endpoint URL" in down.stdout
    bad = snapmover("doctor", "-r", "ftp://x/y", env=e, expect=1)
    assert bad.stdout.startswith("FAIL repository URL:")


def test_healthy_file_location(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    result = snapmover("doctor", "-r", f"file://{tmp_path}/repo", env=env_for(tmp_path))
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["ok"] * 3
