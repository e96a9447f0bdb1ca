"""File-level restore and exclusions through the CLI, on a local and an S3 (moto) repository:
``upload --exclude/--exclude-file``, ``download --include/--exclude``, ``ls`` and ``dump``.
Every subset is compared entry by entry (bytes and metadata) with the source."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.integration.test_cli_data import snapmover
from tests.unit.jobs.volume.treecompare import NON_UTF8_NAME, compare_trees, make_sample_tree

pytestmark = pytest.mark.integration


def all_entries(root: Path) -> set[bytes]:
    base = os.fsencode(root)
    out = set()
    for dirpath, dirnames, filenames in os.walk(base):
        out.update(os.path.relpath(os.path.join(dirpath, n), base) for n in dirnames + filenames)
    return out


def under(entries: set[bytes], *prefixes: bytes) -> set[bytes]:
    """The entries equal to or inside one of ``prefixes``."""
    return {e for e in entries if any(e == p or e.startswith(p + b"/") for p in prefixes)}


@pytest.fixture
def env(storage_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("SNAPMOVER_")}
    if storage_url.startswith("s3://"):
        e.update(request.getfixturevalue("s3_env"))
    e["SNAPMOVER_REPOSITORY"] = storage_url
    e["SNAPMOVER_PASSWORD"] = "file level"
    snapmover("repo", "init", "--pack-size", "4", env=e)
    return e


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    make_sample_tree(src, large_bytes=1024 * 1024)
    return src


def test_backup_excludes_leave_entries_out_and_are_recorded(env: dict[str, str], source: Path, tmp_path: Path) -> None:
    exclude_file = tmp_path / "excludes"
    exclude_file.write_text("# images, but not the sparse one\n*.img\n!sparse.img\n\n/dir/nested/\n")
    up = json.loads(
        snapmover(
            "upload", "--source", str(source), "--exclude-file", str(exclude_file), "--exclude", "hard-c",
            "--exclude", "readonly-dir/*", "--json", env=env,
        ).stdout
    )  # fmt: skip
    patterns = ["*.img", "!sparse.img", "/dir/nested/", "hard-c", "readonly-dir/*"]
    assert up["excludes"] == patterns
    (listed,) = json.loads(snapmover("snapshots", "--json", env=env).stdout)["snapshots"]
    assert listed["excludes"] == patterns

    target = tmp_path / "restored"
    snapmover("download", "--snapshot", up["snapshot_id"], "--target", str(target), env=env)
    gone = {b"hole-only.img", b"hard-c", b"readonly-dir/inside"} | under(all_entries(source), b"dir/nested")
    expected = all_entries(source) - gone
    assert b"sparse.img" in expected and b"readonly-dir" in expected
    assert compare_trees(source, target, only=expected) == []


def test_download_include_and_exclude_restore_a_subset(env: dict[str, str], source: Path, tmp_path: Path) -> None:
    snapshot_id = snapmover("upload", "--source", str(source), env=env).stdout.strip().splitlines()[-1]
    entries = all_entries(source)
    cases: list[tuple[list[str], set[bytes]]] = [
        # a directory with all it holds, plus the directories leading to it
        (["--include", "/dir/nested"], {b"dir"} | under(entries, b"dir/nested")),
        # a name at any depth; the directories on the way come with it, empty ones do not
        (["--include", "hard-*"], {b"hard-a", b"hard-c", b"dir", b"dir/hard-b"}),
        # everything but what is excluded (a directory excluded with all it holds)
        (["--exclude", "dir/", "--exclude", "*.bin"], entries - under(entries, b"dir") - {
            b"large.bin", b"zeros.bin", NON_UTF8_NAME
        }),
        # include, then exclude inside it, then re-include by negation
        (["--include", "/dir", "--exclude", "/dir/nested/deeper/*", "--exclude", "!leaf.txt"], under(entries, b"dir")),
        (["--include", "/dir", "--exclude", "abs-link"], under(entries, b"dir") - {b"dir/abs-link"}),
    ]  # fmt: skip
    for i, (args, expected) in enumerate(cases):
        target = tmp_path / f"subset-{i}"
        snapmover("download", "--snapshot", snapshot_id, "--target", str(target), *args, env=env)
        assert compare_trees(source, target, only=expected) == [], args
    # a directory that was there before is never removed, even when the subset leaves it empty
    target = tmp_path / "existing"
    (target / "emptydir").mkdir(parents=True)
    snapmover("download", "--snapshot", snapshot_id, "--target", str(target), "--include", "hard-*", env=env)
    assert sorted(p.name for p in target.iterdir()) == ["dir", "emptydir", "hard-a", "hard-c"]


def test_ls_lists_long_and_json(env: dict[str, str], source: Path) -> None:
    snapshot_id = snapmover("upload", "--source", str(source), env=env).stdout.strip().splitlines()[-1]
    # names that are not UTF-8 come out as their bytes, as with ls(1)
    root = os.fsdecode(run_bytes(env, "ls", snapshot_id)).splitlines()
    assert "/" + os.fsdecode(NON_UTF8_NAME) in "\n".join(root)
    names = {re.sub(r"^.* \d\d:\d\d:\d\d ", "", line).split(" -> ")[0] for line in root}
    assert {"/dir", "/small.txt", "/link-to-small", "/fifo", "/readonly-dir"} <= names
    (link,) = [line for line in root if line.endswith("/link-to-small -> small.txt")]
    assert link.startswith("lrwxrwxrwx")
    (setuid,) = [line for line in root if line.endswith(" /setuid")]
    st = (source / "setuid").lstat()
    assert setuid.startswith("-rwsr-xr-x") and f" {st.st_size} " in setuid

    rows = [json.loads(line) for line in snapmover("ls", snapshot_id, "/dir", "--json", env=env).stdout.splitlines()]
    by_path = {r["path"]: r for r in rows}
    assert set(by_path) == {"/dir/abs-link", "/dir/hard-b", "/dir/nested"}
    assert by_path["/dir/abs-link"]["target"] == "/etc/hostname" and by_path["/dir/abs-link"]["type"] == "symlink"
    hard = (source / "dir" / "hard-b").lstat()
    assert (
        by_path["/dir/hard-b"]["size"] == hard.st_size
        and by_path["/dir/hard-b"]["mode"] == f"{hard.st_mode & 0o7777:04o}"
    )
    assert by_path["/dir/hard-b"]["uid"] == hard.st_uid and by_path["/dir/hard-b"]["nlink"] == 3
    assert by_path["/dir/nested"]["type"] == "dir"
    (single,) = [
        json.loads(line) for line in snapmover("ls", snapshot_id, "small.txt", "--json", env=env).stdout.splitlines()
    ]
    assert single["path"] == "/small.txt" and single["size"] == len(b"hello snapmover\n")
    missing = snapmover("ls", snapshot_id, "/dir/nope", env=env, expect=6)
    assert "/dir/nope: no such file or directory in the snapshot" in missing.stderr


def test_dump_writes_one_file_byte_for_byte(env: dict[str, str], source: Path) -> None:
    snapshot_id = snapmover("upload", "--source", str(source), env=env).stdout.strip().splitlines()[-1]
    for name in ("large.bin", "sparse.img", "zeros.bin", "empty", os.fsdecode(NON_UTF8_NAME)):
        out = run_bytes(env, "dump", snapshot_id, name)
        assert out == (source / name).read_bytes(), name
    for path, message in (("/dir", "is a directory"), ("/link-to-small", "is a symlink"), ("/nope", "no such file")):
        failed = snapmover("dump", snapshot_id, path, env=env, expect=2 if "no such" not in message else 6)
        assert message in failed.stderr


def run_bytes(env: dict[str, str], *args: str) -> bytes:
    """``snapmover`` with binary stdout (the text helper would decode it)."""
    import subprocess

    from tests.integration.test_cli_data import SNAPMOVER

    proc = subprocess.run([SNAPMOVER, *args], env=env, capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_bad_patterns_and_block_mode_are_usage_errors(env: dict[str, str], source: Path, tmp_path: Path) -> None:
    bad = snapmover("upload", "--source", str(source), "--exclude", "[unclosed", env=env, expect=2)
    assert "--exclude: pattern '[unclosed'" in bad.stderr
    missing = snapmover("upload", "--source", str(source), "--exclude-file", str(tmp_path / "nope"), env=env, expect=2)
    assert "cannot read the exclude file" in missing.stderr
    bad_file = tmp_path / "bad-excludes"
    bad_file.write_text("# fine\n*.tmp\n!\n")
    named = snapmover("upload", "--source", str(source), "--exclude-file", str(bad_file), env=env, expect=2)
    assert f"--exclude-file {bad_file}: pattern '!' matches nothing" in named.stderr
    image = tmp_path / "disk.img"
    image.write_bytes(b"\1" * 8192)
    block = snapmover("upload", "--source", str(image), "--mode", "block", "--exclude", "x", env=env, expect=2)
    assert "filesystem backups only" in block.stderr
    assert json.loads(snapmover("snapshots", "--json", env=env).stdout)["snapshots"] == []  # nothing was written
    snapshot_id = snapmover("upload", "--source", str(image), "--mode", "block", env=env).stdout.split()[-1]
    args = ["--snapshot", snapshot_id, "--target", str(tmp_path / "out.img"), "--mode", "block", "--include", "x"]
    assert "do not apply to --mode block" in snapmover("download", *args, env=env, expect=2).stderr
    assert "is a block snapshot" in snapmover("ls", snapshot_id, env=env, expect=2).stderr
