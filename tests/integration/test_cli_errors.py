"""Bad input to `snapmover`: one line on stderr, the documented exit code, no traceback, and the
repository left exactly as it was."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from jobs.contract import ExitCode
from tests.integration.test_cli_data import SNAPMOVER, snapmover

pytestmark = pytest.mark.integration


def _repo_state(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("SNAPMOVER_")}
    e["SNAPMOVER_REPOSITORY"] = f"file://{tmp_path}/repo"
    e["SNAPMOVER_PASSWORD"] = "error test password"
    snapmover("repo", "init", env=e)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data")
    snapmover("upload", "--source", str(src), env=e)
    return e


def _one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["upload", "--source", "/nonexistent/source/path"], ExitCode.VOLUME_IO, "does not exist"),
        (["download", "--snapshot", "deadbeefdeadbeef", "--target", "/tmp/never-written"], ExitCode.NOT_FOUND, ""),
        (["upload", "--source", "/tmp", "--tag", "novalue"], ExitCode.USAGE, "malformed tag"),
    ],
)
def test_bad_arguments(env: dict[str, str], tmp_path: Path, args: list[str], code: int, needle: str) -> None:
    before = _repo_state(tmp_path / "repo")
    proc = snapmover(*args, env=env, expect=code)
    assert needle in _one_line_error(proc.stderr)
    assert _repo_state(tmp_path / "repo") == before
    assert not Path("/tmp/never-written").exists()


def test_option_parsing_errors_are_usage_errors(env: dict[str, str]) -> None:
    proc = snapmover("upload", "--source", "/tmp", "--mode", "weird", env=env, expect=ExitCode.USAGE)
    assert "Invalid value for '--mode'" in proc.stderr  # click's usage message: usage line, hint, error
    snapmover("download", "--target", "/tmp/x", env=env, expect=ExitCode.USAGE)  # --snapshot is required


def test_malformed_url(env: dict[str, str], tmp_path: Path) -> None:
    for url in ("ftp://host/x", "file://relative/path", "s3://", "not a url"):
        proc = snapmover("snapshots", "--repo", url, env=env, expect=ExitCode.USAGE)
        _one_line_error(proc.stderr)


def test_missing_repository_url_and_password(env: dict[str, str], tmp_path: Path) -> None:
    no_repo = {k: v for k, v in env.items() if k != "SNAPMOVER_REPOSITORY"}
    assert "--repo" in _one_line_error(snapmover("snapshots", env=no_repo, expect=ExitCode.USAGE).stderr)
    no_password = {k: v for k, v in env.items() if k != "SNAPMOVER_PASSWORD"}
    proc = snapmover("snapshots", env=no_password, expect=ExitCode.USAGE)
    assert "password" in _one_line_error(proc.stderr)
    proc = snapmover("snapshots", "--password-file", str(tmp_path / "missing"), env=no_password, expect=ExitCode.USAGE)
    assert "password file" in _one_line_error(proc.stderr)


def test_wrong_password(env: dict[str, str], tmp_path: Path) -> None:
    before = _repo_state(tmp_path / "repo")
    wrong = dict(env, SNAPMOVER_PASSWORD="not the password")
    proc = snapmover("snapshots", env=wrong, expect=ExitCode.INTEGRITY)
    line = _one_line_error(proc.stderr)
    assert "not the password" not in line
    assert _repo_state(tmp_path / "repo") == before


def test_repository_missing_or_unreadable(env: dict[str, str], tmp_path: Path) -> None:
    missing = snapmover("snapshots", "--repo", f"file://{tmp_path}/nothing-here", env=env, expect=ExitCode.NOT_FOUND)
    _one_line_error(missing.stderr)
    not_a_dir = tmp_path / "plain-file"
    not_a_dir.write_bytes(b"")
    proc = subprocess.run(
        [SNAPMOVER, "snapshots", "--repo", f"file://{not_a_dir}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode in (ExitCode.STORAGE_UNAVAILABLE, ExitCode.NOT_FOUND), proc.stderr
    assert "Traceback" not in proc.stderr
    _one_line_error(proc.stderr)


def test_corrupted_pack_fails_download_with_exit_3(env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "src2"
    src.mkdir()
    original = os.urandom(256 * 1024)
    (src / "g").write_bytes(original)
    sid = json.loads(snapmover("upload", "--source", str(src), "--json", env=env).stdout)["snapshot_id"]
    biggest = max((p for p in (tmp_path / "repo").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(biggest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    biggest.write_bytes(bytes(data))
    out = tmp_path / "out"
    proc = snapmover("download", "--snapshot", sid, "--target", str(out), env=env, expect=ExitCode.INTEGRITY)
    _one_line_error(proc.stderr)
    if (out / "g").exists():  # created as a hole before the data phase: only verified bytes are ever written
        assert (out / "g").read_bytes() == bytes(len(original))
