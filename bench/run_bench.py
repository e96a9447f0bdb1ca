"""`make bench`: snapmover side by side with restic and borg on the same data, in one run.

Datasets (bench/datasets.py; ``BENCH_DATASETS``, default all): ``mixed`` (generated ~2 GiB tree),
``realtree`` (real software trees copied from this machine, >= 50,000 files in >= 8,000
directories), ``small-100k`` and ``small-1m`` (unique small files). On each, every tool (all
repositories local and encrypted) runs the same steps one after the other: init, initial backup,
no-change backup, backup after ~1 % of the files changed, full restore (verified against the
source; verification not timed), ``check`` with every data blob read, forget all but the latest
snapshot, prune. Extra rounds (``BENCH_SKIP`` leaves them out): ``block`` (a raw image, half
holes, snapmover in block mode; restic and borg back the image up as a file), ``s3`` (the mixed
tree against a local moto server) and ``rgw`` (the same against Ceph's RADOS Gateway on
127.0.0.1, bench/rgw.py).

The same conditions for each tool: the source read into the page cache before each backup and the
repository before each restore, earlier steps' writeback flushed before each timed step, no tree
deleted until the run ends. Every command runs under /usr/bin/time -v (wall time, CPU); its peak
RSS is the larger of time's figure (the largest single process) and the summed RSS of all the
command's processes sampled every 50 ms, so a tool that forks workers is charged for all of them.

Each dataset's round is stored in ``bench/results/runs/<dataset>.json``; ``bench/results/latest.md``
(and ``.json``) renders every stored round — ratios to restic and borg, the peak-RSS growth from
100k to 1M files, and the issue's targets checked — so datasets can be re-run one at a time
(``BENCH_DATASETS=small-1m make bench``). Profiles (cProfile) of snapmover's initial backup of
the mixed tree and of the real tree's initial and no-change backups sit beside them.

Environment knobs: BENCH_DATASETS, BENCH_RESULTS (default bench/results), BENCH_SCALE (the mixed tree and image; default 1.0 = ~2 GiB +
4 GiB), BENCH_WORK (default ~/.cache/snapmover/bench), BENCH_SKIP (comma list of: block, s3, rgw,
borg, restic, profile).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import datasets
from datasets import make_image, modify
from rgw import RGW

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = Path(os.environ.get("BENCH_RESULTS", HERE / "results"))
SCALE = float(os.environ.get("BENCH_SCALE", "1.0"))
WORK = Path(os.environ.get("BENCH_WORK", Path.home() / ".cache" / "snapmover" / "bench"))
SKIP = set(filter(None, os.environ.get("BENCH_SKIP", "").split(",")))
ALL_DATASETS = ("mixed", "realtree", "small-100k", "small-1m")
DATASETS = [d for d in os.environ.get("BENCH_DATASETS", ",".join(ALL_DATASETS)).split(",") if d]
ROUND_ORDER = ("mixed", "block", "s3", "rgw", "realtree", "small-100k", "small-1m")
PASSWORD = "bench-password-not-secret"
# No tool here may ask a cloud metadata address for credentials (boto3, restic's S3 client).
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
MiB = 1024 * 1024
SNAPMOVER = str(Path(sys.executable).parent / "snapmover")
RSS_CAP_MIB = 256
GROWTH_CAP_MIB = 40


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
class Round:
    """One dataset's steps for every tool, from one run."""

    name: str
    started: str
    machine: dict[str, str]
    dataset: dict[str, int]
    steps: list[Step] = field(default_factory=list)

    def find(self, tool: str, step: str) -> Step | None:
        return next((s for s in self.steps if s.tool == tool and s.step == step), None)


# --- data (bench/datasets.py builds it) -------------------------------------------------------


