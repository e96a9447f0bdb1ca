"""Tampering through the CLI: flip a byte in, truncate or delete each kind of repository object.

Two snapshots are made of different trees: A first, then B, whose upload adds its own packs, index
file and manifest. The victim is one of B's objects (or the shared config / key file, or a lock
held by a SIGSTOPped upload). Then `repo check --read-data` exits non-zero and names the object;
a download that needs the damaged object exits non-zero and never claims success; everything the
damage does not touch (snapshot A, a later backup) still works.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.figures import Figures
from tests.reliability.conftest import (
    PASSWORD,
    SNAPMOVER,
    cli_env,
    digest,
    make_tree,
    restore_equals,
    run,
    snapshot_of,
)

pytestmark = pytest.mark.reliability

KINDS = ("data/", "index/", "snapshots/", "keys/", "keys/ (other password)", "config", "locks/")
DAMAGES = ("flip", "truncate", "delete")
# A deleted manifest is told from a forgotten one: the backup's index file records its snapshot id
# and forget leaves a tombstone (FORMAT.md §7, §8).
CASES = [pytest.param(kind, damage) for kind in KINDS for damage in DAMAGES]


def damage_object(path: Path, damage: str) -> None:
    data = path.read_bytes()
    if damage == "flip":
        pos = len(data) // 3
        path.write_bytes(data[:pos] + bytes([data[pos] ^ 0x40]) + data[pos + 1 :])
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.unlink()


def objects_of(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".tmp" not in p.name}


def stopped_upload_holding_a_lock(env: dict[str, str], root: Path, src: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start an upload, SIGSTOP it as soon as its lock object exists; returns it and the lock name."""
    proc = subprocess.Popen(
        [SNAPMOVER, "upload", "--source", str(src)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        locks = (
            sorted(p for p in (root / "locks").glob("*") if ".tmp" not in p.name) if (root / "locks").exists() else []
        )
        if locks:
            proc.send_signal(signal.SIGSTOP)
            return proc, str(locks[0].relative_to(root))
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("the upload never wrote a lock")


@pytest.mark.parametrize(("kind", "damage"), CASES)
def test_tampering_is_detected_and_named(tmp_path: Path, kind: str, damage: str, figures: Figures) -> None:
    root = tmp_path / "repo"
    env = cli_env(f"file://{root}")
    assert run(env, "repo", "init").returncode == 0
    src_a, src_b, src_c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    make_tree(src_a, 7, files=40, big=1)
    make_tree(src_b, 8, files=40, big=1)
    # C: the later backup; for the lock case big enough to be caught holding its lock
    make_tree(src_c, 9, files=400 if kind == "locks/" else 40, big=8 if kind == "locks/" else 1)
    sid_a = snapshot_of(run(env, "upload", "--source", str(src_a)))
    before_b = objects_of(root)
    sid_b = snapshot_of(run(env, "upload", "--source", str(src_b)))
    of_b = objects_of(root) - before_b
    holder = None
    if kind == "locks/":
        holder, victim = stopped_upload_holding_a_lock(env, root, src_c)
    elif kind == "keys/ (other password)":
        from jobs.repository.repository import Repository
        from jobs.storage.file import FileStorage

        with Repository.open(FileStorage(root), PASSWORD) as repository:
            victim = repository.add_password("another-password")
    elif kind in ("keys/", "config"):
        victim = sorted(n for n in objects_of(root) if n.startswith(kind))[0]
    else:  # one of B's own objects; for packs the biggest (its data pack)
        victim = max((n for n in of_b if n.startswith(kind)), key=lambda n: (root / n).stat().st_size)
    try:
        damage_object(root / victim, damage)
        check = run(env, "repo", "check", "--read-data")
        output = check.stdout + check.stderr
        assert "Traceback" not in output
        if damage == "delete" and kind in ("locks/", "keys/ (other password)"):
            # a vanished lock or a removed extra password is not damage: nothing is lost
            assert check.returncode == 0, output
            restore_equals(env, sid_b, digest(src_b), tmp_path / "out")
            figures.add("tamper", f"{kind} {damage}", "not damage: check passes, snapshots restore")
            return
        assert check.returncode != 0, output
        if (kind, damage) == ("keys/", "delete"):  # gone, so it cannot be named; the absence is
            assert "no key files" in output, output
        elif (kind, damage) == ("index/", "delete"):
            assert "in no index" in output and any(n in output for n in of_b if n.startswith("data/")), output
        else:
            assert victim in output, output
        whole_repository = kind in ("keys/", "config")
        affects_b = kind in ("data/", "index/", "snapshots/")
        b_out = tmp_path / "out-b"
        down_b = run(env, "download", "--snapshot", sid_b, "--target", str(b_out))
        assert "Traceback" not in down_b.stderr
        if affects_b or whole_repository:
            assert down_b.returncode != 0, f"download of a damaged snapshot exited 0: {down_b.stdout}"
            assert "restored snapshot" not in down_b.stdout
            assert down_b.stderr.strip().splitlines()[-1].startswith("snapmover: error:")
        else:
            assert down_b.returncode == 0 and digest(b_out) == digest(src_b), down_b.stderr
        if whole_repository:
            down_a = run(env, "download", "--snapshot", sid_a, "--target", str(tmp_path / "out-a"))
            assert down_a.returncode != 0 and not (tmp_path / "out-a").exists()
        else:  # the rest of the repository stays usable: A restores, a new backup works and restores
            restore_equals(env, sid_a, digest(src_a), tmp_path / "out-a")
            if holder is None:
                sid_d = snapshot_of(run(env, "upload", "--source", str(src_c)))
                restore_equals(env, sid_d, digest(src_c), tmp_path / "out-d")
        figures.add(
            "tamper",
            f"{kind} {damage}",
            f"check exit {check.returncode}, names it; download of the affected snapshot exit "
            f"{down_b.returncode}; unaffected data {'unusable (whole repository)' if whole_repository else 'restored'}",
        )
    finally:
        if holder is not None:
            holder.kill()
            holder.wait(30)
