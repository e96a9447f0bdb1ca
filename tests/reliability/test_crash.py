"""Crash consistency: `kill -9` of upload and prune at seeded random moments, on file:// and S3.

After every kill: `repo check --read-data` exits 0, the next backup succeeds, and every snapshot
that existed restores byte-identical. A killed download never exits 0 unless it had already
finished (then the data is complete). Each kill is classified by how far the killed process
got, from the objects it left (a figure showing the kills really land mid-operation).
Fast variants (3 rounds) run in `make test`; the 20-round ones are marked slow.
"""

from __future__ import annotations

import random
import shutil
import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.figures import Figures
from tests.reliability.conftest import (
    Listing,
    cli_env,
    digest,
    kill_after,
    make_tree,
    repository_url,
    restore_equals,
    run,
    snapshot_ids,
    snapshot_of,
    spread,
    start,
    timed,
)

pytestmark = pytest.mark.reliability


def _prefixed(listing: dict[str, int], prefix: str) -> set[str]:
    return {name for name in listing if name.startswith(prefix)}


def upload_phase(before: dict[str, int], after: dict[str, int], hit: bool) -> str:
    """How far a killed upload got: judged from the objects it added."""
    if not hit:
        return "finished before the kill"
    if _prefixed(after, "snapshots/") - _prefixed(before, "snapshots/"):
        return "snapshot written"
    if _prefixed(after, "index/") - _prefixed(before, "index/"):
        return "packs + index written"
    if _prefixed(after, "data/") - _prefixed(before, "data/"):
        return "packs written"
    return "before any pack"


def prune_phase(before: dict[str, int], after: dict[str, int], hit: bool) -> str:
    """How far a killed prune got (FORMAT.md §10 order: repack, new index, delete index, delete packs)."""
    if not hit:
        return "finished before the kill"
    gone_packs = _prefixed(before, "data/") - _prefixed(after, "data/")
    gone_index = _prefixed(before, "index/") - _prefixed(after, "index/")
    if gone_packs:
        return "deleting packs"
    if gone_index:
        return "deleting old indexes"
    if _prefixed(after, "index/") - _prefixed(before, "index/"):
        return "new index written"
    if _prefixed(after, "data/") - _prefixed(before, "data/"):
        return "repacking"
    return "before any change"


def crash_upload_rounds(
    url: str, tmp_path: Path, rounds: int, seed: int, figures: Figures, objects: Listing, label: str
) -> None:
    env = cli_env(url)
    assert run(env, "repo", "init", "--pack-size", "1").returncode == 0  # a pack per MiB: finer crash points
    rng = random.Random(seed)
    kept: dict[str, dict[str, str]] = {}
    # calibration: start-up (open + list) and one uninterrupted upload of the same shape
    calibration = tmp_path / "calibration"
    make_tree(calibration, seed * 100 - 1, files=300, big=6)
    startup = timed(env, "snapshots", "--json")[1]
    res, full = timed(env, "upload", "--source", str(calibration))
    kept[snapshot_of(res)] = digest(calibration)
    shutil.rmtree(calibration)
    phases: Counter[str] = Counter()
    check_seconds: list[float] = []
    for i in range(rounds):
        src = tmp_path / f"src{i}"
        make_tree(src, seed * 100 + i, files=300, big=6)
        before = objects(url)
        # anywhere from the end of start-up to just past the end of the ~25 MB of data
        hit, status = kill_after(start(env, "upload", "--source", str(src)), rng.uniform(startup, 1.05 * full))
        assert hit or status == 0, f"round {i}: upload failed on its own with {status}"
        phases[upload_phase(before, objects(url), hit)] += 1
        check, seconds = timed(env, "repo", "check", "--read-data")
        assert check.returncode == 0, f"round {i}: {check.stdout} {check.stderr}"
        check_seconds.append(seconds)
        expected = digest(src)
        present = set(snapshot_ids(env))
        assert set(kept) <= present, f"round {i}: a snapshot vanished"
        for sid in present - set(kept):  # written by the killed upload just before the kill
            kept[sid] = expected
        kept[snapshot_of(run(env, "upload", "--source", str(src)))] = expected  # the next backup succeeds
        shutil.rmtree(src)
    for sid, expected in kept.items():
        restore_equals(env, sid, expected, tmp_path / "restore")
    figures.add(
        f"crash: upload ({label})",
        f"rounds; SIGKILLs by how far the upload got (start-up {startup:.2f} s, uninterrupted upload "
        f"{full:.2f} s; kill delay uniform between them, seeded)",
        f"{rounds}; " + ", ".join(f"{n} {p}" for p, n in sorted(phases.items())),
    )
    figures.add(
        f"crash: upload ({label})",
        "check --read-data after each kill; snapshots restored byte-identical",
        f"{rounds}/{rounds} passed, {spread(check_seconds)}; {len(kept)}/{len(kept)} identical",
    )


