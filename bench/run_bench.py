"""`make bench`: snapmover side by side with restic and borg on the same data, in one run.

Steps per tool (all repositories local and encrypted): init, initial backup, no-change backup,
backup after ~1 % of the files changed, full restore (verified against the source afterwards;
verification not timed). The same conditions for each tool: data hot in the page cache (the
source before a backup, the repository before a restore), earlier steps' writeback flushed before
each timed step, and no tree deleted until the run ends (see filesystem_round).
Also: a raw block image (half zeros) backed up and restored by snapmover in block mode (restic and
borg back the image file up as a file, for reference), and an S3 variant (snapmover vs restic
against the same local moto server). Every command runs under /usr/bin/time -v for wall time and
peak RSS. Results go to bench/results/latest.{md,json} with ratios to restic and borg and the
issue's targets checked, plus a cProfile of snapmover's initial backup.

Environment knobs: BENCH_SCALE (default 1.0 = ~2 GiB mixed tree + 4 GiB image), BENCH_WORK
(default ~/.cache/snapmover/bench), BENCH_SKIP (comma list of: s3, block, borg, restic, profile).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCALE = float(os.environ.get("BENCH_SCALE", "1.0"))
WORK = Path(os.environ.get("BENCH_WORK", Path.home() / ".cache" / "snapmover" / "bench"))
SKIP = set(filter(None, os.environ.get("BENCH_SKIP", "").split(",")))
PASSWORD = "bench-password-not-secret"
MiB = 1024 * 1024
DATASET_VERSION = 2
SNAPMOVER = str(Path(sys.executable).parent / "snapmover")


@dataclass
class Step:
    tool: str
    step: str
    seconds: float
    bytes: int
    peak_rss_mib: float
    cpu_percent: float
    repo_bytes: int = 0
    ok: bool = True
    note: str = ""

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0


@dataclass
class Report:
    started: str
    machine: dict[str, str]
    scale: float
    dataset: dict[str, int]
    steps: list[Step] = field(default_factory=list)


# --- data ---------------------------------------------------------------------------------------


def text_corpus(rng: random.Random, size: int) -> bytes:
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randrange(2, 10))) for _ in range(5000)]
    lines = []
    total = 0
    while total < size:
        line = b"2026-11-24T%02d:%02d:%02d INFO " % (rng.randrange(24), rng.randrange(60), rng.randrange(60))
        line += b" ".join(rng.choice(words) for _ in range(rng.randrange(4, 16))) + b"\n"
        lines.append(line)
        total += len(line)
    return b"".join(lines)[:size]


def make_tree(root: Path) -> dict[str, int]:
    rng = random.Random(42)
    corpus = text_corpus(rng, 32 * MiB)
    stats = {"files": 0, "bytes": 0}

    def put(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        stats["files"] += 1
        stats["bytes"] += len(data)

    n_small = int(20000 * SCALE)
    for i in range(n_small):
        size = rng.randrange(100, 8192)
        start = rng.randrange(0, len(corpus) - size)
        put(root / "small" / f"d{i % 200:03d}" / f"f{i:05d}.txt", corpus[start : start + size])
    budget = int(1024 * MiB * SCALE)
    i = 0
    while budget > 0:
        size = min(budget, int(rng.lognormvariate(15, 1.5)) + 1024, 64 * MiB)
        put(root / "random" / f"r{i:04d}.bin", os.urandom(size))
        budget -= size
        i += 1
    budget = int(1024 * MiB * SCALE)
    i = 0
    while budget > 0:
        size = min(budget, int(rng.lognormvariate(15, 1.5)) + 1024, 64 * MiB)
        parts = []
        left = size
        while left > 0:
            piece = min(left, rng.randrange(4096, 65536))
            start = rng.randrange(0, len(corpus) - piece)
            parts.append(corpus[start : start + piece])
            left -= piece
        put(root / "text" / f"t{i:04d}.log", b"".join(parts))
        budget -= size
        i += 1
    return stats


def make_image(path: Path) -> int:
    size = int(4096 * MiB * SCALE)
    block = 4 * MiB
    rng = random.Random(7)
    corpus = text_corpus(rng, 8 * MiB)
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in range(0, size, block):
            if (offset // block) % 2 == 0:
                continue  # half of the image stays zeros (a hole)
            data = os.urandom(block) if rng.random() < 0.5 else corpus[: block // 2] * 2
            os.pwrite(f.fileno(), data, offset)
    return size


def modify(root: Path) -> None:
    """Change ~1 % of the files: 200 small files appended, 2 random and 1 text file patched in place."""
    rng = random.Random(99)
    small = sorted((root / "small").rglob("*.txt"))
    for path in rng.sample(small, max(1, len(small) // 100)):
        with open(path, "ab") as f:
            f.write(b"modified line\n")
    for sub, count in (("random", 2), ("text", 1)):
        files = sorted((root / sub).iterdir(), key=lambda p: p.stat().st_size)[-count:]
        for path in files:
            with open(path, "r+b") as f:
                f.seek(path.stat().st_size // 2)
                f.write(os.urandom(4096))


def ensure_data() -> tuple[Path, Path, dict[str, int]]:
    base = WORK / f"data-v{DATASET_VERSION}-scale{SCALE}"
    stamp = base / "stamp.json"
    tree, image = base / "tree.orig", base / "image.img"
    if not stamp.exists():
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        print(f"==> generating the dataset in {base}", flush=True)
        stats = make_tree(tree)
        stats["image_bytes"] = make_image(image) if "block" not in SKIP else 0
        stamp.write_text(json.dumps(stats))
    return tree, image, json.loads(stamp.read_text())


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath, name)
            h.update(str(p.relative_to(root)).encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def warm_file(path: Path) -> None:
    """Read a file once so the timed step that follows finds it in the page cache."""
    with path.open("rb", buffering=0) as f:
        while f.read(8 * MiB):
            pass


def warm_tree(root: Path) -> None:
    """Read every file under ``root`` (a local repository; nothing for an S3 one) into the page cache."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            warm_file(Path(dirpath, name))


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# --- running ------------------------------------------------------------------------------------