def tree_digest(root: Path) -> str:
    """A digest of every entry's relative path and content (a symlink's target, not what it
    points at: real trees hold links that dangle once copied)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            p = Path(dirpath, name)
            h.update(str(p.relative_to(root)).encode())
            if p.is_symlink():
                h.update(b"symlink:" + os.fsencode(os.readlink(p)))
            else:
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
            if not os.path.islink(os.path.join(dirpath, name)):
                warm_file(Path(dirpath, name))


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# --- running ------------------------------------------------------------------------------------


def tree_rss_kib(root: int) -> int:
    """The summed VmRSS (KiB) of every descendant of process ``root`` (not ``root`` itself)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


class TreeRssSampler:
    """Samples :func:`tree_rss_kib` of one process every ``interval`` seconds in a thread; ``peak``
    is the largest sum seen (a short spike between two samples can be missed, which is why the
    caller also takes /usr/bin/time's single-process maximum)."""

    def __init__(self, root: int, interval: float = 0.05) -> None:
        self.peak_kib = 0
        self._root = root
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak_kib = max(self.peak_kib, tree_rss_kib(self._root))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak_kib


def timed(
    argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[float, float, float, str]:
    """Run under /usr/bin/time -v: (wall seconds, peak RSS MiB, CPU %, stdout).

    Peak RSS is the larger of time's (the largest single process) and the sampled sum over the
    command's processes. Dirty pages left by the previous step are flushed first (untimed), so
    no step pays for another's writeback."""
    os.sync()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        ["/usr/bin/time", "-v", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    sampler = TreeRssSampler(proc.pid)
    try:
        stdout, stderr = proc.communicate()
    finally:
        summed_kib = sampler.stop()
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} {argv[1:3]} failed ({proc.returncode}): {stderr[-1500:]}")
    largest_kib = float(re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr).group(1))  # type: ignore[union-attr]
    rss = max(largest_kib, summed_kib) / 1024
    cpu = float(re.search(r"Percent of CPU this job got: (\d+)%", stderr).group(1))  # type: ignore[union-attr]
    return wall, rss, cpu, stdout


class Tool:
    name = ""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.repo = work / f"repo-{self.name}"

    def env(self) -> dict[str, str]:
        return {}

    def run(self, r: Round, step: str, argv: list[str], nbytes: int, cwd: Path | None = None) -> str:
        wall, rss, cpu, out = timed(argv, self.env(), cwd)
        r.steps.append(Step(self.name, step, wall, nbytes, rss, cpu, dir_bytes(self.repo) if self.repo.exists() else 0))
        s = r.steps[-1]
        print(f"   {self.name:10s} {step:22s} {wall:7.2f}s {s.mb_per_s:8.1f} MB/s  RSS {rss:6.0f} MiB", flush=True)
        return out

    def query(self, argv: list[str]) -> str:
        """Run an untimed helper command (listing snapshots) in this tool's environment."""
        env = {**os.environ, **self.env()}
        return subprocess.run(argv, capture_output=True, text=True, env=env, check=True).stdout

    def init(self, r: Round) -> None:
        raise NotImplementedError

    def backup(self, r: Round, step: str, src: Path, n: int, block: bool = False) -> None:
        raise NotImplementedError

    def restore(self, r: Round, step: str, dst: Path, n: int, block: bool = False) -> None:
        raise NotImplementedError

    def check(self, r: Round) -> None:
        """Verify the repository, reading every data blob."""
        raise NotImplementedError

    def maintain(self, r: Round) -> None:
        """Forget every snapshot but the latest, then free the unreferenced data."""
        raise NotImplementedError