def crash_prune_rounds(
    url: str, tmp_path: Path, rounds: int, seed: int, figures: Figures, objects: Listing, label: str
) -> None:
    env = cli_env(url)
    assert run(env, "repo", "init", "--pack-size", "1").returncode == 0  # many packs: prune has work
    rng = random.Random(seed)
    shared = tmp_path / "shared"
    shared.mkdir()
    for j in range(3):
        (shared / f"s{j}.bin").write_bytes(rng.randbytes(1024 * 1024))
    live: dict[str, dict[str, str]] = {}
    counter = iter(range(10_000))

    def backup() -> None:
        src = tmp_path / "vol"
        make_tree(src, seed * 1000 + next(counter), files=60, big=2, shared=shared)
        live[snapshot_of(run(env, "upload", "--source", str(src)))] = digest(src)
        shutil.rmtree(src)

    for _ in range(4):
        backup()
    # calibration: how long an uninterrupted prune of this shape takes here
    assert run(env, "forget", next(iter(live))).returncode == 0
    live.pop(next(iter(live)))
    _res, full = timed(env, "prune")
    assert _res.returncode == 0, _res.stderr
    startup = timed(env, "snapshots", "--json")[1]
    phases: Counter[str] = Counter()
    restored = 0
    for i in range(rounds):
        backup()
        backup()
        oldest = list(live)[: len(live) - 3]  # forget down to the 3 newest
        assert run(env, "forget", *oldest).returncode == 0
        for sid in oldest:
            live.pop(sid)
        before = objects(url)
        hit, status = kill_after(start(env, "prune"), rng.uniform(startup, 1.05 * full))
        assert hit or status == 0, f"round {i}: prune failed on its own with {status}"
        phases[prune_phase(before, objects(url), hit)] += 1
        check = run(env, "repo", "check", "--read-data")
        assert check.returncode == 0, f"round {i}: {check.stdout} {check.stderr}"
        assert set(snapshot_ids(env)) == set(live), f"round {i}"
        for sid, expected in live.items():
            restore_equals(env, sid, expected, tmp_path / "restore")
            restored += 1
    backup()  # the next backup after the last kill succeeds, and a full prune cleans up
    assert run(env, "prune").returncode == 0
    assert run(env, "repo", "check", "--read-data").returncode == 0
    figures.add(
        f"crash: prune ({label})",
        f"rounds; SIGKILLs by how far prune got (start-up {startup:.2f} s, uninterrupted prune {full:.2f} s; "
        "kill delay uniform between them, seeded)",
        f"{rounds}; " + ", ".join(f"{n} {p}" for p, n in sorted(phases.items())),
    )
    figures.add(
        f"crash: prune ({label})",
        "check --read-data after each kill; live snapshots restored byte-identical",
        f"{rounds}/{rounds} passed; {restored}/{restored} identical",
    )


SLOW = pytest.mark.slow
ROUNDS = [("file", 3), ("s3", 3), pytest.param("file", 20, marks=SLOW), pytest.param("s3", 20, marks=SLOW)]


@pytest.mark.parametrize(("backend", "rounds"), ROUNDS)
def test_killed_uploads(
    backend: str, rounds: int, tmp_path: Path, figures: Figures, objects: Listing, request: pytest.FixtureRequest
) -> None:
    url = repository_url(backend, tmp_path, request)
    crash_upload_rounds(url, tmp_path, rounds, rounds + len(backend), figures, objects, f"{backend}, {rounds} rounds")


@pytest.mark.parametrize(("backend", "rounds"), [("file", 3), *ROUNDS[2:]])
def test_killed_prunes(
    backend: str, rounds: int, tmp_path: Path, figures: Figures, objects: Listing, request: pytest.FixtureRequest
) -> None:
    url = repository_url(backend, tmp_path, request)
    crash_prune_rounds(url, tmp_path, rounds, rounds + len(backend), figures, objects, f"{backend}, {rounds} rounds")


@pytest.mark.parametrize("backend", ["file", pytest.param("s3", marks=pytest.mark.slow)])
def test_killed_or_interrupted_downloads_never_report_success(
    backend: str, tmp_path: Path, figures: Figures, request: pytest.FixtureRequest
) -> None:
    env = cli_env(repository_url(backend, tmp_path, request))
    assert run(env, "repo", "init").returncode == 0
    src = tmp_path / "src"
    make_tree(src, 70, files=200, big=5)
    sid = snapshot_of(run(env, "upload", "--source", str(src)))
    expected = digest(src)
    rng = random.Random(71)
    outcomes: Counter[str] = Counter()
    for i in range(6):
        sig = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)[i % 3]
        target = tmp_path / f"partial{i}"
        proc = start(env, "download", "--snapshot", sid, "--target", str(target))
        hit, status = kill_after(proc, rng.uniform(0.2, 1.0), sig)
        if status == 0:  # only when it finished before the signal could stop it: then it is complete
            assert digest(target) == expected, f"round {i}: exit 0 with incomplete data"
            outcomes["completed before the signal"] += 1
        else:
            assert hit, f"round {i}: download failed on its own with {status}"
            outcomes[f"{signal.Signals(sig).name} -> exit {status}"] += 1
        shutil.rmtree(target, ignore_errors=True)
    figures.add(
        f"crash: download ({backend})",
        "6 downloads signalled at random moments: outcome",
        ", ".join(f"{n} x {o}" for o, n in sorted(outcomes.items())),
    )