def timed(
    argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[float, float, float, str]:
    """Run under /usr/bin/time -v: (wall seconds, peak RSS MiB, CPU %, stdout).

    Dirty pages left by the previous step are flushed first (untimed), so no step pays for
    another's writeback."""
    os.sync()
    t0 = time.monotonic()
    proc = subprocess.run(
        ["/usr/bin/time", "-v", *argv], capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd
    )
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} {argv[1:3]} failed ({proc.returncode}): {proc.stderr[-1500:]}")
    rss = float(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1)) / 1024  # type: ignore[union-attr]
    cpu = float(re.search(r"Percent of CPU this job got: (\d+)%", proc.stderr).group(1))  # type: ignore[union-attr]
    return wall, rss, cpu, proc.stdout


def drop_caches_not_used() -> str:
    return (
        "data hot in the page cache for every tool (the source before a backup, the repository "
        "before a restore: each reads them just before); "
        "writeback flushed before every timed step"
    )


class Tool:
    name = ""

    def maintain(self, r: Report, label: str) -> None:
        """Forget every snapshot but the latest, then free the unreferenced data."""
        raise NotImplementedError

    def __init__(self, work: Path) -> None:
        self.work = work
        self.repo = work / f"repo-{self.name}"

    def env(self) -> dict[str, str]:
        return {}

    def run(self, report: Report, step: str, argv: list[str], nbytes: int) -> str:
        wall, rss, cpu, out = timed(argv, self.env())
        repo_bytes = dir_bytes(self.repo) if self.repo.exists() else 0
        report.steps.append(Step(self.name, step, wall, nbytes, rss, cpu, repo_bytes))
        s = report.steps[-1]
        print(f"   {self.name:10s} {step:22s} {wall:7.2f}s {s.mb_per_s:8.1f} MB/s  RSS {rss:6.0f} MiB", flush=True)
        return out


