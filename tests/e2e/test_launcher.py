"""e2e: the launcher drives DataUploads/DataDownloads to the end on a real API server, with kubectl."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.e2e.launcher_env import LauncherEnv, launcher_env, pvc, wait_for
from tests.fixtures.cluster import ClusterHandle

pytestmark = pytest.mark.e2e

FILL = (
    "mkdir -p /data/dir/sub /data/empty && echo hello > /data/dir/hello.txt && "
    "head -c 3000000 /dev/urandom > /data/dir/sub/random.bin && chmod 4750 /data/dir/hello.txt && "
    "ln -s dir/hello.txt /data/link && seq 1 20000 > /data/numbers.txt && "
    "chown 1234:5678 /data/numbers.txt && dd if=/dev/urandom of=/data/sparse bs=4096 count=1 seek=1000 2>/dev/null"
)


def tree_signature(root: Path) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            data = (
                path.read_bytes()
                if path.is_file() and not path.is_symlink()
                else os.readlink(path)
                if path.is_symlink()
                else b""
            )
            out[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, data)
    return out


def test_backup_restore_round_trip_with_kubectl(env: LauncherEnv) -> None:
    env.apply(pvc("data"), env.app)
    env.run_pod_job("fill", FILL, "data")
    env.snapshot("snap-1", "data")
    du = env.data_upload("snap-1", "data")
    done = env.wait_phase("dataupload", du, {"Completed", "Failed"})
    assert done["status"]["phase"] == "Completed", done["status"].get("message")
    status = done["status"]
    assert len(status["snapshotID"]) == 64 and status["progress"]["bytesDone"] == status["progress"]["totalBytes"] > 0
    assert status["incrementalBytes"] > 3_000_000 and status["dataMoverResult"]["repository"]
    assert status["startTimestamp"] and status["completionTimestamp"] and status["node"] == "node-1"
    table = env.kubectl("get", "datauploads", "-n", env.ns).stdout
    assert du in table and "Completed" in table and str(status["progress"]["totalBytes"]) in table
    logs = env.kubectl("logs", "-n", env.ns, f"job/snapmover-du-{du}").stdout
    assert "backup complete" in logs and "progress" in logs
    describe = env.kubectl("describe", "dataupload", "-n", env.ns, du).stdout
    # the node in an Event: the launcher's Prepared note, or — when the mover wrote InProgress
    # before the launcher saw its pod Running (a real kubelet's status can lag) — MoverStarted
    assert "Accepted" in describe
    assert f"mover Job snapmover-du-{du} runs on node" in describe or "the mover started the backup on node" in describe
    # cleanup: snapshot taken over, intermediate objects gone (the mover's ServiceAccount with its
    # PVC, by the garbage collector), the finalizer kept so that deleting the CR forgets the snapshot
    wait_for(
        "cleanup",
        lambda: not env.exists("pvc", f"snapmover-du-{du}") and not env.exists("sa", f"snapmover-du-{du}"),
    )
    assert "snapmover.io/cleanup" in (env.get("dataupload", du)["metadata"].get("finalizers") or [])
    assert not env.exists("volumesnapshot", "snap-1", env.app)
    assert not env.exists("volumesnapshot", f"snapmover-du-{du}")

    # second backup of the same PVC is incremental (parent found by source namespace/PVC tags)
    env.run_pod_job("touch", "echo more >> /data/numbers.txt", "data")
    env.snapshot("snap-2", "data")
    du2 = env.data_upload("snap-2", "data")
    second = env.wait_phase("dataupload", du2, {"Completed", "Failed"})["status"]
    assert second["phase"] == "Completed", second.get("message")
    assert second["dataMoverResult"]["parent"] == status["snapshotID"]
    assert second["incrementalBytes"] < 500_000

    # restore into a PVC shaped as Velero creates it (selector keeps the provisioner away)
    selector = {"velero.io/dynamic-pv-restore": f"{env.app}.data.abcde"}
    env.apply(pvc("restored", selector=selector), env.app)
    dd = env.data_download(status["snapshotID"], "restored")
    finished = env.wait_phase("datadownload", dd, {"Completed", "Failed"})["status"]
    assert finished["phase"] == "Completed", finished.get("message")
    target = env.get("pvc", "restored", env.app)
    assert target["status"]["phase"] == "Bound"
    pv = env.get("pv", target["spec"]["volumeName"])
    assert pv["metadata"]["labels"]["velero.io/dynamic-pv-restore"] == selector["velero.io/dynamic-pv-restore"]
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    restored = tree_signature(Path(pv["spec"]["hostPath"]["path"]))
    # the first snapshot predates the append: compare with a fresh copy of that state
    source = tree_signature(env.pv_path("data"))
    assert set(restored) == set(source)
    for name, sig in restored.items():
        if name != "numbers.txt":
            assert sig == source[name], name
    assert restored["numbers.txt"][1:3] == (1234, 5678)
    assert (Path(pv["spec"]["hostPath"]["path"]) / "sparse").stat().st_blocks * 512 < 64 * 1024


def test_block_volume_round_trip(env: LauncherEnv) -> None:
    env.apply(pvc("disk", mode="Block", size="32Mi"), env.app)
    env.run_pod_job(
        "fill",
        "head -c 1048576 /dev/urandom > /tmp/r && dd if=/tmp/r of=/dev/e2e-disk bs=1M seek=5 "
        "conv=notrunc 2>/dev/null && sync",
        "disk",
        block=True,
    )
    env.snapshot("disk-snap", "disk")
    du = env.data_upload("disk-snap", "disk")
    status = env.wait_phase("dataupload", du, {"Completed", "Failed"})["status"]
    assert status["phase"] == "Completed", status.get("message")
    assert status["progress"]["totalBytes"] == 32 * 1024 * 1024
    env.apply(
        pvc("disk-restored", mode="Block", size="32Mi", selector={"velero.io/dynamic-pv-restore": "x.disk.y"}), env.app
    )
    dd = env.data_download(status["snapshotID"], "disk-restored")
    assert env.wait_phase("datadownload", dd, {"Completed", "Failed"})["status"]["phase"] == "Completed"
    assert env.pv_path("disk-restored").read_bytes() == env.pv_path("disk").read_bytes()


def test_failures_name_the_problem_and_other_movers_are_untouched(env: LauncherEnv) -> None:
    env.apply(pvc("data"), env.app)
    env.snapshot("never", "data", annotations={"snapmover-test.io/never-ready": "true"})
    slow = env.data_upload("never", "data", operationTimeout="3s")
    missing_bsl = env.data_upload("never", "data", backupStorageLocation="nowhere")
    missing_vs = env.data_upload("no-such-snapshot", "data", operationTimeout="3s")
    foreign = env.data_upload("never", "data", datamover="velero")
    bad_timeout = env.data_upload("never", "data", operationTimeout="soon")
    msg = {
        name: env.wait_phase("dataupload", name, {"Failed", "Completed", "Canceled"})["status"]["message"]
        for name in (slow, missing_bsl, missing_vs, bad_timeout)
    }
    assert "did not become ReadyToUse" in msg[slow] and "never" in msg[slow]
    assert "storage location 'nowhere' not found" in msg[missing_bsl]
    assert "no-such-snapshot" in msg[missing_vs] and "does not exist" in msg[missing_vs]
    assert "operationTimeout" in msg[bad_timeout]
    assert "status" not in env.get("dataupload", foreign)
    assert env.procs[0].poll() is None  # the launcher never crashed


def test_cancel_before_the_mover_runs_leaves_nothing_behind(env: LauncherEnv) -> None:
    env.apply(pvc("data"), env.app)
    env.snapshot("never", "data", annotations={"snapmover-test.io/never-ready": "true"})
    du = env.data_upload("never", "data", operationTimeout="10m")
    env.wait_phase("dataupload", du, {"Accepted"})
    env.kubectl("patch", "dataupload", du, "-n", env.ns, "--type=merge", "-p", json.dumps({"spec": {"cancel": True}}))
    status = env.wait_phase("dataupload", du, {"Canceled", "Failed", "Completed"})["status"]
    assert status["phase"] == "Canceled"
    wait_for("finalizer removed", lambda: not env.get("dataupload", du)["metadata"].get("finalizers"))
    leftovers = env.kubectl(
        "get", "jobs,pvc,sa,volumesnapshots", "-n", env.ns, "-l", "app.kubernetes.io/name=snapmover", "-o", "name"
    ).stdout
    assert leftovers.strip() == ""


def upload_of_one_file(env: LauncherEnv) -> str:
    """A DataUpload of a new PVC ``data`` holding one small file, snapshotted as ``snap``."""
    env.apply(pvc("data"), env.app)
    env.run_pod_job("fill", "echo x > /data/x", "data")
    env.snapshot("snap", "data")
    return env.data_upload("snap", "data")


@pytest.mark.parametrize("config", [{"image": "invalid.example/snapmover:none", "podStartTimeout": "20s"}])
def test_pod_that_cannot_start_fails_and_the_mover_role_is_least_privilege(
    velero_crds: ClusterHandle, tmp_path: Path, config: dict[str, str]
) -> None:
    with launcher_env(velero_crds, tmp_path, config) as env:
        env.start_launcher()
        du = upload_of_one_file(env)
        sa = f"system:serviceaccount:{env.ns}:snapmover-du-{du}"
        wait_for("mover ServiceAccount", lambda: env.exists("sa", f"snapmover-du-{du}"))

        def can(verb: str, what: str) -> str:
            return str(env.kubectl("auth", "can-i", verb, what, "-n", env.ns, f"--as={sa}", check=False).stdout.strip())

        assert can("update", f"datauploads.velero.io/{du}") == "yes"
        assert can("get", f"datauploads.velero.io/{du}") == "yes"
        assert can("update", "datauploads.velero.io/someone-else") == "no"
        assert can("list", "datauploads.velero.io") == "no"
        assert can("get", "secrets") == "no"
        status = env.wait_phase("dataupload", du, {"Failed", "Completed"})["status"]
        assert status["phase"] == "Failed" and "cannot start" in status["message"]
        # a kubelet reports the failed pull first (ErrImagePull), then its back-off (ImagePullBackOff)
        assert "invalid.example/snapmover:none" in status["message"]
        assert "ErrImagePull" in status["message"] or "ImagePullBackOff" in status["message"]
        assert env.procs[0].poll() is None


def test_launcher_restart_adopts_running_work(env: LauncherEnv) -> None:
    env.apply(pvc("data"), env.app)
    env.run_pod_job("fill", "head -c 20000000 /dev/urandom > /data/big", "data")
    env.snapshot("snap", "data")
    du = env.data_upload("snap", "data")
    env.wait_phase("dataupload", du, {"Prepared", "InProgress", "Completed"})
    env.procs[0].kill()
    env.procs[0].wait(10)
    env.start_launcher("launcher-b")
    status = env.wait_phase("dataupload", du, {"Completed", "Failed"})["status"]
    assert status["phase"] == "Completed", status.get("message")
    pods = env.kubectl("get", "pods", "-n", env.ns, "-l", f"snapmover.io/owner-name={du}", "-o", "name").stdout.split()
    assert len(pods) == 1  # never run twice


def test_concurrency_limit_and_metrics(velero_crds: ClusterHandle, tmp_path: Path) -> None:
    limits = {"maxConcurrentJobs": "3", "maxJobsPerNode": "3", "prepareQueueLength": "2"}
    with launcher_env(velero_crds, tmp_path, limits) as env:
        env.start_launcher()
        env.apply(pvc("data"), env.app)
        env.run_pod_job("fill", "echo small > /data/file", "data")
        names = []
        for i in range(20):
            env.snapshot(f"snap-{i}", "data")
        for i in range(20):
            names.append(env.data_upload(f"snap-{i}", "data"))
        most = most_preparing = 0

        def all_done() -> bool:
            nonlocal most, most_preparing
            # mover Jobs only: a scheduled prune Job (after 60 s on a loaded machine) is not limited by these
            jobs = env.kubectl(
                "get", "jobs", "-n", env.ns, "-l", "snapmover.io/role", "-o", "jsonpath={.items[*].status.active}"
            )
            active = jobs.stdout.split()
            most = max(most, sum(int(a) for a in active))
            phases = env.kubectl("get", "datauploads", "-n", env.ns, "-o", "jsonpath={.items[*].status.phase}").stdout
            most_preparing = max(most_preparing, phases.split().count("Accepted"))
            return phases.split().count("Completed") == 20

        wait_for("20 completed uploads", all_done, timeout=400)
        assert 1 <= most <= 3
        assert 1 <= most_preparing <= 2  # the prepare queue holds the rest in New
        port = int(wait_for("metrics port", lambda: re_port(env.launcher_log())))
        import urllib.request

        def completed_metric() -> bool:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            return 'snapmover_crs{kind="DataUpload",phase="Completed"} 20.0' in body

        wait_for("metrics report 20 completed", completed_metric, timeout=30)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "snapmover_phase_transitions_total" in body and "snapmover_queue_depth" in body
        moved = [
            line for line in body.splitlines() if line.startswith('snapmover_moved_bytes_total{kind="DataUpload"}')
        ]
        assert moved and float(moved[0].split()[-1]) >= 20 * len("small\n")
        # the series the monitoring kit's alerts use, derived from the CRs the launcher watched
        assert 'snapmover_results_total{kind="DataUpload",phase="Completed"} 20.0' in body
        assert "snapmover_last_successful_backup_timestamp_seconds{" in body
        assert "snapmover_leader 1.0" in body
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read() == b"ok\n"


def re_port(log: str) -> str | None:
    import re

    m = re.search(r"metrics on :(\d+)", log)
    return m.group(1) if m else None


def test_only_the_leader_acts_and_hands_over(velero_crds: ClusterHandle, tmp_path: Path) -> None:
    with launcher_env(velero_crds, tmp_path) as env:
        first = env.start_launcher("launcher-a")
        wait_for("a leads", lambda: "became the leader" in env.launcher_log("launcher-a"))
        env.start_launcher("launcher-b")
        env.apply(pvc("data"), env.app)
        env.run_pod_job("fill", "echo data > /data/file", "data")
        env.snapshot("snap-a", "data")
        du = env.data_upload("snap-a", "data")
        assert env.wait_phase("dataupload", du, {"Completed", "Failed"})["status"]["phase"] == "Completed"
        assert "became the leader" not in env.launcher_log("launcher-b")
        assert du not in env.launcher_log("launcher-b")
        first.kill()
        first.wait(10)
        wait_for("b takes over", lambda: "became the leader" in env.launcher_log("launcher-b"), timeout=40)
        env.snapshot("snap-b", "data")
        du2 = env.data_upload("snap-b", "data")
        assert env.wait_phase("dataupload", du2, {"Completed", "Failed"})["status"]["phase"] == "Completed"
        lease = env.get("lease", "snapmover-launcher")
        assert lease["spec"]["holderIdentity"] == "launcher-b"


def test_missing_password_secret_and_unreachable_storage_fail_clearly(env: LauncherEnv) -> None:
    env.apply(pvc("data"), env.app)
    env.run_pod_job("fill", "echo x > /data/x", "data")
    # an S3 location whose endpoint refuses connections
    env.kubectl(
        "create",
        "secret",
        "generic",
        "cloud-credentials",
        "-n",
        env.ns,
        "--from-literal=cloud=[default]\naws_access_key_id = k\naws_secret_access_key = s\n",
    )
    env.apply(
        {
            "apiVersion": "velero.io/v1",
            "kind": "BackupStorageLocation",
            "metadata": {"name": "offline"},
            "spec": {
                "provider": "aws",
                "objectStorage": {"bucket": "b"},
                "config": {"region": "us-east-1", "s3Url": "http://127.0.0.1:9", "s3ForcePathStyle": "true"},
                "credential": {"name": "cloud-credentials", "key": "cloud"},
            },
        }
    )
    env.snapshot("snap-offline", "data")
    offline = env.data_upload("snap-offline", "data", backupStorageLocation="offline")
    status = env.wait_phase("dataupload", offline, {"Failed", "Completed"}, timeout=300)["status"]
    assert status["phase"] == "Failed" and "127.0.0.1:9" in status["message"], status
    assert "reach" in status["message"]
    assert "aws_secret_access_key" not in json.dumps(status) and "= s" not in status["message"]
    # the password Secret deleted: fail with the reason instead of creating a new password
    env.kubectl("delete", "secret", "snapmover-repo-credentials", "-n", env.ns)
    env.snapshot("snap-nopass", "data")
    nopass = env.data_upload("snap-nopass", "data")
    status = env.wait_phase("dataupload", nopass, {"Failed", "Completed"})["status"]
    assert status["phase"] == "Failed" and "snapmover-repo-credentials is missing" in status["message"]


FINAL = {"Completed", "Failed", "Canceled"}
MANY_FILES = (
    "python -c \"import os; [os.makedirs(f'/data/d{d}', exist_ok=True) for d in range(100)]; "
    "[open(f'/data/d{i % 100}/f{i}', 'wb').write(os.urandom(512)) for i in range(60000)]\""
)


def test_cancel_while_in_progress_stops_the_mover(env: LauncherEnv) -> None:
    env.apply(pvc("data", size="1Gi"), env.app)
    env.run_pod_job("fill", MANY_FILES, "data")
    env.snapshot("snap", "data")
    du = env.data_upload("snap", "data", dataMoverConfig={"ParallelFilesUpload": "1"})
    started = env.wait_phase("dataupload", du, {"InProgress", "Completed", "Failed"})["status"]
    assert started["phase"] == "InProgress", f"the backup ended before it could be canceled: {started}"
    env.kubectl("patch", "dataupload", du, "-n", env.ns, "--type=merge", "-p", json.dumps({"spec": {"cancel": True}}))
    status = env.wait_phase("dataupload", du, {"Canceled", "Completed", "Failed"}, timeout=60)["status"]
    assert status["phase"] == "Canceled", status
    logs = env.kubectl("logs", "-n", env.ns, f"job/snapmover-du-{du}").stdout
    assert "canceled" in logs
    wait_for(
        "cleanup",
        lambda: not env.exists("pvc", f"snapmover-du-{du}") and not env.exists("volumesnapshot", f"snapmover-du-{du}"),
    )
    # the repository stays consistent: a check run by hand with the launcher's password passes
    password = env.kubectl(
        "get", "secret", "snapmover-repo-credentials", "-n", env.ns, "-o", "jsonpath={.data.repository-password}"
    ).stdout
    import base64
    import subprocess
    import sys

    repo_dir = env.pv_path("snapmover-repository", env.ns) / "snapmover" / env.app
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "snapmover"),
            "repo",
            "check",
            "--read-data",
            "--repo",
            f"file://{repo_dir}",
        ],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "SNAPMOVER_PASSWORD": base64.b64decode(password).decode()},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_job_deadline_exceeded_fails_with_the_reason(velero_crds: ClusterHandle, tmp_path: Path) -> None:
    # the mover is SIGSTOPped as soon as its container runs, so it cannot finish inside the 3 s
    # deadline however fast the machine is (a mover of 60,000 files once did); when the pod takes
    # longer than the deadline to start, the Job fails before there is anything to stop
    with launcher_env(velero_crds, tmp_path, {"jobDeadlineSeconds": "3"}) as env:
        env.start_launcher()
        env.apply(pvc("data", size="1Gi"), env.app)
        env.run_pod_job("fill", "head -c 1000000 /dev/urandom > /data/blob", "data")
        env.snapshot("snap", "data")
        du = env.data_upload("snap", "data")
        seen: set[str] = set()

        def stopped_or_ended() -> bool:
            found = env.node_task(seen, f"snapmover-du-{du}")
            if found is not None:
                os.kill(found[1], signal.SIGSTOP)
                return True
            return env.phase("dataupload", du) in FINAL

        wait_for("the mover to start (then stopped) or the DataUpload to end", stopped_or_ended, timeout=180)
        status = env.wait_phase("dataupload", du, FINAL)["status"]
        assert status["phase"] == "Failed", status
        assert "SIGTERM" in status["message"] or "deadline" in status["message"], status["message"]


def test_restore_waits_for_a_wait_for_first_consumer_target_and_missing_pvc_fails(env: LauncherEnv) -> None:
    env.apply(pvc("data"), env.app)
    env.run_pod_job("fill", "echo restored-by-wffc > /data/file", "data")
    env.snapshot("snap", "data")
    du = env.data_upload("snap", "data")
    snapshot_id = env.wait_phase("dataupload", du, {"Completed", "Failed"})["status"]["snapshotID"]
    missing = env.data_download(snapshot_id, "no-such-pvc", operationTimeout="3s")
    status = env.wait_phase("datadownload", missing, {"Failed", "Completed"})["status"]
    assert status["phase"] == "Failed" and "no-such-pvc" in status["message"] and "does not exist" in status["message"]
    target = pvc("late", selector={"velero.io/dynamic-pv-restore": "x.late.y"})
    target["spec"]["storageClassName"] = "wait-for-consumer"
    env.apply(target, env.app)
    dd = env.data_download(snapshot_id, "late", operationTimeout="10m")
    env.wait_phase("datadownload", dd, {"Accepted"})
    import time

    time.sleep(4)  # several reconciles: it must keep waiting for the consumer's node
    assert env.phase("datadownload", dd) == "Accepted"
    env.kubectl("annotate", "pvc", "late", "-n", env.app, "volume.kubernetes.io/selected-node=node-1")
    assert env.wait_phase("datadownload", dd, {"Completed", "Failed"})["status"]["phase"] == "Completed"
    assert (env.pv_path("late") / "file").read_text() == "restored-by-wffc\n"


def test_deleting_a_dataupload_forgets_its_snapshot(env: LauncherEnv) -> None:
    env.apply(pvc("data"), env.app)
    env.run_pod_job("fill", "head -c 2000000 /dev/urandom > /data/blob", "data")
    sids = []
    for i in range(2):
        env.snapshot(f"snap-{i}", "data")
        du = env.data_upload(f"snap-{i}", "data")
        sids.append((du, env.wait_phase("dataupload", du, {"Completed", "Failed"})["status"]["snapshotID"]))
    password = env.kubectl(
        "get", "secret", "snapmover-repo-credentials", "-n", env.ns, "-o", "jsonpath={.data.repository-password}"
    ).stdout
    import base64
    import subprocess
    import sys

    repo = env.pv_path("snapmover-repository", env.ns) / "snapmover" / env.app
    cli_env = {
        **os.environ,
        "SNAPMOVER_PASSWORD": base64.b64decode(password).decode(),
        "SNAPMOVER_REPOSITORY": f"file://{repo}",
    }

    def snapshots() -> str:
        return subprocess.run(
            [str(Path(sys.executable).parent / "snapmover"), "snapshots"],
            env=cli_env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout

    assert sids[0][1][:8] in snapshots() and sids[1][1][:8] in snapshots()
    env.kubectl("delete", "dataupload", sids[0][0], "-n", env.ns, "--timeout=90s")
    listing = snapshots()
    assert sids[0][1][:8] not in listing and sids[1][1][:8] in listing
    events = env.kubectl("get", "events", "-n", env.ns, "--field-selector", "reason=SnapshotForgotten").stdout
    assert sids[0][1] in events


def test_maintenance_frees_the_data_of_deleted_backups(velero_crds: ClusterHandle, tmp_path: Path) -> None:
    with launcher_env(velero_crds, tmp_path, {"maintenanceInterval": "3s", "maintenanceJobsKept": "2"}) as env:
        env.start_launcher()
        env.apply(pvc("data"), env.app)
        done = []
        for i in range(2):
            env.run_pod_job(f"fill-{i}", "rm -f /data/*; head -c 3000000 /dev/urandom > /data/blob", "data")
            env.snapshot(f"snap-{i}", "data")
            du = env.data_upload(f"snap-{i}", "data")
            done.append((du, env.wait_phase("dataupload", du, {"Completed", "Failed"})["status"]))
        assert all(status["phase"] == "Completed" for _, status in done)
        repo = env.pv_path("snapmover-repository", env.ns) / "snapmover" / env.app

        def repo_bytes() -> int:
            return sum(f.stat().st_size for f in repo.rglob("*") if f.is_file())

        before = repo_bytes()
        assert before > 5_500_000
        env.kubectl("delete", "dataupload", done[0][0], "-n", env.ns, "--timeout=90s")
        wait_for(
            "maintenance to free the deleted backup's data", lambda: repo_bytes() < before - 2_500_000, timeout=120
        )
        selector = {"velero.io/dynamic-pv-restore": "x.data.kept"}
        env.apply(pvc("restored", selector=selector), env.app)
        dd = env.data_download(done[1][1]["snapshotID"], "restored")
        assert env.wait_phase("datadownload", dd, {"Completed", "Failed"})["status"]["phase"] == "Completed"
        assert (env.pv_path("restored") / "blob").read_bytes() == (env.pv_path("data") / "blob").read_bytes()
        events = env.kubectl("get", "events", "-n", env.ns, "--field-selector", "reason=MaintenanceStarted").stdout
        assert "pruning repository" in events
        kept = env.kubectl("get", "jobs", "-n", env.ns, "-l", "snapmover.io/maintenance", "-o", "name").stdout.split()
        assert 1 <= len(kept) <= 3  # the newest finished ones (2) plus at most one running


@pytest.mark.parametrize("config", [{"jobLabels": json.dumps({"not a label key!": "x"}), "prepareTimeout": "10m"}])
def test_a_job_the_api_server_rejects_fails_the_cr_with_its_message(
    velero_crds: ClusterHandle, tmp_path: Path, config: dict[str, str]
) -> None:
    with launcher_env(velero_crds, tmp_path, config) as env:
        env.start_launcher()
        du = upload_of_one_file(env)
        status = env.wait_phase("dataupload", du, {"Failed", "Completed"}, timeout=90)["status"]
        assert status["phase"] == "Failed"
        assert "rejected Job" in status["message"] and "not a label key!" in status["message"]
        assert env.procs[0].poll() is None
