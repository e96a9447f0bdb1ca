"""`snapmover upload --parent auto|none|ID` on a file:// repository, as the mover Job runs it for a
DataUpload's spec.parentSnapshot: auto takes the latest snapshot of the same source
namespace/PVC (by the source tags), none is a full backup that says why, an id is used as given,
an id that is not in the repository fails with exit code 6 and a message naming it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jobs.contract import TAG_SOURCE_NAMESPACE, TAG_SOURCE_PVC, ExitCode
from tests.integration import test_cli_data
from tests.integration.test_cli_data import as_json, snapmover

pytestmark = pytest.mark.integration
env = test_cli_data.env  # the fixture: an initialised file:// repository
MiB = 1024 * 1024


def pvc_tags(pvc: str) -> list[str]:
    return ["--tag", f"{TAG_SOURCE_NAMESPACE}=app", "--tag", f"{TAG_SOURCE_PVC}={pvc}"]


def upload(env: dict[str, str], source: Path, pvc: str, *parent: str) -> dict:  # type: ignore[type-arg]
    return as_json(snapmover("upload", "--source", str(source), *pvc_tags(pvc), *parent, "--json", env=env))


def volume(tmp_path: Path, name: str, size: int) -> Path:
    root = tmp_path / name
    root.mkdir()
    (root / "data.bin").write_bytes(os.urandom(size))
    return root


def test_auto_takes_the_latest_snapshot_of_the_same_pvc(env: dict[str, str], tmp_path: Path) -> None:
    a, b = volume(tmp_path, "a", 2 * MiB), volume(tmp_path, "b", MiB)
    first = upload(env, a, "a")
    assert (first["backup_mode"], first["parent_id"]) == ("full", None)
    assert "no parent found" in first["full_reason"] and "source-pvc=a" in first["full_reason"]
    upload(env, b, "b")  # the newest snapshot, but of another PVC
    second = upload(env, a, "a", "--parent", "auto")
    assert (second["backup_mode"], second["parent_id"], second["full_reason"]) == (
        "incremental",
        first["snapshot_id"],
        "",
    )
    assert second["incremental_bytes"] == 0  # nothing changed: nothing read again


def test_none_is_a_full_backup_that_says_why(env: dict[str, str], tmp_path: Path) -> None:
    a = volume(tmp_path, "a", MiB)
    upload(env, a, "a")
    full = upload(env, a, "a", "--parent", "none")
    assert (full["backup_mode"], full["parent_id"]) == ("full", None)
    assert "parent none" in full["full_reason"]
    text = snapmover("upload", "--source", str(a), *pvc_tags("a"), "--parent", "none", env=env).stdout
    assert "full backup (parent none: a full backup was asked for)" in text


def test_a_given_id_is_the_parent(env: dict[str, str], tmp_path: Path) -> None:
    a = volume(tmp_path, "a", MiB)
    first = upload(env, a, "a")
    upload(env, a, "a")
    given = upload(env, a, "a", "--parent", first["snapshot_id"])
    assert (given["backup_mode"], given["parent_id"]) == ("incremental", first["snapshot_id"])


def test_an_id_not_in_the_repository_fails_naming_it(env: dict[str, str], tmp_path: Path) -> None:
    a = volume(tmp_path, "a", MiB)
    upload(env, a, "a")
    missing = "d" * 64
    proc = snapmover(
        "upload", "--source", str(a), *pvc_tags("a"), "--parent", missing, env=env, expect=ExitCode.NOT_FOUND
    )
    assert f"parent snapshot '{missing}' is not in the repository" in proc.stderr, proc.stderr
    assert len(as_json(snapmover("snapshots", "--json", env=env))["snapshots"]) == 1  # nothing was added
