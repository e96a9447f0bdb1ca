"""`snapmover` as a user runs it (a subprocess): repo init/info/check/unlock, upload, download,
snapshots, forget, prune, with text and --json output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.unit.jobs.volume.treecompare import MiB, compare_trees, make_sample_tree, write_sparse

pytestmark = pytest.mark.integration
SNAPMOVER = str(Path(sys.executable).parent / "snapmover")
PASSWORD = "cli test password"


def snapmover(
    *args: str, env: dict[str, str], expect: int = 0, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the CLI; assert the exit code and that no traceback reached stderr."""
    proc = subprocess.run([SNAPMOVER, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == expect, f"exit {proc.returncode}: {proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc


def as_json(proc: subprocess.CompletedProcess[str]) -> dict:  # type: ignore[type-arg]
    return json.loads(proc.stdout)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    e = {k: v for k, v in os.environ.items() if not k.startswith("SNAPMOVER_")}
    e["SNAPMOVER_REPOSITORY"] = f"file://{tmp_path}/repo"
    e["SNAPMOVER_PASSWORD_FILE"] = str(password_file)
    snapmover("repo", "init", env=e)
    return e


def test_upload_download_round_trip(env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_sample_tree(src)
    up = snapmover("upload", "--source", str(src), "--tag", "app=demo", "--parallel", "2", env=env)
    snapshot_id = up.stdout.strip().splitlines()[-1]
    assert len(snapshot_id) >= 16
    assert all(c in "0123456789abcdef" for c in snapshot_id)
    listed = as_json(snapmover("snapshots", "--json", env=env))["snapshots"]
    assert [s["id"] for s in listed] == [snapshot_id]
    assert listed[0]["tags"] == {"app": "demo"}
    target = tmp_path / "restored"
    snapmover("download", "--snapshot", snapshot_id[:10], "--target", str(target), env=env)
    assert compare_trees(src, target) == []
    check = as_json(snapmover("repo", "check", "--read-data", "--json", env=env))
    assert check["ok"] is True


def test_upload_json_reports_incremental_bytes(env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(os.urandom(2 * MiB))
    first = as_json(snapmover("upload", "--source", str(src), "--json", env=env))
    assert first["incremental_bytes"] == 2 * MiB
    assert first["parent_id"] is None
    (src / "b").write_bytes(b"x" * 1000)
    second = as_json(snapmover("upload", "--source", str(src), "--json", env=env))
    assert second["parent_id"] == first["snapshot_id"]
    assert second["incremental_bytes"] == 1000
    assert second["total_bytes"] == 2 * MiB + 1000
    third = as_json(snapmover("upload", "--source", str(src), "--parent", "none", "--json", env=env))
    assert third["parent_id"] is None
    assert third["incremental_bytes"] == 0


def test_block_mode_round_trip(env: dict[str, str], tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    write_sparse(image, 20 * MiB, [(3 * MiB, os.urandom(MiB + 17))])
    up = as_json(snapmover("upload", "--source", str(image), "--mode", "block", "--json", env=env))
    out = tmp_path / "out.img"
    snapmover("download", "--snapshot", up["snapshot_id"], "--target", str(out), "--mode", "block", env=env)
    assert out.read_bytes() == image.read_bytes()
    wrong = snapmover("download", "--snapshot", up["snapshot_id"], "--target", str(tmp_path / "d"), env=env, expect=2)
    assert "--mode block" in wrong.stderr


def test_forget_by_policy_and_prune(env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    ids = []
    for _ in range(3):
        (src / "f").write_bytes(os.urandom(MiB))
        ids.append(as_json(snapmover("upload", "--source", str(src), "--tag", "k=v", "--json", env=env))["snapshot_id"])
    forgot = as_json(snapmover("forget", "--keep-last", "1", "--tag", "k=v", "--json", env=env))
    assert sorted(forgot["removed"]) == sorted(ids[:2])
    snapmover("prune", env=env)
    remaining = as_json(snapmover("snapshots", "--json", env=env))["snapshots"]
    assert [s["id"] for s in remaining] == [ids[2]]
    snapmover("forget", ids[2], env=env)
    assert as_json(snapmover("snapshots", "--json", env=env))["snapshots"] == []
    snapmover("forget", env=env, expect=2)  # neither ids nor a policy


def test_repo_info_and_unlock(env: dict[str, str]) -> None:
    info = as_json(snapmover("repo", "info", "--json", env=env))
    assert info["repository_id"]
    assert "cdc_seed" not in info["config"]
    assert "stats" in info
    unlock = as_json(snapmover("repo", "unlock", "--json", env=env))
    assert unlock["removed_locks"] == 0


def test_sigterm_cancels_upload_cleanly(env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(16):
        (src / f"f{i}").write_bytes(os.urandom(16 * MiB))
    proc = subprocess.Popen(
        [SNAPMOVER, "upload", "--source", str(src)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    locks = tmp_path / "repo" / "locks"
    deadline = time.monotonic() + 60
    while not (locks.exists() and any(locks.iterdir())) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)  # wait for the upload to hold its lock, i.e. to be under way
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 5, stderr
    assert "Traceback" not in stderr
    assert "canceled" in stderr
    assert as_json(snapmover("snapshots", "--json", env=env))["snapshots"] == []
    assert as_json(snapmover("repo", "check", "--json", env=env))["ok"] is True
    assert not any(locks.iterdir())
