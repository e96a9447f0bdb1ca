"""Unit tests: backup excludes are applied by the walker before anything is read, are recorded in
the snapshot (a version-2 manifest, pinned by tests/golden/snapshot-v2.json), and reach the mover
from dataMoverConfig.excludes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import jobs.engine.backup as backup_module
from jobs.contract import ENV_DATAMOVER_CONFIG
from jobs.engine.backup import FilesystemBackup
from jobs.engine.pipeline import Abort
from jobs.engine.progress import ProgressTracker
from jobs.engine.restore import restore_filesystem
from jobs.errors import IntegrityError
from jobs.kube.env import JobEnv
from jobs.repository.crypto import open_sealed
from jobs.repository.snapshots import SnapshotManifest, snapshot_aad
from jobs.volume.patterns import PathFilter
from jobs.volume.source import bytes_read_total
from tests.golden.make_golden import SNAPSHOT_V2
from tests.unit.jobs.engine.fakerepo import FakeRepository, MiB
from tests.unit.jobs.kube.test_runner_options import BASE
from tests.unit.jobs.volume.treecompare import compare_trees, make_sample_tree

EXCLUDES = ["large.bin", "text.log", "/dir/", "!/dir/hard-b"]  # the negation cannot reach inside dir/


def backup(repo: FakeRepository, source: Path, excludes: list[str]) -> str:
    return (
        FilesystemBackup(
            repo,
            str(source),
            parallel=2,
            memory_budget_bytes=64 * MiB,
            progress=ProgressTracker(None),
            abort=Abort(None),
            parent_root=None,
            excludes=PathFilter.compile(excludes),
        )
        .run()
        .root
    )


def test_excluded_entries_are_never_read_nor_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    make_sample_tree(src, large_bytes=3 * MiB)
    before = bytes_read_total()
    backup(FakeRepository(), src, [])
    everything = bytes_read_total() - before

    listed: list[str] = []
    real_list_dir = backup_module.list_dir

    def spy(path: str, keep: object = None) -> object:
        listed.append(os.path.relpath(path, src))
        return real_list_dir(path, keep)  # type: ignore[arg-type]

    monkeypatch.setattr(backup_module, "list_dir", spy)
    repo = FakeRepository()
    before = bytes_read_total()
    root = backup(repo, src, EXCLUDES)
    # hard-b is another name of hard-a (read at the root either way); leaf.txt holds 4 bytes
    skipped = (src / "large.bin").stat().st_size + (src / "text.log").stat().st_size + 4
    assert bytes_read_total() - before == everything - skipped
    assert "dir" not in listed and not any(p.startswith("dir/") for p in listed)
    assert {".", "emptydir", "readonly-dir", "sticky-dir"} <= set(listed)

    target = tmp_path / "restored"
    restore_filesystem(
        repo, root, str(target), parallel=2, write_sparse=True, progress=ProgressTracker(None), abort=Abort(None)
    )
    base = os.fsencode(src)
    every = {os.path.relpath(os.path.join(d, n), base) for d, ds, fs in os.walk(base) for n in ds + fs}
    gone = {b"large.bin", b"text.log"} | {e for e in every if e == b"dir" or e.startswith(b"dir/")}
    assert compare_trees(src, target, only=every - gone) == []


def test_a_manifest_with_excludes_is_version_2_and_one_without_stays_version_1() -> None:
    key = bytes(32)
    with_excludes = SnapshotManifest(id="ab" * 32, root="cd" * 32, excludes=["*.tmp"])
    plain = json.loads(open_sealed(key, with_excludes.encode(key), snapshot_aad(with_excludes.id), "m"))
    assert plain["v"] == 2 and plain["excludes"] == ["*.tmp"]
    without = SnapshotManifest(id="ab" * 32, root="cd" * 32)
    plain = json.loads(open_sealed(key, without.encode(key), snapshot_aad(without.id), "m"))
    assert plain["v"] == 1 and "excludes" not in plain  # older snapmover releases keep reading it
    assert SnapshotManifest.decode(key, without.id, without.encode(key)).excludes == []


def test_golden_version_2_manifest_decodes() -> None:
    vector = json.loads(SNAPSHOT_V2.read_text())
    key, sealed = bytes.fromhex(vector["key_hex"]), bytes.fromhex(vector["sealed_hex"])
    manifest = SnapshotManifest.decode(key, vector["id"], sealed)
    assert manifest.excludes == ["**/cache/", "*.tmp", "!keep.tmp"]
    assert manifest.root == "cd" * 32 and manifest.tags == {"source-namespace": "app", "source-pvc": "data"}
    assert json.loads(open_sealed(key, sealed, snapshot_aad(vector["id"]), "m"))["v"] == 2
    with pytest.raises(IntegrityError):
        SnapshotManifest.decode(key, "ef" * 32, sealed)  # bound to its id


def test_job_env_carries_datamover_config_excludes_for_uploads_only() -> None:
    dmc = json.dumps({"excludes": "*.tmp\n/cache/"})
    assert JobEnv.from_environ({**BASE, ENV_DATAMOVER_CONFIG: dmc}, "upload").excludes == "*.tmp\n/cache/"
    assert JobEnv.from_environ({**BASE}, "upload").excludes == ""
    download = {**BASE, "SNAPMOVER_CR_KIND": "DataDownload", ENV_DATAMOVER_CONFIG: dmc}
    assert JobEnv.from_environ(download, "download").excludes == ""


def test_upload_and_download_help_spell_out_the_pattern_rules() -> None:
    from click.testing import CliRunner

    from jobs.cli import cli

    for command in ("upload", "download"):
        out = CliRunner().invoke(cli, [command, "--help"]).output
        for construct in ("anchors the pattern", "directories only", "**/x at any depth", "!pattern", "[!a-z]"):
            assert construct in out, (command, construct)
