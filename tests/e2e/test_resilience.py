"""e2e: a mover that dies is resumed, and maintenance never fails a backup (issue #16 items 5, 2).

The mover and prune processes are signalled on the host as the kernel or a kubelet would signal
them (SIGKILL as an OOM kill or a lost node does; SIGSTOP to hold a prune mid-way), whether they
run as containers of the real node or as processes of the stand-in kubelet.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.launcher_env import LauncherEnv, launcher_env, pvc, wait_for
from tests.fixtures.cluster import ClusterHandle

pytestmark = pytest.mark.e2e

SNAPMOVER = str(Path(sys.executable).parent / "snapmover")
FILES, FILE_MIB = 64, 4  # 256 MiB of incompressible data: the backup must still run when the kill comes
FILL = f"for i in $(seq 1 {FILES}); do head -c {FILE_MIB * 1048576} /dev/urandom > /data/f$i; done"
LOCK_WAIT_SECONDS = 60  # how long a mover waits for its shared lock (jobs.engine.api.backup)


def repository(env: LauncherEnv) -> Path:
    return env.pv_path("snapmover-repository", env.ns) / "snapmover" / env.app


def cli(env: LauncherEnv, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The snapmover CLI on the host against the test's repository, with the launcher's password."""
    cli_env = {
        **os.environ,
        "SNAPMOVER_PASSWORD": env.repository_password(),
        "SNAPMOVER_REPOSITORY": f"file://{repository(env)}",
    }
    return subprocess.run([SNAPMOVER, *args], env=cli_env, capture_output=True, text=True, timeout=timeout, check=False)


def pack_bytes(repo: Path) -> int:
    """Bytes of the packs stored so far (temporary files of puts under way are hidden)."""
    data = repo / "data"
    if not data.is_dir():
        return 0
    return sum(f.stat().st_size for f in data.rglob("*") if f.is_file() and not f.name.startswith("."))


def events(env: LauncherEnv, reason: str) -> list[str]:
    out = env.kubectl(
        "get", "events", "-n", env.ns, "--field-selector", f"reason={reason}", "-o", "jsonpath={.items[*].message}|"
    )
    return [m.strip() for m in out.stdout.split("|") if m.strip()]


def restored_equals(env: LauncherEnv, snapshot_id: str, name: str, source: Path) -> None:
    """Restore ``snapshot_id`` through a DataDownload into a new PVC; its files equal ``source``'s."""
    env.apply(pvc(name, size="1Gi", selector={"velero.io/dynamic-pv-restore": f"x.{name}.y"}), env.app)
    dd = env.data_download(snapshot_id, name, operationTimeout="10m")
    status = env.wait_phase("datadownload", dd, {"Completed", "Failed"}, timeout=300)["status"]
    assert status["phase"] == "Completed", status
    target = env.pv_path(name)
    expected = {p.name: p.read_bytes() for p in source.iterdir() if p.is_file()}
    assert {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()} == expected


def test_a_mover_killed_at_60_percent_is_resumed_and_completes(velero_crds: ClusterHandle, tmp_path: Path) -> None:
    with launcher_env(velero_crds, tmp_path, {"prepareTimeout": "5m"}) as env:
        env.start_launcher()
        env.apply(pvc("data", size="1Gi"), env.app)
        env.run_pod_job("fill", FILL, "data")
        total = FILES * FILE_MIB * 1048576
        # a repository with 1 MiB packs (made by hand before the backup), so the kill lands between many
        wait_for("the repository password Secret", lambda: env.exists("secret", "snapmover-repo-credentials"))
        init = cli(env, "repo", "init", "--pack-size", "1")
        assert init.returncode == 0, init.stderr
        env.snapshot("snap", "data")
        du = env.data_upload("snap", "data", operationTimeout="10m", dataMoverConfig={"ParallelFilesUpload": "1"})
        repo = repository(env)
        _pod, pid = wait_task(env, set(), f"snapmover-du-{du}")
        deadline = time.monotonic() + 300
        while pack_bytes(repo) < 0.6 * total and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(pid, signal.SIGKILL)
        at_kill = pack_bytes(repo)
        assert not list(repo.glob("snapshots/*")), "the backup finished before it could be killed"
        assert at_kill >= 0.6 * total, at_kill

        status = env.wait_phase("dataupload", du, {"Completed", "Failed", "Canceled"}, timeout=400)["status"]
        assert status["phase"] == "Completed", status
        annotations = env.get("dataupload", du)["metadata"].get("annotations") or {}
        assert annotations.get("snapmover.io/mover-attempt") == "2", annotations
        retries = [m for m in events(env, "MoverRetry") if "attempt 1 of 3 died" in m]
        assert len(retries) == 1 and "exit code 137" in retries[0], retries
        # the second attempt found what the first stored: it stored less than half the data again
        assert status["progress"]["totalBytes"] == total
        assert status["incrementalBytes"] < total / 2, (at_kill, status["incrementalBytes"])
        check = cli(env, "repo", "check", "--read-data")
        assert check.returncode == 0, check.stdout + check.stderr
        restored_equals(env, status["snapshotID"], "restored", env.pv_path("data"))


