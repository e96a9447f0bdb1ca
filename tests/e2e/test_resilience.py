"""e2e: a mover that dies is resumed, and maintenance never fails a backup (issue #16 items 5, 2).

The mover and prune processes, containers of the real node, are signalled on the host as the
kernel or a kubelet would signal them (SIGKILL as an OOM kill or a lost node does; SIGSTOP to hold
a prune mid-way). A mover killed in every attempt shows the retries are bounded
(``moverRetries``). Each test records its figures for ``tests/reliability/RESULTS.md``
(``tests.figures``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.launcher_env import LauncherEnv, launcher_env, pvc, wait_for
from tests.figures import Figures
from tests.fixtures.cluster import ClusterHandle

pytestmark = pytest.mark.e2e

SNAPMOVER = str(Path(sys.executable).parent / "snapmover")
FILES, FILE_MIB = 64, 4  # 256 MiB of incompressible data: the backup must still run when the kill comes
FILL = f"for i in $(seq 1 {FILES}); do head -c {FILE_MIB * 1048576} /dev/urandom > /data/f$i; done"
FILL_BIG = "head -c 64000000 /dev/urandom > /data/big"  # killed at once: the size does not matter
FILL_FIRST = "head -c 3000000 /dev/urandom > /data/first"
LOCK_WAIT_SECONDS = 60  # how long a mover waits for its shared lock (jobs.engine.api.backup)
FINAL = {"Completed", "Failed", "Canceled"}


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


@contextmanager
def filled_env(cluster: ClusterHandle, tmp_path: Path, size: str, script: str, **config: str) -> Iterator[LauncherEnv]:
    """A running launcher (Jobs deleted once final) and PVC data of ``size`` filled by ``script``."""
    with launcher_env(cluster, tmp_path, {"prepareTimeout": "5m", "jobRetentionSeconds": "0", **config}) as env:
        env.start_launcher()
        env.apply(pvc("data", size=size), env.app)
        env.run_pod_job("fill", script, "data")
        yield env


def upload(env: LauncherEnv, snapshot: str, **spec: Any) -> str:
    """A DataUpload of a new VolumeSnapshot ``snapshot`` of PVC data."""
    env.snapshot(snapshot, "data")
    return env.data_upload(snapshot, "data", operationTimeout="10m", **spec)


def leftovers(env: LauncherEnv, du: str) -> list[str]:
    """What the launcher made for DataUpload ``du`` that still exists once it is final (Jobs and
    their pods are kept ``jobRetentionSeconds``; the tests set 0) and the finalizer of a Failed
    one, waited for briefly."""
    uid = env.get("dataupload", du)["metadata"]["uid"]

    def found() -> list[str]:
        names = [
            f"{kind}/{n}"
            for kind in ("jobs", "pods", "pvc", "volumesnapshots", "serviceaccounts")
            for n in env.kubectl(
                "get", kind, "-n", env.ns, "-l", f"snapmover.io/owner-uid={uid}", "-o", "name"
            ).stdout.split()
        ]
        cr = env.get("dataupload", du)
        # a Completed DataUpload keeps its finalizer until it is deleted (that forgets its snapshot)
        kept = (cr.get("status") or {}).get("phase") == "Completed"
        return names + ([] if kept else list(cr["metadata"].get("finalizers") or []))

    try:
        wait_for("the DataUpload's objects to be cleaned up", lambda: not found(), timeout=90)
    except AssertionError:
        return found()
    return []


def test_a_mover_killed_at_60_percent_is_resumed_and_completes(
    velero_crds: ClusterHandle, tmp_path: Path, figures: Figures
) -> None:
    with filled_env(velero_crds, tmp_path, "1Gi", FILL) as env:
        total = FILES * FILE_MIB * 1048576
        # a repository with 1 MiB packs (made by hand before the backup), so the kill lands between many
        wait_for("the repository password Secret", lambda: env.exists("secret", "snapmover-repo-credentials"))
        init = cli(env, "repo", "init", "--pack-size", "1")
        assert init.returncode == 0, init.stderr
        du = upload(env, "snap", dataMoverConfig={"ParallelFilesUpload": "1"})
        repo = repository(env)
        _pod, pid = env.wait_task(set(), f"snapmover-du-{du}")
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
        leaks = leftovers(env, du)
        assert not leaks, leaks
    figures.add(
        "resume (real node)",
        f"DataUpload of {total // 2**20} MiB, mover container SIGKILLed at >= 60 % of its packs: CR phase; attempts; "
        "MoverRetry Event; stored at the kill; new data stored by attempt 2; check --read-data; restore; left behind",
        f"{status['phase']}; {annotations.get('snapmover.io/mover-attempt')} (moverRetries 2); {retries[0]}; "
        f"{at_kill / 2**20:.0f} MiB ({at_kill / total:.0%}); {status['incrementalBytes'] / 2**20:.0f} MiB "
        f"({status['incrementalBytes'] / total:.0%}, target < 50 %); passed; identical; nothing",
    )


def test_a_mover_killed_in_every_attempt_fails_after_mover_retries(
    velero_crds: ClusterHandle, tmp_path: Path, figures: Figures
) -> None:
    with filled_env(velero_crds, tmp_path, "256Mi", FILL_BIG, moverRetries="1") as env:
        du = upload(env, "snap")
        seen: set[str] = set()
        pods = []
        for _attempt in (1, 2):  # each attempt's mover is killed as soon as its container runs
            pod, pid = env.wait_task(seen, f"snapmover-du-{du}")
            os.kill(pid, signal.SIGKILL)
            pods.append(pod)
        status = env.wait_phase("dataupload", du, FINAL, timeout=300)["status"]
        assert status["phase"] == "Failed", status
        assert "the mover died in each of 2 attempt(s) (moverRetries 1)" in status["message"], status
        assert "exit code 137" in status["message"], status
        annotations = env.get("dataupload", du)["metadata"].get("annotations") or {}
        assert annotations.get("snapmover.io/mover-attempt") == "2", annotations
        retries = events(env, "MoverRetry")
        assert len(retries) == 1 and "attempt 1 of 2 died" in retries[0], retries
        failed = [m for m in events(env, "MoverFailed") if "died in each of 2" in m]
        assert len(failed) == 1, events(env, "MoverFailed")
        assert len(set(pods)) == 2, pods
        time.sleep(10)  # a third attempt would start within seconds of the second's death
        assert env.node_task(seen, f"snapmover-du-{du}") is None, "a third mover ran"
        leaks = leftovers(env, du)
        assert not leaks, leaks
        stale_locks = [f.name for f in (repository(env) / "locks").glob("*") if not f.name.startswith(".")]
    figures.add(
        "retry bound (real node)",
        "DataUpload whose mover is SIGKILLed in every attempt (moverRetries 1): CR phase: message; mover pods; "
        "MoverRetry Events; left behind; repository lock files left",
        f"{status['phase']}: {status['message'][:300]}; {len(set(pods))}; {len(retries)}; nothing; {len(stale_locks)}",
    )


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


def stopped_prune(env: LauncherEnv) -> tuple[str, int]:
    """A maintenance Job's prune, SIGSTOPped once it holds the repository's exclusive lock."""
    seen: set[str] = set()
    for _ in range(5):
        pod, pid = env.wait_task(seen, "snapmover-maintain-")  # a small prune lives about a second
        if stop_after_lock(pid, repository(env) / "locks"):
            return env.get("pod", pod)["metadata"]["labels"]["job-name"], pid
    raise AssertionError("every prune ended before it could be stopped")


def test_a_backup_during_a_stopped_prune_waits_and_completes(
    velero_crds: ClusterHandle, tmp_path: Path, figures: Figures
) -> None:
    with filled_env(velero_crds, tmp_path, "1Gi", FILL_FIRST, maintenanceInterval="4s") as env:
        first = upload(env, "snap-1")
        one = env.wait_phase("dataupload", first, {"Completed", "Failed"})["status"]
        assert one["phase"] == "Completed", one
        kept_first = tmp_path / "first"
        kept_first.mkdir()
        (kept_first / "first").write_bytes((env.pv_path("data") / "first").read_bytes())

        prune_job, pid = stopped_prune(env)
        try:
            env.run_pod_job("grow", "head -c 2000000 /dev/urandom > /data/second", "data")
            second = upload(env, "snap-2")
            # longer than a mover waits for its lock: a mover started now would have failed
            time.sleep(LOCK_WAIT_SECONDS + 5)
            held = env.get("dataupload", second)["status"]
            assert held["phase"] == "Accepted", held
            waits = [m for m in events(env, "Waiting") if prune_job in m]
            assert len(waits) == 1 and "is pruning repository default/" in waits[0], waits
        finally:
            os.kill(pid, signal.SIGCONT)
        resumed = time.monotonic()
        two = env.wait_phase("dataupload", second, {"Completed", "Failed"}, timeout=300)["status"]
        after = time.monotonic() - resumed
        assert two["phase"] == "Completed", two
        check = cli(env, "repo", "check", "--read-data")
        assert check.returncode == 0, check.stdout + check.stderr
        restored_equals(env, one["snapshotID"], "restored-1", kept_first)
        restored_equals(env, two["snapshotID"], "restored-2", env.pv_path("data"))
        leaks = leftovers(env, first) + leftovers(env, second)
        assert not leaks, leaks
    figures.add(
        "prune hold (real node)",
        f"DataUpload created while a prune is SIGSTOPped holding the exclusive lock: phase after "
        f"{LOCK_WAIT_SECONDS + 5} s (a mover waits {LOCK_WAIT_SECONDS} s for its lock); Waiting Event; final phase; "
        "from SIGCONT to Completed; check --read-data; both snapshots restored; left behind",
        f"{held['phase']}; {waits[0]}; {two['phase']}; {after:.0f} s; passed; identical; nothing",
    )
