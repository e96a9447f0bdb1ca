"""e2e: a DataUpload with ``dataMoverConfig.excludes`` backs up everything but the excluded entries,
records the patterns in its dataMoverResult, and a bad pattern fails the CR naming the key; `backup-pvc
--exclude` fills that key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.launcher_env import LauncherEnv, pvc
from tests.e2e.test_launcher import tree_signature

pytestmark = pytest.mark.e2e

FILL = (
    "mkdir -p /data/app/cache/deep /data/app/conf /data/logs /data/keep && echo conf > /data/app/conf/a.conf && "
    "echo c > /data/app/cache/deep/blob && echo t > /data/app/run.tmp && echo k > /data/keep/important.tmp && "
    "seq 1 5000 > /data/logs/today.log && gzip -c /data/logs/today.log > /data/logs/old.log.gz && "
    "ln -s app/conf/a.conf /data/conf-link && chown 1234:5678 /data/app/conf/a.conf"
)
EXCLUDES = "# caches and temporary files\n**/cache/\n*.tmp\n!/keep/*.tmp\n/logs/*.gz\n"
DIRS = {"app", "app/conf", "logs", "keep"}
EXCLUDED = {"app/cache", "app/cache/deep", "app/cache/deep/blob", "app/run.tmp", "logs/old.log.gz"}


def test_dataupload_excludes_are_left_out_recorded_and_checked(env: LauncherEnv) -> None:
    env.apply(pvc("data"), env.app)
    env.run_pod_job("fill", FILL, "data")
    env.snapshot("snap-x", "data")
    du = env.data_upload("snap-x", "data", dataMoverConfig={"excludes": EXCLUDES})
    status = env.wait_phase("dataupload", du, {"Completed", "Failed"})["status"]
    assert status["phase"] == "Completed", status.get("message")
    assert status["dataMoverResult"]["excludes"] == "**/cache/\n*.tmp\n!/keep/*.tmp\n/logs/*.gz"

    env.apply(pvc("restored", selector={"velero.io/dynamic-pv-restore": f"{env.app}.data.excl1"}), env.app)
    dd = env.data_download(status["snapshotID"], "restored")
    finished = env.wait_phase("datadownload", dd, {"Completed", "Failed"})["status"]
    assert finished["phase"] == "Completed", finished.get("message")
    restored = tree_signature(env.pv_path("restored"))
    source = tree_signature(env.pv_path("data"))
    expected = {name: sig for name, sig in source.items() if name not in EXCLUDED}
    assert set(restored) == set(expected), "restored entries differ from the source minus the excluded ones"
    for name, sig in expected.items():
        # a directory's st_size depends on the entries it once held (tmpfs): compare the rest
        same = restored[name][:3] + restored[name][4:] == sig[:3] + sig[4:] if name in DIRS else restored[name] == sig
        assert same, f"{name}: {restored[name]} != {sig}"
    assert restored["app/conf/a.conf"][1:3] == (1234, 5678)

    env.snapshot("snap-y", "data")  # the first upload took snap-x over
    bad = env.data_upload("snap-y", "data", dataMoverConfig={"excludes": "*.log\n[unclosed"})
    failed = env.wait_phase("dataupload", bad, {"Completed", "Failed"})["status"]
    assert failed["phase"] == "Failed"
    assert "dataMoverConfig.excludes" in failed["message"] and "[unclosed" in failed["message"]


def test_backup_pvc_exclude_reaches_the_dataupload(env: LauncherEnv) -> None:
    """``snapmover backup-pvc --exclude`` (what the CronJob example runs) sends the patterns as
    dataMoverConfig.excludes; the snapshot leaves those entries out."""
    env.apply(pvc("data"), env.app)
    env.run_pod_job("fill", "mkdir -p /data/tmp && echo a > /data/keep.txt && echo b > /data/tmp/x", "data")
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "snapmover"), "backup-pvc", "--kubeconfig", str(env.cluster.kubeconfig),
            "--namespace", env.app, "--pvc", "data", "--launcher-namespace", env.ns, "--snapshot-class", "standard",
            "--exclude", "/tmp/", "--exclude", "*.log", "--wait", "--timeout", "180",
        ],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    (du,) = json.loads(env.kubectl("get", "datauploads", "-n", env.ns, "-o", "json").stdout)["items"]
    assert du["spec"]["dataMoverConfig"] == {"excludes": "/tmp/\n*.log"}
    assert du["status"]["phase"] == "Completed" and du["status"]["dataMoverResult"]["excludes"] == "/tmp/\n*.log"
    assert du["status"]["dataMoverResult"]["files"] == "1"  # keep.txt only

    bad = subprocess.run(
        [str(Path(sys.executable).parent / "snapmover"), "backup-pvc", "--namespace", env.app, "--pvc", "data",
         "--kubeconfig", str(env.cluster.kubeconfig), "--exclude", "a\nb"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "line break" in bad.stderr and "Traceback" not in bad.stderr