class Snapmover(Tool):
    name = "snapmover"

    def __init__(self, work: Path, url: str | None = None, extra_env: dict[str, str] | None = None) -> None:
        super().__init__(work)
        self.url = url or f"file://{self.repo}"
        self.extra = extra_env or {}

    def env(self) -> dict[str, str]:
        return {"SNAPMOVER_PASSWORD": PASSWORD, "SNAPMOVER_REPOSITORY": self.url, **self.extra}

    def init(self, r: Round) -> None:
        self.run(r, "init", [SNAPMOVER, "repo", "init"], 0)

    def backup(self, r: Round, step: str, src: Path, n: int, block: bool = False) -> None:
        self.run(r, step, [SNAPMOVER, "upload", "--source", str(src)] + (["--mode", "block"] if block else []), n)

    def restore(self, r: Round, step: str, dst: Path, n: int, block: bool = False) -> None:
        listed = json.loads(self.query([SNAPMOVER, "snapshots", "--json"]))
        latest = listed["snapshots"][-1]["id"] if isinstance(listed, dict) else listed[-1]["id"]
        argv = [SNAPMOVER, "download", "--snapshot", latest, "--target", str(dst)]
        self.run(r, step, argv + (["--mode", "block"] if block else []), n)

    def check(self, r: Round) -> None:
        self.run(
            r, "check", [SNAPMOVER, "repo", "check", "--read-data"], dir_bytes(self.repo) if self.repo.exists() else 0
        )

    def maintain(self, r: Round) -> None:
        self.run(r, "forget", [SNAPMOVER, "forget", "--keep-last", "1"], 0)
        self.run(r, "prune", [SNAPMOVER, "prune"], dir_bytes(self.repo) if self.repo.exists() else 0)


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

    def init(self, r: Round) -> None:
        self.run(r, "init", ["restic", "init"], 0)

    def backup(self, r: Round, step: str, src: Path, n: int, block: bool = False) -> None:
        self.run(r, step, ["restic", "backup", "--quiet", src.name], n, cwd=src.parent)

    def restore(self, r: Round, step: str, dst: Path, n: int, block: bool = False) -> None:
        self.run(r, step, ["restic", "restore", "latest", "--target", str(dst)], n)

    def check(self, r: Round) -> None:
        self.run(r, "check", ["restic", "check", "--read-data"], dir_bytes(self.repo) if self.repo.exists() else 0)

    def maintain(self, r: Round) -> None:
        self.run(r, "forget", ["restic", "forget", "--keep-last", "1"], 0)
        self.run(r, "prune", ["restic", "prune"], dir_bytes(self.repo) if self.repo.exists() else 0)


class Borg(Tool):
    name = "borg"

    def env(self) -> dict[str, str]:
        return {
            "BORG_PASSPHRASE": PASSWORD,
            "BORG_REPO": str(self.repo),
            "BORG_BASE_DIR": str(self.work / "borg-base"),
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
        }

    def init(self, r: Round) -> None:
        self.run(r, "init", ["borg", "init", "-e", "repokey-blake2"], 0)

    def backup(self, r: Round, step: str, src: Path, n: int, block: bool = False) -> None:
        self.run(r, step, ["borg", "create", f"::{step}-{time.time_ns()}", src.name], n, cwd=src.parent)

    def restore(self, r: Round, step: str, dst: Path, n: int, block: bool = False) -> None:
        last = self.query(["borg", "list", "--last", "1", "--short"]).strip()
        dst.mkdir(parents=True, exist_ok=True)
        self.run(r, step, ["borg", "extract", f"::{last}"], n, cwd=dst)

    def check(self, r: Round) -> None:
        self.run(r, "check", ["borg", "check", "--verify-data"], dir_bytes(self.repo))

    def maintain(self, r: Round) -> None:
        self.run(r, "forget", ["borg", "prune", "--keep-last", "1"], 0)
        self.run(r, "prune", ["borg", "compact"], dir_bytes(self.repo))


def restored_root(tool: str, dst: Path, name: str) -> Path:
    """Where a tool put the restored tree (restic/borg keep the relative path)."""
    return dst if tool == "snapmover" else dst / name


def local_tools(work: Path) -> list[Tool]:
    tools: list[Tool] = [Snapmover(work / "snapmover")]
    if "restic" not in SKIP:
        tools.append(Restic(work / "restic"))
    if "borg" not in SKIP:
        tools.append(Borg(work / "borg"))
    for t in tools:
        t.work.mkdir(parents=True, exist_ok=True)
    return tools


# --- rounds -------------------------------------------------------------------------------------


