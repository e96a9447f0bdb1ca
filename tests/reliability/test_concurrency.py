"""Concurrent writers: 4 uploads of different volumes into one repository at once, with a prune
started among them (after forgetting an old snapshot that shares data with a kept one). Every
snapshot restores identically, `check --read-data` passes, nothing referenced is deleted."""

from __future__ import annotations

import random
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.figures import Figures
from tests.reliability.conftest import (
    SNAPMOVER,
    cli_env,
    digest,
    make_tree,
    repository_url,
    restore_equals,
    run,
    snapshot_of,
)

pytestmark = pytest.mark.reliability


def concurrent_round(env: dict[str, str], tmp_path: Path, seed: int) -> tuple[int, float]:
    """One round; returns (prune exit status, seconds the whole round took)."""
    import os
    import subprocess

    rng = random.Random(seed)
    shared = tmp_path / f"shared{seed}"
    shared.mkdir()
    (shared / "common.bin").write_bytes(rng.randbytes(2 * 1024 * 1024))
    kept_src, old_src = tmp_path / f"kept{seed}", tmp_path / f"old{seed}"
    make_tree(kept_src, seed, files=40, big=1, shared=shared)
    make_tree(old_src, seed + 1, files=40, big=1, shared=shared)
    kept = snapshot_of(run(env, "upload", "--source", str(kept_src)))
    old = snapshot_of(run(env, "upload", "--source", str(old_src)))
    assert run(env, "forget", old).returncode == 0  # prune has real work: old's own data goes
    sources = []
    for i in range(4):
        src = tmp_path / f"vol{seed}-{i}"
        make_tree(src, seed * 10 + i, files=150, big=3, shared=shared)
        sources.append(src)

    def popen(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [SNAPMOVER, *args],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    t0 = time.monotonic()
    prune_at = rng.randrange(5)  # prune starts before, between or after the uploads
    procs: list[subprocess.Popen[str]] = []
    prune: subprocess.Popen[str] | None = None
    for i in range(5):
        if i == prune_at:
            prune = popen("prune")
        if i < 4:
            procs.append(popen("upload", "--source", str(sources[i]), "--tag", f"vol={i}"))
        time.sleep(rng.uniform(0, 0.3))
    assert prune is not None
    outs = [p.communicate(timeout=400) for p in procs]
    prune_out = prune.communicate(timeout=400)
    elapsed = time.monotonic() - t0
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    # done, or politely refused after waiting for the backups' locks
    assert prune.returncode in (0, 8), prune_out[1]
    check = run(env, "repo", "check", "--read-data")
    assert check.returncode == 0, check.stdout + check.stderr
    restore_equals(env, kept, digest(kept_src), tmp_path / "restore")
    for src, (out, _err) in zip(sources, outs, strict=True):
        restore_equals(env, out.strip().splitlines()[-1], digest(src), tmp_path / "restore")
    for path in (shared, kept_src, old_src, *sources):
        shutil.rmtree(path)
    return prune.returncode, elapsed


@pytest.mark.parametrize(
    ("backend", "rounds"), [("file", 1), ("s3", 1), pytest.param("file", 5, marks=pytest.mark.slow)]
)
def test_concurrent_uploads_with_a_concurrent_prune(
    backend: str, rounds: int, tmp_path: Path, figures: Figures, request: pytest.FixtureRequest
) -> None:
    env = cli_env(repository_url(backend, tmp_path, request))
    assert run(env, "repo", "init").returncode == 0
    prune_results: Counter[int] = Counter()
    seconds = []
    for r in range(rounds):
        status, elapsed = concurrent_round(env, tmp_path, 300 + r)
        prune_results[status] += 1
        seconds.append(elapsed)
    assert run(env, "prune").returncode == 0
    check = run(env, "repo", "check", "--read-data")
    assert check.returncode == 0, check.stdout + check.stderr
    figures.add(
        f"concurrency ({backend}, {rounds} round{'s' * (rounds > 1)})",
        "4 uploads + 1 prune at once: prune exit codes; restores; round time",
        f"{dict(prune_results)}; {5 * rounds}/{5 * rounds} snapshots identical, check passed; "
        + ", ".join(f"{s:.1f} s" for s in seconds),
    )
