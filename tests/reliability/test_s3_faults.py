"""S3 faults: through a proxy injecting 5 % errors, resets, truncated bodies and delays, backups and
restores still succeed with identical data; a persistent outage fails with exit 4 in bounded time."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.conftest import PASSWORD, digest, make_tree, run
from tests.reliability.s3proxy import FaultProxy

pytestmark = pytest.mark.reliability


@pytest.fixture
def faulty(s3_server: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(s3_server, fraction=0.05, seed=5).start()
    yield proxy
    proxy.stop()


def test_backup_and_restore_survive_injected_faults(
    faulty: FaultProxy, s3_bucket: str, tmp_path: Path, figures: list[tuple[str, str, str]]
) -> None:
    env = {"SNAPMOVER_REPOSITORY": f"s3://{s3_bucket}/repo?endpoint={faulty.url}", "SNAPMOVER_PASSWORD": PASSWORD}
    src = tmp_path / "src"
    make_tree(src, 31, files=400, big=4)
    assert run(env, "repo", "init").returncode == 0
    first = run(env, "upload", "--source", str(src))
    assert first.returncode == 0, first.stderr
    sid = first.stdout.strip().splitlines()[-1]
    (src / "added.txt").write_text("more\n")
    assert run(env, "upload", "--source", str(src)).returncode == 0
    out = tmp_path / "out"
    restored = run(env, "download", "--snapshot", sid, "--target", str(out))
    assert restored.returncode == 0, restored.stderr
    expected = digest(src)
    expected.pop("added.txt")
    assert digest(out) == expected
    assert run(env, "repo", "check", "--read-data").returncode == 0
    injected = {k: v for k, v in faulty.counts.items() if k != "requests"}
    assert sum(injected.values()) > 0, faulty.counts
    figures.append(
        (
            "s3 faults",
            "requests / injected faults (5 %, seeded)",
            f"{faulty.counts['requests']} / {dict(injected)}; data identical, check passed",
        )
    )
    shutil.rmtree(out)


def test_persistent_outage_fails_with_exit_4(
    s3_server: str, s3_bucket: str, tmp_path: Path, figures: list[tuple[str, str, str]]
) -> None:
    env = {"SNAPMOVER_REPOSITORY": f"s3://{s3_bucket}/repo?endpoint={s3_server}", "SNAPMOVER_PASSWORD": PASSWORD}
    assert run(env, "repo", "init").returncode == 0
    outage = FaultProxy(s3_server, mode="outage").start()
    try:
        src = tmp_path / "src"
        make_tree(src, 41, files=10, big=1)
        t0 = time.monotonic()
        res = run(
            {**env, "SNAPMOVER_REPOSITORY": f"s3://{s3_bucket}/repo?endpoint={outage.url}"},
            "upload",
            "--source",
            str(src),
            timeout=400,
        )
        elapsed = time.monotonic() - t0
    finally:
        outage.stop()
    assert res.returncode == 4, res.stderr
    # retry notices may precede it; the outcome is one final error line
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("snapmover: error:") and "reachable" in last and "Traceback" not in res.stderr
    closed = run(
        {**env, "SNAPMOVER_REPOSITORY": f"s3://{s3_bucket}/repo?endpoint=http://127.0.0.1:9"}, "snapshots", timeout=400
    )
    assert closed.returncode == 4 and "reach" in closed.stderr
    figures.append(
        ("s3 faults", "persistent 503 outage: exit code, time to give up", f"{res.returncode}, {elapsed:.0f} s")
    )