def filesystem_round(r: Round, tools: list[Tool], orig: Path, work: Path) -> None:
    """Every step for every tool on one copy of ``orig``; each step runs for all tools before the
    next, so the ~1 % change is made once and every tool backs up the same tree."""
    total = r.dataset["bytes"]
    src = work / "tree"
    subprocess.run(["cp", "-a", str(orig), str(src)], check=True)
    for step in ("backup-initial", "backup-nochange"):
        for tool in tools:
            if step == "backup-initial":
                tool.init(r)
            tree_digest(src)  # read once so every tool starts with the data hot
            tool.backup(r, step, src, total)
    r.dataset["changed_files"] = modify(src)
    for tool in tools:
        tree_digest(src)
        tool.backup(r, "backup-1pct-changed", src, total)
    want = tree_digest(src)
    for tool in tools:
        dst = tool.work / "restore"
        warm_tree(tool.repo)  # the repository hot for every tool (however its backup wrote it)
        tool.restore(r, "restore", dst, total)
        if tree_digest(restored_root(tool.name, dst, src.name)) != want:
            r.steps[-1].ok = False
            r.steps[-1].note = "RESTORED DATA DIFFERS"
            print(f"   !! {tool.name}: restored data differs", flush=True)
    # The trees stay until the run ends (the whole run directory is removed then): on an ext4
    # without a journal, files created within minutes of many deletions cost extra kernel time
    # (inodes freed recently are skipped one by one), which would slow down whichever tool
    # restored right after another tool's trees were deleted.
    for tool in tools:
        warm_tree(tool.repo)
        tool.check(r)
    for tool in tools:
        tool.maintain(r)


def local_round(r: Round, work: Path, orig: Path) -> None:
    filesystem_round(r, local_tools(work), orig, work)


def block_round(r: Round, work: Path, image: Path, size: int) -> None:
    sm = Snapmover(work / "block")
    sm.work.mkdir(parents=True, exist_ok=True)
    sm.init(r)
    warm_file(image)
    sm.backup(r, "block-backup", image, size, block=True)
    target = sm.work / "restored.img"
    warm_tree(sm.repo)
    sm.restore(r, "block-restore", target, size, block=True)
    r.steps[-1].ok = subprocess.run(["cmp", str(image), str(target)]).returncode == 0
    r.steps[-1].note = f"sparse: {target.stat().st_blocks * 512 // MiB} MiB allocated of {size // MiB} MiB"
    target.unlink()
    for cls in (Restic, Borg):
        if cls.name in SKIP:
            continue
        tool = cls(work / f"block-{cls.name}")
        tool.work.mkdir(parents=True, exist_ok=True)
        tool.init(r)
        staged = tool.work / "image"
        staged.mkdir(exist_ok=True)
        os.link(image, staged / "image.img")
        warm_file(image)
        tool.backup(r, "block-backup", staged, size)
        shutil.rmtree(staged)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def moto_server(work: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A moto S3 server on 127.0.0.1 (objects spilled to files under ``work``)."""
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
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", creds
    finally:
        moto.send_signal(signal.SIGTERM)
        moto.wait(20)


@contextmanager
def rgw_server(work: Path) -> Iterator[tuple[str, dict[str, str]]]:
    with RGW(work / "ceph") as rgw:
        yield rgw.endpoint, rgw.credentials


def s3_round(r: Round, work: Path, orig: Path, server: str) -> None:
    """The mixed tree's filesystem round with both repositories on one S3 server."""
    with moto_server(work) if server == "s3" else rgw_server(work) as (endpoint, creds):
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )
        for bucket in ("snapmover-bench", "restic-bench"):
            s3.create_bucket(Bucket=bucket)
        tools: list[Tool] = [Snapmover(work / "snapmover", f"s3://snapmover-bench/repo?endpoint={endpoint}", creds)]
        if "restic" not in SKIP:
            tools.append(Restic(work / "restic", f"s3:{endpoint}/restic-bench", creds))
        for t in tools:
            t.work.mkdir(parents=True, exist_ok=True)
        filesystem_round(r, tools, orig, work)


