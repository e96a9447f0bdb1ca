"""A backup killed midway (SIGKILL, as an OOM kill or a lost node does it) is resumed by the next run.

The mover makes what it uploaded findable as it goes (an index file every few packs or seconds,
``jobs/FORMAT.md`` §7), so a second run of the same backup deduplicates against the first run's
packs instead of storing them again. Real CLI processes on a ``file://`` repository; no cluster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.test_cli_data import PASSWORD, SNAPMOVER, as_json, snapmover
from tests.unit.jobs.volume.treecompare import MiB, compare_trees

pytestmark = pytest.mark.integration

FILES = 40
FILE_BYTES = 4 * MiB  # 160 MiB of incompressible data: 160 one-MiB packs
KILL_AT = 0.6


def stored_pack_bytes(repo: Path) -> int:
    """Bytes of the packs stored so far (finished objects only; temporary files are hidden)."""
    data = repo / "data"
    if not data.is_dir():
        return 0
    return sum(f.stat().st_size for f in data.rglob("*") if f.is_file() and not f.name.startswith("."))


def kill_when_stored(proc: subprocess.Popen[bytes], repo: Path, threshold: int, timeout: float = 300) -> int:
    """SIGKILL ``proc`` once ``threshold`` bytes of packs are stored; the bytes stored at the kill."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stored = stored_pack_bytes(repo)
        if stored >= threshold or proc.poll() is not None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(60)
            return stored
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"the backup stored only {stored_pack_bytes(repo)} bytes within {timeout}s")


def test_a_killed_backup_is_resumed_without_storing_its_data_again(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(FILES):
        (src / f"f{i:02}.bin").write_bytes(os.urandom(FILE_BYTES))
    total = FILES * FILE_BYTES
    repo = tmp_path / "repo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPMOVER_")}
    env |= {"SNAPMOVER_REPOSITORY": f"file://{repo}", "SNAPMOVER_PASSWORD": PASSWORD}
    # 1 MiB packs, so the kill lands between many of them
    snapmover("repo", "init", "--pack-size", "1", env=env)

    first = subprocess.Popen(
        [SNAPMOVER, "upload", "--source", str(src), "--parallel", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    at_kill = kill_when_stored(first, repo, int(KILL_AT * total))
    assert first.returncode == -signal.SIGKILL, "the first backup finished before it could be killed"
    assert not any((repo / "snapshots").glob("*")), "the killed backup wrote its snapshot"
    assert KILL_AT * total <= at_kill < total, at_kill

    second = as_json(snapmover("upload", "--source", str(src), "--json", "--parallel", "2", env=env, timeout=300))
    assert second["total_bytes"] == total
    # what the killed run stored is found and deduplicated: the resumed run stores well under half
    print(f"stored at the kill {at_kill}, resumed run stored {second['stored_bytes']} of {total}")
    assert second["stored_bytes"] < total / 2, json.dumps(second)
    assert second["incremental_bytes"] < total / 2, json.dumps(second)

    check = as_json(snapmover("repo", "check", "--read-data", "--json", env=env, timeout=300))
    assert check["ok"] is True, check
    target = tmp_path / "restored"
    snapmover("download", "--snapshot", second["snapshot_id"], "--target", str(target), env=env, timeout=300)
    assert compare_trees(src, target) == []