class Snapmover(Tool):
    name = "snapmover"

    def __init__(self, work: Path, url: str | None = None, extra_env: dict[str, str] | None = None) -> None:
        super().__init__(work)
        self.url = url or f"file://{self.repo}"
        self.extra = extra_env or {}

    def env(self) -> dict[str, str]:
        return {"SNAPMOVER_PASSWORD": PASSWORD, "SNAPMOVER_REPOSITORY": self.url, **self.extra}

    def init(self, r: Report) -> None:
        self.run(r, "init", [SNAPMOVER, "repo", "init"], 0)

    def backup(self, r: Report, step: str, src: Path, n: int, block: bool = False) -> None:
        argv = [SNAPMOVER, "upload", "--source", str(src)] + (["--mode", "block"] if block else [])
        self.run(r, step, argv, n)

    def restore(self, r: Report, step: str, dst: Path, n: int, block: bool = False) -> None:
        sid = json.loads(
            subprocess.run(
                [SNAPMOVER, "snapshots", "--json"],
                capture_output=True,
                text=True,
                env={**os.environ, **self.env()},
                check=True,
            ).stdout
        )
        latest = sid["snapshots"][-1]["id"] if isinstance(sid, dict) else sid[-1]["id"]
        argv = [SNAPMOVER, "download", "--snapshot", latest, "--target", str(dst)] + (
            ["--mode", "block"] if block else []
        )
        self.run(r, step, argv, n)

    def maintain(self, r: Report, label: str) -> None:
        self.run(r, f"{label}forget", [SNAPMOVER, "forget", "--keep-last", "1"], 0)
        self.run(r, f"{label}prune", [SNAPMOVER, "prune"], dir_bytes(self.repo) if self.repo.exists() else 0)


class Restic(Tool):
    name = "restic"

    def __init__(self, work: Path, url: str | None = None, extra_env: dict[str, str] | None = None) -> None:
        super().__init__(work)
        self.url = url or str(self.repo)
        self.extra = extra_env or {}

    def env(self) -> dict[str, str]:
        return {
            "RESTIC_PASSWORD": PASSWORD,
            "RESTIC_REPOSITORY": self.url,
            "RESTIC_CACHE_DIR": str(self.work / "restic-cache"),
            **self.extra,
        }

    def init(self, r: Report) -> None:
        self.run(r, "init", ["restic", "init"], 0)

    def backup(self, r: Report, step: str, src: Path, n: int, block: bool = False) -> None:
        wall, rss, cpu, _ = timed(["restic", "backup", "--quiet", src.name], self.env(), cwd=src.parent)
        r.steps.append(Step(self.name, step, wall, n, rss, cpu, dir_bytes(self.repo) if self.repo.exists() else 0))
        s = r.steps[-1]
        print(f"   {self.name:10s} {step:22s} {wall:7.2f}s {s.mb_per_s:8.1f} MB/s  RSS {rss:6.0f} MiB", flush=True)

    def restore(self, r: Report, step: str, dst: Path, n: int, block: bool = False) -> None:
        self.run(r, step, ["restic", "restore", "latest", "--target", str(dst)], n)

    def maintain(self, r: Report, label: str) -> None:
        self.run(r, f"{label}forget", ["restic", "forget", "--keep-last", "1"], 0)
        self.run(r, f"{label}prune", ["restic", "prune"], dir_bytes(self.repo) if self.repo.exists() else 0)


