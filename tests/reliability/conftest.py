"""Reliability suite helpers: the CLI as a subprocess, generated trees, tree comparison, figures.

Every test drives the real ``snapmover`` executable (the same entry point a mover Job runs) against
a ``file://`` repository or the moto S3 server on 127.0.0.1. Tests record figures for
``tests/reliability/RESULTS.md`` with the ``figures`` fixture of :mod:`tests.figures` (e2e tests
on the real node record theirs the same way).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

SNAPMOVER = str(Path(sys.executable).parent / "snapmover")
PASSWORD = "reliability-password-7c1e"


def run(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the snapmover CLI; never raises on a non-zero exit."""
    return subprocess.run(
        [SNAPMOVER, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout, check=False
    )


def start(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    """Start the snapmover CLI in the background (output discarded)."""
    return subprocess.Popen(
        [SNAPMOVER, *args], env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def kill_after(proc: subprocess.Popen[bytes], delay: float, sig: int = signal.SIGKILL) -> tuple[bool, int]:
    """Wait ``delay`` seconds (or until the process ends), then send ``sig``.

    Returns (whether the signal hit a running process, exit status).
    """
    try:
        proc.wait(delay)
        hit = False
    except subprocess.TimeoutExpired:
        proc.send_signal(sig)
        hit = True
    return hit, proc.wait(120)


def repository_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh repository URL: ``file`` under tmp_path, or ``s3`` in a new bucket of the moto server."""
    if backend == "s3":
        return str(request.getfixturevalue("s3_url"))
    return f"file://{tmp_path / 'repo'}"


def cli_env(url: str) -> dict[str, str]:
    """Environment naming the repository and its password."""
    return {"SNAPMOVER_REPOSITORY": url, "SNAPMOVER_PASSWORD": PASSWORD}


def snapshot_of(res: subprocess.CompletedProcess[str]) -> str:
    """The snapshot id an `upload` printed last (asserts it succeeded)."""
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().splitlines()[-1]


def make_tree(root: Path, seed: int, *, files: int = 300, big: int = 4, shared: Path | None = None) -> None:
    """A mixed tree: small text files and a few multi-MiB random files.

    ``shared`` names a directory whose files are hard-copied in as well (data shared between
    trees, so prune finds partly used packs).
    """
    rng = random.Random(seed)
    for i in range(files):
        d = root / f"d{i % 12}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_bytes(b"line %d %d\n" % (seed, i) * rng.randrange(1, 400))
    for i in range(big):
        (root / f"big{i}.bin").write_bytes(rng.randbytes(rng.randrange(2, 6) * 1024 * 1024))
    if shared is not None:
        for p in shared.iterdir():
            (root / f"shared-{p.name}").write_bytes(p.read_bytes())


def digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every regular file (and symlink targets)."""
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            out[rel] = os.readlink(p) if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def snapshot_ids(env: dict[str, str]) -> list[str]:
    """Ids of every snapshot in the repository, via `snapshots --json`."""
    res = run(env, "snapshots", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    items = data["snapshots"] if isinstance(data, dict) else data
    return [s["id"] for s in items]


def restore_equals(env: dict[str, str], sid: str, expected: dict[str, str], where: Path) -> None:
    """Restore ``sid`` into a fresh ``where`` and assert it is byte-identical to ``expected``."""
    import shutil

    shutil.rmtree(where, ignore_errors=True)
    res = run(env, "download", "--snapshot", sid, "--target", str(where))
    assert res.returncode == 0, res.stderr
    assert digest(where) == expected, sid
    shutil.rmtree(where)


def timed(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """`run` plus its wall time in seconds (a figure, never asserted)."""
    t0 = time.monotonic()
    res = run(env, *args)
    return res, time.monotonic() - t0


def spread(values: Sequence[float], unit: str = "s") -> str:
    """'median x (min a, max b)' for a figure."""
    if not values:
        return "-"
    return f"median {statistics.median(values):.2f} {unit} (min {min(values):.2f}, max {max(values):.2f})"


Listing = Callable[..., dict[str, int]]


@pytest.fixture
def objects() -> Iterator[Listing]:
    """A function listing object names (with sizes) of a repository URL, through the storage layer."""
    from jobs.storage.url import open_storage

    opened = []

    def listing(url: str, prefix: str = "") -> dict[str, int]:
        storage = open_storage(url)
        opened.append(storage)
        return {o.name: o.size for o in storage.list(prefix)}

    yield listing
    for storage in opened:
        storage.close()
