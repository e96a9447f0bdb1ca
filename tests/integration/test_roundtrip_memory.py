"""Peak RSS of `snapmover upload` / `download` stays within the configured budget (256 MiB by
default) on a volume larger than that budget. Slow: only in `make reliability`."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_cli_data import SNAPMOVER
from tests.unit.jobs.volume.treecompare import MiB, text_bytes

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PEAK_RSS_LIMIT_KIB = 256 * 1024
TIME = shutil.which("time") or "/usr/bin/time"


def _peak_rss_kib(args: list[str], env: dict[str, str]) -> int:
    proc = subprocess.run(
        [TIME, "-f", "%M", SNAPMOVER, *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return int(proc.stderr.strip().splitlines()[-1])


@pytest.mark.skipif(not os.path.exists(TIME), reason="needs GNU time for the peak RSS")
def test_peak_rss_stays_bounded(tmp_path: Path) -> None:
    rng = random.Random(4)
    src = tmp_path / "src"
    (src / "small").mkdir(parents=True)
    for i in range(24):
        (src / f"random{i}").write_bytes(rng.randbytes(16 * MiB))
    for i in range(8):
        (src / f"text{i}").write_bytes(text_bytes(rng, 16 * MiB))
    for i in range(2000):
        (src / "small" / f"f{i}").write_bytes(rng.randbytes(rng.randrange(100, 8000)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPMOVER_")}
    env["SNAPMOVER_REPOSITORY"] = f"file://{tmp_path}/repo"
    env["SNAPMOVER_PASSWORD"] = "memory test"
    subprocess.run([SNAPMOVER, "repo", "init"], env=env, check=True, capture_output=True, timeout=60)
    assert _peak_rss_kib(["upload", "--source", str(src)], env) < PEAK_RSS_LIMIT_KIB
    snapshot = subprocess.run(
        [SNAPMOVER, "snapshots", "--json"], env=env, check=True, capture_output=True, text=True, timeout=60
    ).stdout
    sid = json.loads(snapshot)["snapshots"][0]["id"]
    assert _peak_rss_kib(["download", "--snapshot", sid, "--target", str(tmp_path / "out")], env) < PEAK_RSS_LIMIT_KIB
