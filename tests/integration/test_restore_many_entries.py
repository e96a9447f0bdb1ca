"""A tree of over 200,000 entries — files, directories, hardlinks across directories, symlinks —
backed up and restored through the CLI and compared entry by entry (content, mode, owner, times,
link targets, hardlink groups): the streaming restore sets each directory's times after its
contents and keeps files linked across its batches. The peak RSS of both steps stays within the
256 MiB default budget (a fixed entry count under a cap that a restore planning every file at
once exceeded).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_cli_data import SNAPMOVER
from tests.unit.jobs.volume.treecompare import compare_trees

pytestmark = pytest.mark.integration

TOP, SUB, FILES = 40, 50, 95  # 2,000 leaf directories of 95 files: 190,000 files
LINK_EVERY = 30  # every 30th file has a second name in the next directory
SYMLINKS = 5  # per directory
PEAK_RSS_LIMIT_KIB = 256 * 1024
TIME = shutil.which("time") or "/usr/bin/time"


def _make_tree(root: Path) -> int:
    """Write the tree; returns its entry count. Times are set children first, so every
    directory's mtime is the one it was given, not the time its last entry was created."""
    rng = random.Random(200_000)
    shared = [rng.randbytes(rng.randrange(100, 3000)) for _ in range(64)]
    entries = 0
    leaves = [root / f"t{t:02d}" / f"s{s:02d}" for t in range(TOP) for s in range(SUB)]
    for leaf in leaves:
        leaf.mkdir(parents=True)
    for d, leaf in enumerate(leaves):
        nxt = leaves[(d + 1) % len(leaves)]
        for f in range(FILES):
            path = leaf / f"f{f:03d}"
            data = shared[f % 64] if f % 4 == 0 else rng.randbytes(rng.randrange(20, 600))
            path.write_bytes(data)
            os.chmod(path, (0o600, 0o640, 0o644, 0o755)[f % 4])
            entries += 1
            if f % LINK_EVERY == 0:
                os.link(path, nxt / f"link-{d:04d}-{f:03d}")
                entries += 1
        for s in range(SYMLINKS):
            os.symlink(f"f{s * 7:03d}" if s % 2 else f"../../t{s:02d}/missing-{s}", leaf / f"sym{s}")
            entries += 1
    stamp = 1_600_000_000_000_000_000
    for i, (dirpath, dirnames, filenames) in enumerate(sorted(os.walk(root), reverse=True)):  # children first
        for n, name in enumerate(filenames):
            os.utime(os.path.join(dirpath, name), ns=(stamp + n * 1_000_003, stamp + n * 1_000_001),
                     follow_symlinks=False)  # fmt: skip
        os.utime(dirpath, ns=(stamp + i * 7_000_001, stamp + i * 3_000_017))
        entries += len(dirnames)
    return entries


def _run_measured(args: list[str], env: dict[str, str]) -> int:
    """Run a snapmover command; its peak RSS in KiB (GNU time)."""
    proc = subprocess.run(
        [TIME, "-f", "%M", SNAPMOVER, *args], env=env, capture_output=True, text=True, timeout=1200, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stderr.strip().splitlines()[-1])


@pytest.mark.skipif(not os.path.exists(TIME), reason="needs GNU time (Debian's `time`) for the peak RSS")
def test_a_tree_of_200k_entries_restores_entry_by_entry(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    entries = _make_tree(src)
    assert entries >= 200_000
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPMOVER_")}
    env |= {"SNAPMOVER_REPOSITORY": f"file://{tmp_path}/repo", "SNAPMOVER_PASSWORD": "many entries"}
    subprocess.run([SNAPMOVER, "repo", "init"], env=env, check=True, capture_output=True, timeout=60)

    backup_rss = _run_measured(["upload", "--source", str(src)], env)
    listed = subprocess.run(
        [SNAPMOVER, "snapshots", "--json"], env=env, check=True, capture_output=True, text=True, timeout=120
    ).stdout
    sid = json.loads(listed)["snapshots"][0]["id"]
    restore_rss = _run_measured(["download", "--snapshot", sid, "--target", str(tmp_path / "out")], env)

    assert compare_trees(src, tmp_path / "out") == []
    assert backup_rss < PEAK_RSS_LIMIT_KIB, f"backup peak RSS {backup_rss // 1024} MiB"
    assert restore_rss < PEAK_RSS_LIMIT_KIB, f"restore peak RSS {restore_rss // 1024} MiB"
