"""The data `make bench` runs on: what each dataset is, how it is made once and cached, and the
~1 % change applied before the "changed" backup.

* ``mixed`` — generated: small text files, incompressible files and compressible logs (the tree
  the first version was tuned on), plus the raw block image of the block round.
* ``realtree`` — copies of real software trees already on a test machine: the Kubernetes source
  tree the cluster build unpacks (vendor/ included), the Go toolchain it installs, and the Python
  installations with their site-packages. At least 50,000 files in 8,000 directories, or the
  dataset refuses to run (it would not be the shape it stands for).
* ``small-100k`` / ``small-1m`` — generated trees of unique small files (200-1,200 bytes, 1,000
  per directory): the per-file cost and the memory growth with the file count.

Every dataset is built once under ``BENCH_WORK`` (a stamp file records its statistics) and never
changed afterwards: each run copies it.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024
DATASET_VERSION = 3
REAL_TREE_MIN_FILES = 50_000
REAL_TREE_MIN_DIRS = 8_000


@dataclass(frozen=True)
class Dataset:
    """A named tree: ``build(root)`` writes it and returns its statistics."""

    name: str
    build: Callable[[Path], dict[str, int]]
    about: str


def text_corpus(rng: random.Random, size: int) -> bytes:
    """Log-like text (compressible, not trivially): the source of the generated text files."""
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randrange(2, 10))) for _ in range(5000)]
    lines = []
    total = 0
    while total < size:
        line = b"2026-11-24T%02d:%02d:%02d INFO " % (rng.randrange(24), rng.randrange(60), rng.randrange(60))
        line += b" ".join(rng.choice(words) for _ in range(rng.randrange(4, 16))) + b"\n"
        lines.append(line)
        total += len(line)
    return b"".join(lines)[:size]


class _Writer:
    """Writes files under a root and counts them."""

    def __init__(self) -> None:
        self.stats = {"files": 0, "dirs": 0, "bytes": 0}
        self._made: set[Path] = set()

    def put(self, path: Path, data: bytes) -> None:
        if path.parent not in self._made:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(path.parent)
            self.stats["dirs"] += 1
        path.write_bytes(data)
        self.stats["files"] += 1
        self.stats["bytes"] += len(data)


def make_mixed(root: Path, scale: float) -> dict[str, int]:
    """~2 GiB at scale 1: 20,000 small text files in 200 directories, 1 GiB of random data and
    1 GiB of compressible logs in files of log-normal sizes."""
    rng = random.Random(42)
    corpus = text_corpus(rng, 32 * MiB)
    w = _Writer()
    for i in range(int(20000 * scale)):
        size = rng.randrange(100, 8192)
        start = rng.randrange(0, len(corpus) - size)
        w.put(root / "small" / f"d{i % 200:03d}" / f"f{i:05d}.txt", corpus[start : start + size])
    for sub, random_data in (("random", True), ("text", False)):
        budget = int(1024 * MiB * scale)
        i = 0
        while budget > 0:
            size = min(budget, int(rng.lognormvariate(15, 1.5)) + 1024, 64 * MiB)
            if random_data:
                data = os.urandom(size)
            else:
                parts, left = [], size
                while left > 0:
                    piece = min(left, rng.randrange(4096, 65536))
                    start = rng.randrange(0, len(corpus) - piece)
                    parts.append(corpus[start : start + piece])
                    left -= piece
                data = b"".join(parts)
            w.put(root / sub / (f"r{i:04d}.bin" if random_data else f"t{i:04d}.log"), data)
            budget -= size
            i += 1
    return w.stats


def make_small_files(root: Path, count: int) -> dict[str, int]:
    """``count`` unique files of 200-1,200 bytes, 1,000 per directory, directories 100 per parent."""
    rng = random.Random(count)
    w = _Writer()
    for i in range(count):
        d = i // 1000
        w.put(root / f"g{d // 100:03d}" / f"d{d:05d}" / f"f{i:07d}", rng.randbytes(rng.randrange(200, 1200)))
    return w.stats


def real_tree_sources() -> list[Path]:
    """Real trees on this machine: the Kubernetes source the cluster build unpacked, the Go
    toolchain, Python's standard library and the project venv's site-packages."""
    cache = Path(os.environ.get("SNAPMOVER_CACHE", Path.home() / ".cache" / "snapmover"))
    candidates = [
        *sorted((cache / "kube-build").glob("kubernetes-*")),
        *sorted(Path("/usr/share").glob("go-1.*")),
        *sorted(Path("/usr/lib").glob("go-1.*")),
        *sorted(Path("/usr/lib").glob("python3.*")),
        *sorted((Path(__file__).resolve().parent.parent / ".venv" / "lib").glob("python3.*")),
    ]
    return [p for p in candidates if p.is_dir()]


def make_real_tree(root: Path) -> dict[str, int]:
    """Copy the real trees (build outputs of the Kubernetes tree left out: they are the build's
    cache, not a tree people keep) with ``cp -a``, then count what arrived."""
    root.mkdir(parents=True)
    for i, src in enumerate(real_tree_sources()):
        dst = root / f"{i:02d}-{src.name}"
        subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
        shutil.rmtree(dst / "_output", ignore_errors=True)
    stats = {"files": 0, "dirs": 0, "bytes": 0, "symlinks": 0}
    for dirpath, dirnames, filenames in os.walk(root):
        stats["dirs"] += 1
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if os.path.islink(os.path.join(dirpath, name)):
                stats["symlinks"] += 1
            else:
                stats["files"] += 1
                stats["bytes"] += st.st_size
        stats["symlinks"] += sum(os.path.islink(os.path.join(dirpath, d)) for d in dirnames)
    if stats["files"] < REAL_TREE_MIN_FILES or stats["dirs"] < REAL_TREE_MIN_DIRS:
        shutil.rmtree(root)
        raise SystemExit(
            f"realtree: the real trees on this machine hold only {stats['files']} files in {stats['dirs']} "
            f"directories (need {REAL_TREE_MIN_FILES} / {REAL_TREE_MIN_DIRS}): run `make cluster-build` "
            "first (it unpacks the Kubernetes source tree), or leave realtree out of BENCH_DATASETS"
        )
    return stats


def make_image(path: Path, scale: float) -> int:
    """A raw block image, 4 GiB at scale 1: half holes, the rest random or text in 4 MiB runs."""
    size = int(4096 * MiB * scale)
    block = 4 * MiB
    rng = random.Random(7)
    corpus = text_corpus(rng, 8 * MiB)
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in range(0, size, block):
            if (offset // block) % 2 == 0:
                continue
            data = os.urandom(block) if rng.random() < 0.5 else corpus[: block // 2] * 2
            os.pwrite(f.fileno(), data, offset)
    return size


def datasets(scale: float) -> dict[str, Dataset]:
    """Every dataset by name."""
    return {
        "mixed": Dataset("mixed", lambda root: make_mixed(root, scale), f"generated mixed tree, scale {scale}"),
        "realtree": Dataset("realtree", make_real_tree, "real software trees copied from this machine"),
        "small-100k": Dataset("small-100k", lambda root: make_small_files(root, 100_000), "100,000 small files"),
        "small-1m": Dataset("small-1m", lambda root: make_small_files(root, 1_000_000), "1,000,000 small files"),
    }


def ensure(work: Path, ds: Dataset, tag: str) -> tuple[Path, dict[str, int]]:
    """The dataset's tree (built on first use) and its statistics."""
    base = work / f"data-v{DATASET_VERSION}-{ds.name}{tag}"
    stamp = base / "stamp.json"
    tree = base / "tree.orig"
    work.mkdir(parents=True, exist_ok=True)
    # Several checkouts on one machine share the cache: one builds, the others wait for it.
    with open(work / f".{base.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists():
            shutil.rmtree(base, ignore_errors=True)
            base.mkdir(parents=True)
            print(f"==> building dataset {ds.name} ({ds.about}) in {base}", flush=True)
            stats = ds.build(tree)
            stamp.write_text(json.dumps(stats))
    return tree, json.loads(stamp.read_text())


def stats_of(tree: Path) -> dict[str, int]:
    """The statistics stored beside a dataset's tree."""
    return dict(json.loads((tree.parent / "stamp.json").read_text()))


def modify(root: Path) -> int:
    """Change ~1 % of the files the same way in any tree: append a line to 1 % of them (a
    deterministic sample) and overwrite 4 KiB in the middle of the three largest. Returns how
    many files changed."""
    rng = random.Random(99)
    files: list[tuple[int, str]] = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p) and os.access(p, os.W_OK):
                files.append((os.stat(p).st_size, p))
    files.sort(key=lambda f: f[1])
    picked = rng.sample(files, max(1, len(files) // 100))
    for _size, p in picked:
        with open(p, "ab") as f:
            f.write(b"modified line\n")
    for size, p in sorted(files)[-3:]:
        with open(p, "r+b") as f:
            f.seek(size // 2)
            f.write(os.urandom(4096))
    return len(picked) + 3