class Borg(Tool):
    name = "borg"

    def env(self) -> dict[str, str]:
        return {
            "BORG_PASSPHRASE": PASSWORD,
            "BORG_REPO": str(self.repo),
            "BORG_BASE_DIR": str(self.work / "borg-base"),
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
        }

    def init(self, r: Report) -> None:
        self.run(r, "init", ["borg", "init", "-e", "repokey-blake2"], 0)

    def backup(self, r: Report, step: str, src: Path, n: int, block: bool = False) -> None:
        wall, rss, cpu, _ = timed(
            ["borg", "create", f"::{step}-{time.time_ns()}", src.name], self.env(), cwd=src.parent
        )
        r.steps.append(Step(self.name, step, wall, n, rss, cpu, dir_bytes(self.repo)))
        s = r.steps[-1]
        print(f"   {self.name:10s} {step:22s} {wall:7.2f}s {s.mb_per_s:8.1f} MB/s  RSS {rss:6.0f} MiB", flush=True)

    def restore(self, r: Report, step: str, dst: Path, n: int, block: bool = False) -> None:
        last = subprocess.run(
            ["borg", "list", "--last", "1", "--short"],
            capture_output=True,
            text=True,
            env={**os.environ, **self.env()},
            check=True,
        ).stdout.strip()
        dst.mkdir(parents=True, exist_ok=True)
        wall, rss, cpu, _ = timed(["borg", "extract", f"::{last}"], self.env(), cwd=dst)
        r.steps.append(Step(self.name, step, wall, n, rss, cpu, dir_bytes(self.repo)))
        s = r.steps[-1]
        print(f"   {self.name:10s} {step:22s} {wall:7.2f}s {s.mb_per_s:8.1f} MB/s  RSS {rss:6.0f} MiB", flush=True)

    def maintain(self, r: Report, label: str) -> None:
        self.run(r, f"{label}forget", ["borg", "prune", "--keep-last", "1"], 0)
        self.run(r, f"{label}prune", ["borg", "compact"], dir_bytes(self.repo) if self.repo.exists() else 0)


def restored_root(tool: str, dst: Path, name: str) -> Path:
    """Where a tool put the restored tree (restic/borg keep the relative path)."""
    return dst if tool == "snapmover" else dst / name


def filesystem_round(report: Report, tools: list[Tool], orig: Path, stats: dict[str, int], label: str = "") -> None:
    total = stats["bytes"]
    for tool in tools:
        src = tool.work / "tree"
        shutil.rmtree(src, ignore_errors=True)
        subprocess.run(["cp", "-a", str(orig), str(src)], check=True)
        tool.init(report)
        tree_digest(src)  # read once so every tool starts with the data hot
        tool.backup(report, f"{label}backup-initial", src, total)
        tool.backup(report, f"{label}backup-nochange", src, total)
        modify(src)
        tool.backup(report, f"{label}backup-1pct-changed", src, total)
        dst = tool.work / "restore"
        shutil.rmtree(dst, ignore_errors=True)
        warm_tree(tool.repo)  # the repository hot for every tool (however its backup wrote it)
        tool.restore(report, f"{label}restore", dst, total)
        ok = tree_digest(restored_root(tool.name, dst, src.name)) == tree_digest(src)
        report.steps[-1].ok = ok
        if not ok:
            report.steps[-1].note = "RESTORED DATA DIFFERS"
            print(f"   !! {tool.name}: restored data differs", flush=True)
        # The trees stay until the run ends (the whole run directory is removed then): on an ext4
        # without a journal, files created within minutes of many deletions cost extra kernel
        # time (inodes freed recently are skipped one by one), which would slow down whichever
        # tool happened to restore right after another tool's trees were deleted.
        tool.maintain(report, label)  # repository maintenance on the repository just built


def block_round(report: Report, work: Path, image: Path, size: int) -> None:
    sm = Snapmover(work / "block")
    sm.work.mkdir(parents=True, exist_ok=True)
    sm.init(report)
    warm_file(image)
    sm.backup(report, "block-backup", image, size, block=True)
    target = sm.work / "restored.img"
    warm_tree(sm.repo)
    sm.restore(report, "block-restore", target, size, block=True)
    same = subprocess.run(["cmp", str(image), str(target)]).returncode == 0
    report.steps[-1].ok = same
    report.steps[-1].note = f"sparse: {target.stat().st_blocks * 512 // MiB} MiB allocated of {size // MiB} MiB"
    target.unlink()
    for cls in (Restic, Borg):
        if cls.name in SKIP:
            continue
        tool = cls(work / f"block-{cls.name}")
        tool.work.mkdir(parents=True, exist_ok=True)
        tool.init(report)
        staged = tool.work / "image"
        staged.mkdir(exist_ok=True)
        os.link(image, staged / "image.img") if not (staged / "image.img").exists() else None
        warm_file(image)
        tool.backup(report, "block-backup", staged, size)
        shutil.rmtree(staged)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def s3_round(report: Report, work: Path, orig: Path, stats: dict[str, int]) -> None:
    port = free_port()
    tmp = work / "moto-tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    creds = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1"}
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": "1024", "TMPDIR": str(tmp), **creds},
    )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            **{"aws_access_key_id": "bench", "aws_secret_access_key": "bench-secret", "region_name": "us-east-1"},
        )
        for bucket in ("snapmover-bench", "restic-bench"):
            s3.create_bucket(Bucket=bucket)
        tools: list[Tool] = [Snapmover(work / "s3-snapmover", f"s3://snapmover-bench/repo?endpoint={endpoint}", creds)]
        if "restic" not in SKIP:
            tools.append(Restic(work / "s3-restic", f"s3:{endpoint}/restic-bench", creds))
        for t in tools:
            t.work.mkdir(parents=True, exist_ok=True)
        filesystem_round(report, tools, orig, stats, label="s3-")
    finally:
        moto.send_signal(signal.SIGTERM)
        moto.wait(20)


