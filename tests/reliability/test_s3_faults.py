"""S3 faults: through a proxy injecting 5 % errors, resets, truncated bodies and delays, backups and
restores still succeed with identical data; a persistent outage (503 to everything, or a closed
port) fails with exit code 4 and one final error line, in bounded time (measured, not asserted)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.figures import Figures
from tests.reliability.conftest import (
    PASSWORD,
    digest,
    make_tree,
    restore_equals,
    run,
    snapshot_of,
)
from tests.reliability.s3proxy import FAULTS, FaultProxy

pytestmark = pytest.mark.reliability


def through(url: str, bucket: str) -> dict[str, str]:
    return {"SNAPMOVER_REPOSITORY": f"s3://{bucket}/repo?endpoint={url}", "SNAPMOVER_PASSWORD": PASSWORD}


def faulty_round_trip(
    s3_server: str, bucket: str, tmp_path: Path, figures: Figures, *, seed: int, files: int, big: int, label: str
) -> FaultProxy:
    """Two backups and a restore of each through a 5 % faulty proxy; data identical, check clean."""
    proxy = FaultProxy(s3_server, fraction=0.05, seed=seed, max_delay=3.0).start()
    try:
        env = through(proxy.url, bucket)
        src = tmp_path / "src"
        make_tree(src, seed, files=files, big=big)
        assert run(env, "repo", "init", "--pack-size", "1").returncode == 0  # small packs: more requests
        first = snapshot_of(run(env, "upload", "--source", str(src)))
        expected_first = digest(src)
        (src / "added.txt").write_text("more\n")
        second = snapshot_of(run(env, "upload", "--source", str(src)))
        restore_equals(env, first, expected_first, tmp_path / "out")
        restore_equals(env, second, digest(src), tmp_path / "out")
        check = run(env, "repo", "check", "--read-data")
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        proxy.stop()
    injected = {k: v for k, v in proxy.counts.items() if k != "requests"}
    assert sum(injected.values()) > 0, proxy.counts
    figures.add(
        f"s3 faults ({label})",
        "requests through the proxy / injected faults (5 %, seeded); outcome",
        f"{proxy.counts['requests']} / {sum(injected.values())} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(injected.items()))}); "
        "2 backups + 2 restores identical, check --read-data passed",
    )
    return proxy


def test_backup_and_restore_survive_injected_faults(
    s3_server: str, s3_bucket: str, tmp_path: Path, figures: Figures
) -> None:
    faulty_round_trip(s3_server, s3_bucket, tmp_path, figures, seed=5, files=200, big=3, label="fast")


@pytest.mark.slow
def test_every_fault_kind_is_survived_on_a_bigger_volume(
    s3_server: str, s3_bucket: str, tmp_path: Path, figures: Figures
) -> None:
    proxy = faulty_round_trip(s3_server, s3_bucket, tmp_path, figures, seed=6, files=1500, big=12, label="slow")
    assert all(proxy.counts[kind] > 0 for kind in FAULTS), proxy.counts


@pytest.fixture
def initialised(s3_server: str, s3_bucket: str) -> Iterator[dict[str, str]]:
    env = through(s3_server, s3_bucket)
    assert run(env, "repo", "init").returncode == 0
    yield env


def assert_clear_outage(res: object, what: str) -> None:
    import subprocess

    assert isinstance(res, subprocess.CompletedProcess)
    assert res.returncode == 4, f"{what}: {res.returncode} {res.stderr}"
    # retry notices may precede it; the outcome is one final error line
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("snapmover: error:") and "reach" in last, last
    assert "Traceback" not in res.stderr


@pytest.mark.slow
def test_persistent_503_outage_fails_with_exit_4(
    s3_server: str, s3_bucket: str, initialised: dict[str, str], tmp_path: Path, figures: Figures
) -> None:
    outage = FaultProxy(s3_server, mode="outage").start()
    try:
        src = tmp_path / "src"
        make_tree(src, 41, files=10, big=1)
        t0 = time.monotonic()
        res = run(through(outage.url, s3_bucket), "upload", "--source", str(src), timeout=400)
        elapsed = time.monotonic() - t0
    finally:
        outage.stop()
    assert_clear_outage(res, "503 outage")
    figures.add(
        "s3 faults: outage",
        "upload against 503 to every request: exit code, time to give up, requests made, final line",
        f"{res.returncode}, {elapsed:.1f} s, {outage.counts['requests']}, "
        f"`{res.stderr.strip().splitlines()[-1][:160]}`",
    )


@pytest.mark.slow
def test_closed_port_fails_with_exit_4(s3_bucket: str, tmp_path: Path, figures: Figures) -> None:
    src = tmp_path / "src"
    make_tree(src, 42, files=10, big=1)
    t0 = time.monotonic()
    res = run(through("http://127.0.0.1:9", s3_bucket), "upload", "--source", str(src), timeout=400)
    elapsed = time.monotonic() - t0
    assert_clear_outage(res, "closed port")
    figures.add(
        "s3 faults: outage",
        "upload against a closed port: exit code, time to give up, final line",
        f"{res.returncode}, {elapsed:.1f} s, `{res.stderr.strip().splitlines()[-1][:160]}`",
    )
