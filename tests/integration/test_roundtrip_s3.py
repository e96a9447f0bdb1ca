"""The same round trip through S3 (a real S3-protocol server on 127.0.0.1) and the CLI:
upload, incremental upload, download, block mode; the fixture starts moto in server mode."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.integration.test_cli_data import snapmover
from tests.unit.jobs.volume.treecompare import MiB, compare_trees, make_sample_tree, write_sparse

pytestmark = pytest.mark.integration


@pytest.fixture
def env(s3_url: str, s3_env: dict[str, str]) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("SNAPMOVER_")}
    e.update(s3_env)
    e["SNAPMOVER_REPOSITORY"] = s3_url
    e["SNAPMOVER_PASSWORD"] = "s3 round trip"
    snapmover("repo", "init", "--pack-size", "4", env=e)
    return e


def test_filesystem_round_trip_through_s3(env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_sample_tree(src, large_bytes=6 * MiB)
    first = json.loads(snapmover("upload", "--source", str(src), "--json", env=env).stdout)
    (src / "added.txt").write_bytes(b"second snapshot")
    second = json.loads(snapmover("upload", "--source", str(src), "--json", env=env).stdout)
    assert second["parent_id"] == first["snapshot_id"]
    assert second["incremental_bytes"] == len(b"second snapshot")
    target = tmp_path / "restored"
    snapmover("download", "--snapshot", second["snapshot_id"], "--target", str(target), env=env)
    assert compare_trees(src, target) == []
    assert json.loads(snapmover("repo", "check", "--read-data", "--json", env=env).stdout)["ok"] is True


def test_block_round_trip_through_s3(env: dict[str, str], tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    write_sparse(image, 24 * MiB, [(2 * MiB, os.urandom(5 * MiB)), (20 * MiB, b"end")])
    up = json.loads(snapmover("upload", "--source", str(image), "--mode", "block", "--json", env=env).stdout)
    out = tmp_path / "out.img"
    snapmover("download", "--snapshot", up["snapshot_id"], "--target", str(out), "--mode", "block", env=env)
    assert out.read_bytes() == image.read_bytes()
