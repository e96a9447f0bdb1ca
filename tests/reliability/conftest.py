"""Reliability suite helpers: the CLI as a subprocess, generated trees, tree comparison, figures.

Tests record figures with the ``figures`` fixture; at the end of ``make reliability`` (which sets
``SNAPMOVER_RELIABILITY_RESULTS=1``) the table is written to ``tests/reliability/RESULTS.md``.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

SNAPMOVER = str(Path(sys.executable).parent / "snapmover")
PASSWORD = "reliability-password-7c1e"
RESULTS = Path(__file__).parent / "RESULTS.md"
_FIGURES: list[tuple[str, str, str]] = []


def run(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the snapmover CLI; never raises on a non-zero exit."""
    return subprocess.run(
        [SNAPMOVER, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout, check=False
    )


def make_tree(root: Path, seed: int, *, files: int = 300, big: int = 4) -> None:
    """A mixed tree: small text files and a few multi-MiB random files."""
    rng = random.Random(seed)
    for i in range(files):
        d = root / f"d{i % 12}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_bytes(b"line %d %d\n" % (seed, i) * rng.randrange(1, 400))
    for i in range(big):
        (root / f"big{i}.bin").write_bytes(rng.randbytes(rng.randrange(2, 6) * 1024 * 1024))


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
    import json

    res = run(env, "snapshots", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    items = data["snapshots"] if isinstance(data, dict) else data
    return [s["id"] for s in items]


@pytest.fixture
def figures() -> Iterator[list[tuple[str, str, str]]]:
    """Append (area, figure, value) rows for RESULTS.md."""
    yield _FIGURES


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _FIGURES or os.environ.get("SNAPMOVER_RELIABILITY_RESULTS") != "1":
        return
    lines = [
        f"# Reliability results — {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        "Written by `make reliability` from the run that produced it.",
        "",
        "| area | figure | value |",
        "|---|---|---|",
    ]
    lines += [f"| {a} | {f} | {v} |" for a, f, v in _FIGURES]
    RESULTS.write_text("\n".join(lines) + "\n")