def profile(work: Path, orig: Path, name: str, nochange: bool) -> Path:
    """cProfile of snapmover's initial (or, after it, no-change) backup of ``orig``."""
    kind = "nochange-backup" if nochange else "initial-backup"
    out = RESULTS / f"profile-{name}-{kind}.txt"
    repo = work / f"profile-repo-{name}"
    shutil.rmtree(repo, ignore_errors=True)
    env = {**os.environ, "SNAPMOVER_PASSWORD": PASSWORD, "SNAPMOVER_REPOSITORY": f"file://{repo}"}
    subprocess.run([SNAPMOVER, "repo", "init"], env=env, check=True, capture_output=True)
    upload = [SNAPMOVER, "upload", "--source", str(orig)]
    if nochange:
        subprocess.run(upload, env=env, check=True, capture_output=True)
    prof = work / "backup.prof"
    subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(prof), *upload], env=env, check=True, capture_output=True
    )
    import io
    import pstats

    buf = io.StringIO()
    pstats.Stats(str(prof), stream=buf).sort_stats("tottime").print_stats(25)
    text = buf.getvalue()
    for prefix, short in ((str(ROOT) + "/", ""), (sys.prefix + "/", "<venv>/"), (sys.base_prefix + "/", "<python>/"),
                          (str(WORK) + "/", "<bench work>/")):  # fmt: skip
        text = text.replace(prefix, short)  # no machine's paths in the committed results
    out.write_text(
        f"cProfile of `snapmover upload` ({kind} of the {name} dataset), top 25 by own time.\n"
        "Worker threads' time appears under the thread functions; wall time is in latest.md.\n\n" + text
    )
    shutil.rmtree(repo, ignore_errors=True)
    return out


# --- report -------------------------------------------------------------------------------------


def load_rounds() -> dict[str, Round]:
    """Every stored round, in report order."""
    rounds = {}
    for name in ROUND_ORDER:
        path = RESULTS / "runs" / f"{name}.json"
        if path.exists():
            raw = json.loads(path.read_text())
            rounds[name] = Round(raw["name"], raw["started"], raw["machine"], raw["dataset"],
                                 [Step(**s) for s in raw["steps"]])  # fmt: skip
    return rounds


def ratio(r: Round, step: str, other: str) -> float | None:
    """snapmover's throughput ÷ the other tool's (time ratio inverted) for one step."""
    a, b = r.find("snapmover", step), r.find(other, step)
    return a.mb_per_s / b.mb_per_s if a and b and b.mb_per_s and a.bytes else None


def verdict(ok: bool, miss: str) -> str:
    return "PASS" if ok else f"MISS {miss}"


def speed_target(r: Round, step: str, other: str, goal: float, what: str) -> list[str]:
    x = ratio(r, step, other)
    if x is None:
        return []
    return [f"{r.name}: {what} ≥ {goal:g}x {other}: {x:.2f}x — {verdict(x >= goal, f'by {goal - x:.2f}x')}"]


def nochange_target(r: Round) -> list[str]:
    a, b = r.find("snapmover", "backup-nochange"), r.find("restic", "backup-nochange")
    if not (a and b):
        return []
    return [
        f"{r.name}: no-change backup time ≤ 1.0x restic's: {a.seconds:.2f}s vs {b.seconds:.2f}s "
        f"({a.seconds / b.seconds:.2f}x) — {verdict(a.seconds <= b.seconds, f'by {a.seconds - b.seconds:.2f}s')}"
    ]


def rss_target(r: Round) -> list[str]:
    mine = [s for s in r.steps if s.tool == "snapmover"]
    if not mine:
        return []
    worst = max(mine, key=lambda s: s.peak_rss_mib)
    return [
        f"{r.name}: every snapmover step ≤ {RSS_CAP_MIB} MiB peak RSS: max {worst.peak_rss_mib:.0f} MiB "
        f"({worst.step}) — {verdict(worst.peak_rss_mib <= RSS_CAP_MIB, f'by {worst.peak_rss_mib - RSS_CAP_MIB:.0f} MiB')}"
    ]