def profile_backup(work: Path, orig: Path) -> Path:
    out = HERE / "results" / "profile-initial-backup.txt"
    repo = work / "profile-repo"
    shutil.rmtree(repo, ignore_errors=True)
    env = {**os.environ, "SNAPMOVER_PASSWORD": PASSWORD, "SNAPMOVER_REPOSITORY": f"file://{repo}"}
    subprocess.run([SNAPMOVER, "repo", "init"], env=env, check=True, capture_output=True)
    prof = work / "backup.prof"
    subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(prof), SNAPMOVER, "upload", "--source", str(orig)],
        env=env,
        check=True,
        capture_output=True,
    )
    import io
    import pstats

    buf = io.StringIO()
    stats = pstats.Stats(str(prof), stream=buf)
    stats.sort_stats("tottime").print_stats(25)
    out.write_text(
        "cProfile of `snapmover upload` (initial backup of the mixed tree), top 25 by own time.\n"
        "Worker threads' time appears under the thread functions; wall time is in latest.md.\n\n" + buf.getvalue()
    )
    shutil.rmtree(repo, ignore_errors=True)
    return out


# --- report -------------------------------------------------------------------------------------


def find(report: Report, tool: str, step: str) -> Step | None:
    return next((s for s in report.steps if s.tool == tool and s.step == step), None)