def stop_after_lock(pid: int, locks: Path, timeout: float = 60) -> bool:
    """Step the prune in slices of ~2 ms until it holds its lock, leaving it SIGSTOPped there;
    False when it ended before (a small prune can be that quick: the caller takes the next)."""
    deadline = time.monotonic() + timeout
    try:
        os.kill(pid, signal.SIGSTOP)
        while time.monotonic() < deadline:
            if locks.is_dir() and any(not f.name.startswith(".") for f in locks.iterdir()):
                return True
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.002)
            os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return False
    raise AssertionError("the prune took no lock")


def node_task(env: LauncherEnv, seen: set[str], prefix: str) -> tuple[str, int] | None:
    """A running container of a pod named ``prefix``… on the node, straight from containerd (pod
    name, host PID): the API server reports a pod Running only after a short container may be done."""
    node = env.cluster.node
    for line in node.ctr("task", "ls").stdout.splitlines()[1:]:
        task, pid, status, *_ = line.split()
        if task in seen or status != "RUNNING":
            continue
        seen.add(task)
        info = node.ctr("containers", "info", task, check=False)
        labels = json.loads(info.stdout).get("Labels", {}) if info.returncode == 0 else {}
        pod = labels.get("io.kubernetes.pod.name", "")
        sandbox = labels.get("io.cri-containerd.kind") != "container"  # the pod's pause container
        if not sandbox and labels.get("io.kubernetes.pod.namespace") == env.ns and pod.startswith(prefix):
            return pod, int(pid)
    return None


def wait_task(env: LauncherEnv, seen: set[str], prefix: str) -> tuple[str, int]:
    """:func:`node_task`, polled fast for up to 120 s."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = node_task(env, seen, prefix)
        if found is not None:
            return found
        time.sleep(0.02)
    raise AssertionError(f"no container of a pod {prefix}... started within 120 s")


def stopped_prune(env: LauncherEnv) -> tuple[str, int]:
    """A maintenance Job's prune, SIGSTOPped once it holds the repository's exclusive lock."""
    seen: set[str] = set()
    for _ in range(5):
        pod, pid = wait_task(env, seen, "snapmover-maintain-")  # a small prune lives about a second
        if stop_after_lock(pid, repository(env) / "locks"):
            return env.get("pod", pod)["metadata"]["labels"]["job-name"], pid
    raise AssertionError("every prune ended before it could be stopped")


def test_a_backup_during_a_stopped_prune_waits_and_completes(velero_crds: ClusterHandle, tmp_path: Path) -> None:
    config = {"maintenanceInterval": "4s", "prepareTimeout": "5m"}
    with launcher_env(velero_crds, tmp_path, config) as env:
        env.start_launcher()
        env.apply(pvc("data", size="1Gi"), env.app)
        env.run_pod_job("fill", "head -c 3000000 /dev/urandom > /data/first", "data")
        env.snapshot("snap-1", "data")
        first = env.data_upload("snap-1", "data", operationTimeout="10m")
        one = env.wait_phase("dataupload", first, {"Completed", "Failed"})["status"]
        assert one["phase"] == "Completed", one
        kept_first = tmp_path / "first"
        kept_first.mkdir()
        (kept_first / "first").write_bytes((env.pv_path("data") / "first").read_bytes())

        prune_job, pid = stopped_prune(env)
        try:
            env.run_pod_job("grow", "head -c 2000000 /dev/urandom > /data/second", "data")
            env.snapshot("snap-2", "data")
            second = env.data_upload("snap-2", "data", operationTimeout="10m")
            # longer than a mover waits for its lock: a mover started now would have failed
            time.sleep(LOCK_WAIT_SECONDS + 5)
            held = env.get("dataupload", second)["status"]
            assert held["phase"] == "Accepted", held
            waits = [m for m in events(env, "Waiting") if prune_job in m]
            assert len(waits) == 1 and "is pruning repository default/" in waits[0], waits
        finally:
            os.kill(pid, signal.SIGCONT)
        two = env.wait_phase("dataupload", second, {"Completed", "Failed"}, timeout=300)["status"]
        assert two["phase"] == "Completed", two
        check = cli(env, "repo", "check", "--read-data")
        assert check.returncode == 0, check.stdout + check.stderr
        restored_equals(env, one["snapshotID"], "restored-1", kept_first)
        restored_equals(env, two["snapshotID"], "restored-2", env.pv_path("data"))