def growth(rounds: dict[str, Round]) -> list[tuple[str, str, float, float]]:
    """(tool, step, RSS at 100k, RSS at 1M) for every step both small-file rounds have."""
    small, large = rounds.get("small-100k"), rounds.get("small-1m")
    if not (small and large):
        return []
    rows = []
    for s in large.steps:
        t = small.find(s.tool, s.step)
        if t and s.step != "init":
            rows.append((s.tool, s.step, t.peak_rss_mib, s.peak_rss_mib))
    return rows


def block_targets(r: Round) -> list[str]:
    out = []
    blk, rst = r.find("snapmover", "block-backup"), r.find("snapmover", "block-restore")
    if blk:
        gbs = blk.mb_per_s / 1000
        out.append(
            f"block: image backup ≥ 1 GB/s logical: {gbs:.2f} GB/s — {verdict(gbs >= 1, f'by {1 - gbs:.2f} GB/s')}"
        )
    if rst:
        out.append(f"block: image restore {rst.mb_per_s / 1000:.2f} GB/s logical (no target)")
    return out


def targets(rounds: dict[str, Round]) -> list[str]:
    out: list[str] = []
    for name in ("mixed", "realtree"):
        if r := rounds.get(name):
            for other in ("restic", "borg"):
                out += speed_target(r, "backup-initial", other, 3.0, "initial backup")
            out += speed_target(r, "restore", "restic", 2.0, "restore")
            out += nochange_target(r)
            out += rss_target(r)
    if r := rounds.get("block"):
        out += block_targets(r)
    if r := rounds.get("small-1m"):
        out += speed_target(r, "backup-initial", "restic", 1.0, "backup faster than restic:")
        out += speed_target(r, "restore", "restic", 1.0, "restore faster than restic:")
        out += rss_target(r)
    for tool, step, small, large in growth(rounds):
        if tool == "snapmover":
            grew = large - small
            out.append(
                f"small files: {step} peak RSS growth 100k → 1M ≤ {GROWTH_CAP_MIB} MiB: {small:.0f} → {large:.0f} MiB "
                f"(+{grew:.0f}) — {verdict(grew <= GROWTH_CAP_MIB, f'by {grew - GROWTH_CAP_MIB:.0f} MiB')}"
            )
    if r := rounds.get("rgw"):
        out += speed_target(r, "backup-initial", "restic", 2.0, "backup against Ceph RGW")
        out += speed_target(r, "restore", "restic", 2.0, "restore against Ceph RGW")
    return out