def render(report: Report) -> str:
    lines = [
        f"# snapmover vs restic vs borg — {report.started}",
        "",
        f"Machine: {report.machine}. Scale {report.scale}: {report.dataset}. {drop_caches_not_used()}.",
        "",
        "| tool | step | seconds | MB/s | peak RSS MiB | CPU % | repo MB | ok |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for s in report.steps:
        lines.append(
            f"| {s.tool} | {s.step} | {s.seconds:.2f} | {s.mb_per_s:.1f} | {s.peak_rss_mib:.0f} | "
            f"{s.cpu_percent:.0f} | {s.repo_bytes / 1e6:.1f} | {'yes' if s.ok else 'NO'} {s.note} |"
        )
    lines += [
        "",
        "## Ratios (snapmover ÷ other tool, same run)",
        "",
        "| step | vs restic | vs borg |",
        "|---|---:|---:|",
    ]
    for step in sorted({s.step for s in report.steps if s.tool == "snapmover" and s.step != "init"}):
        mine = find(report, "snapmover", step)
        cells = []
        for other in ("restic", "borg"):
            theirs = find(report, other, step)
            cells.append(
                f"{mine.mb_per_s / theirs.mb_per_s:.2f}x throughput" if mine and theirs and theirs.mb_per_s else "-"
            )
        lines.append(f"| {step} | {cells[0]} | {cells[1]} |")
    lines += ["", "## Targets (issue 4)", ""]
    lines += [f"- {t}" for t in targets(report)]
    lines += ["", "Profile of the initial backup: `bench/results/profile-initial-backup.txt`.", ""]
    return "\n".join(lines)


def targets(report: Report) -> list[str]:
    out = []

    def ratio(step: str, other: str) -> float | None:
        a, b = find(report, "snapmover", step), find(report, other, step)
        return a.mb_per_s / b.mb_per_s if a and b and b.mb_per_s else None

    for other, goal in (("restic", 3.0), ("borg", 3.0)):
        r = ratio("backup-initial", other)
        if r is not None:
            out.append(
                f"initial backup ≥ {goal}x {other}: {r:.2f}x — {'PASS' if r >= goal else f'MISS by {goal - r:.2f}x'}"
            )
    r = ratio("restore", "restic")
    if r is not None:
        out.append(f"restore ≥ 2x restic: {r:.2f}x — {'PASS' if r >= 2 else f'MISS by {2 - r:.2f}x'}")
    a, b = find(report, "snapmover", "backup-nochange"), find(report, "restic", "backup-nochange")
    if a and b:
        out.append(
            f"no-change backup time ≤ restic's: {a.seconds:.2f}s vs {b.seconds:.2f}s — "
            f"{'PASS' if a.seconds <= b.seconds else f'MISS by {a.seconds - b.seconds:.2f}s'}"
        )
    prune = find(report, "snapmover", "prune")
    if prune:
        out.append(
            f"maintenance (prune of a {prune.bytes / 1e9:.1f} GB repository) peak RSS ≤ 256 MiB: "
            f"{prune.peak_rss_mib:.0f} MiB — {'PASS' if prune.peak_rss_mib <= 256 else 'MISS'}"
        )
    worst = max((s.peak_rss_mib for s in report.steps if s.tool == "snapmover"), default=0)
    out.append(
        f"peak RSS ≤ 256 MiB in every snapmover step: max {worst:.0f} MiB — {'PASS' if worst <= 256 else 'MISS'}"
    )
    blk = find(report, "snapmover", "block-backup")
    if blk:
        out.append(
            f"block image ≥ 1 GB/s logical: backup {blk.mb_per_s / 1000:.2f} GB/s — "
            f"{'PASS' if blk.mb_per_s >= 1000 else f'MISS by {(1000 - blk.mb_per_s) / 1000:.2f} GB/s'}"
        )
        rst = find(report, "snapmover", "block-restore")
        if rst:
            out.append(f"block restore: {rst.mb_per_s / 1000:.2f} GB/s logical")
    return out


def main() -> int:
    WORK.mkdir(parents=True, exist_ok=True)
    orig, image, stats = ensure_data()
    versions = {}
    for cmd in (["restic", "version"], ["borg", "--version"], [SNAPMOVER, "--version"]):
        with_out = subprocess.run(cmd, capture_output=True, text=True)
        versions[cmd[0].rsplit("/", 1)[-1]] = with_out.stdout.strip().splitlines()[0] if with_out.stdout else "?"
    machine = {
        "cpus": str(os.cpu_count()),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        **versions,
    }
    report = Report(datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), machine, SCALE, stats)
    run_dir = WORK / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    tools: list[Tool] = [Snapmover(run_dir / "snapmover")]
    if "restic" not in SKIP:
        tools.append(Restic(run_dir / "restic"))
    if "borg" not in SKIP:
        tools.append(Borg(run_dir / "borg"))
    for t in tools:
        t.work.mkdir(parents=True, exist_ok=True)
    print("==> filesystem round", flush=True)
    filesystem_round(report, tools, orig, stats)
    if "block" not in SKIP:
        print("==> block image round", flush=True)
        block_round(report, run_dir, image, stats["image_bytes"])
    if "s3" not in SKIP:
        print("==> S3 round (moto on 127.0.0.1)", flush=True)
        s3_round(report, run_dir, orig, stats)
    if "profile" not in SKIP:
        print("==> profiling the initial backup", flush=True)
        profile_backup(run_dir, orig)
    report.machine["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    (HERE / "results" / "latest.json").write_text(
        json.dumps({**asdict(report), "targets": targets(report)}, indent=1, default=str)
    )
    (HERE / "results" / "latest.md").write_text(render(report))
    print("\n" + "\n".join(targets(report)))
    shutil.rmtree(run_dir, ignore_errors=True)
    return 0 if all(s.ok for s in report.steps) else 1


if __name__ == "__main__":
    sys.exit(main())