def render(rounds: dict[str, Round]) -> str:
    lines = [
        "# snapmover vs restic vs borg",
        "",
        f"Conditions: {CONDITIONS}. Each round below is one run (its start time, machine and load are given);",
        "ratios compare tools within one round only.",
        "",
        "## Targets",
        "",
        *[f"- {t}" for t in targets(rounds)],
        "",
    ]
    if rows := growth(rounds):
        lines += ["## Peak RSS growth, 100k → 1M small files (MiB)", "", "| tool | step | 100k | 1M | growth |",
                  "|---|---|---:|---:|---:|"]  # fmt: skip
        lines += [f"| {t} | {s} | {a:.0f} | {b:.0f} | {b - a:+.0f} |" for t, s, a, b in rows]
        lines.append("")
    for r in rounds.values():
        lines += [
            f"## {r.name} — {r.started}",
            "",
            f"Dataset: {r.dataset}. Machine: {r.machine}.",
            "",
            "| tool | step | seconds | MB/s | peak RSS MiB | CPU % | repo MB | ok |",
            "|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for s in r.steps:
            lines.append(
                f"| {s.tool} | {s.step} | {s.seconds:.2f} | {s.mb_per_s:.1f} | {s.peak_rss_mib:.0f} | "
                f"{s.cpu_percent:.0f} | {s.repo_bytes / 1e6:.1f} | {'yes' if s.ok else 'NO'} {s.note} |"
            )
        lines += ["", "| step | snapmover ÷ restic | snapmover ÷ borg |", "|---|---:|---:|"]
        for step in dict.fromkeys(s.step for s in r.steps if s.tool == "snapmover" and s.bytes):
            cells = [f"{x:.2f}x" if (x := ratio(r, step, o)) is not None else "-" for o in ("restic", "borg")]
            lines.append(f"| {step} | {cells[0]} | {cells[1]} |")
        lines.append("")
    lines += ["Throughput ratios (time ratios inverted); profiles: `bench/results/profile-*.txt`.", ""]
    return "\n".join(lines)


CONDITIONS = (
    "data hot in the page cache for every tool (the source before a backup, the repository before a restore "
    "or check: each reads them just before); writeback flushed before every timed step; no tree deleted "
    "before the run ends"
)


# --- main ---------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    versions = {}
    for cmd in (["restic", "version"], ["borg", "--version"], [SNAPMOVER, "--version"]):
        out = subprocess.run(cmd, capture_output=True, text=True).stdout if shutil.which(cmd[0]) else ""
        versions[cmd[0].rsplit("/", 1)[-1]] = out.strip().splitlines()[0] if out else "?"
    return {
        "cpus": str(os.cpu_count()),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        **versions,
    }


def run_round(name: str, stats: dict[str, int], body: Callable[[Round, Path], None]) -> Round:
    """Run ``body(round, work)`` in a fresh run directory and store the round's result."""
    r = Round(name, datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), machine(), dict(stats))
    work = WORK / "run" / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    print(f"==> round {name}", flush=True)
    body(r, work)
    r.machine["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    (RESULTS / "runs").mkdir(parents=True, exist_ok=True)
    (RESULTS / "runs" / f"{name}.json").write_text(json.dumps(asdict(r), indent=1))
    return r


def extra_rounds(orig: Path) -> list[Round]:
    """The rounds that run beside the mixed tree: the block image and the two S3 servers."""
    done = []
    if "block" not in SKIP:
        image = orig.parent / "image.img"
        if not image.exists():
            make_image(image, SCALE)
        size = image.stat().st_size
        done.append(run_round("block", {"image_bytes": size}, partial(block_round, image=image, size=size)))
    for server in ("s3", "rgw"):
        if server not in SKIP:
            done.append(run_round(server, datasets.stats_of(orig), partial(s3_round, orig=orig, server=server)))
    return done


def main() -> int:
    unknown = set(DATASETS) - set(ALL_DATASETS)
    if unknown:
        print(f"BENCH_DATASETS: unknown {sorted(unknown)} (known: {', '.join(ALL_DATASETS)})", file=sys.stderr)
        return 2
    WORK.mkdir(parents=True, exist_ok=True)
    catalogue = datasets.datasets(SCALE)
    done: list[Round] = []
    try:
        for name in DATASETS:
            orig, stats = datasets.ensure(WORK, catalogue[name], f"-scale{SCALE}" if name == "mixed" else "")
            done.append(run_round(name, stats, partial(local_round, orig=orig)))
            if name == "mixed":
                done += extra_rounds(orig)
            if "profile" not in SKIP and name in ("mixed", "realtree"):
                profile(WORK / "run", orig, name, nochange=False)
            if "profile" not in SKIP and name == "realtree":
                profile(WORK / "run", orig, name, nochange=True)
            shutil.rmtree(WORK / "run", ignore_errors=True)
    finally:
        rounds = load_rounds()
        (RESULTS / "latest.json").write_text(
            json.dumps({"rounds": {k: asdict(v) for k, v in rounds.items()}, "targets": targets(rounds)}, indent=1)
        )
        (RESULTS / "latest.md").write_text(render(rounds))
    print("\n" + "\n".join(targets(load_rounds())))
    return 0 if all(s.ok for r in done for s in r.steps) else 1


if __name__ == "__main__":
    sys.exit(main())
