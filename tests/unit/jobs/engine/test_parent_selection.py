"""jobs.engine.api.select_parent and backup(): which parent an upload uses, and why one is full.

Against a real repository in a temporary directory (file storage): "auto" picks the latest
snapshot of the same source namespace/PVC, "none" and a snapshot of the other mode give a full
backup with the reason, an unknown id fails before anything is stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.contract import TAG_SOURCE_NAMESPACE, TAG_SOURCE_PVC
from jobs.engine.api import (
    BACKUP_FULL,
    BACKUP_INCREMENTAL,
    BackupResult,
    ParentNotFoundError,
    backup,
    init_repository,
    select_parent,
)
from jobs.repository.repository import Repository

PASSWORD = "parent-selection"
PVC_A = {TAG_SOURCE_NAMESPACE: "app", TAG_SOURCE_PVC: "a"}
PVC_B = {TAG_SOURCE_NAMESPACE: "app", TAG_SOURCE_PVC: "b"}


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    repository = init_repository(f"file://{tmp_path / 'repo'}", PASSWORD)
    yield repository
    repository.close()


def tree(tmp_path: Path, name: str, content: bytes) -> Path:
    root = tmp_path / name
    root.mkdir(exist_ok=True)
    (root / "f").write_bytes(content)
    return root


def upload(
    repo: Repository, source: Path, tags: dict[str, str], parent: str = "auto", mode: str = "filesystem"
) -> BackupResult:
    return backup(repo, source, tags=tags, parent=parent, mode=mode)


def test_auto_picks_the_latest_snapshot_of_the_same_pvc(repo: Repository, tmp_path: Path) -> None:
    src = tree(tmp_path, "a", b"x" * 5000)
    first = upload(repo, src, PVC_A)
    assert (first.backup_mode, first.parent_id) == (BACKUP_FULL, None)
    assert "no parent found" in first.full_reason and "source-pvc=a" in first.full_reason
    upload(repo, tree(tmp_path, "b", b"y" * 10), PVC_B)  # newer, but of another PVC
    second = upload(repo, src, PVC_A)
    assert (second.backup_mode, second.parent_id, second.full_reason) == (BACKUP_INCREMENTAL, first.snapshot_id, "")
    third = upload(repo, src, PVC_A, parent="")  # Velero's empty string means auto
    assert third.parent_id == second.snapshot_id


def test_none_is_a_full_backup_with_its_reason(repo: Repository, tmp_path: Path) -> None:
    src = tree(tmp_path, "a", b"x" * 5000)
    upload(repo, src, PVC_A)
    full = upload(repo, src, PVC_A, parent="none")
    assert (full.backup_mode, full.parent_id) == (BACKUP_FULL, None)
    assert "parent none" in full.full_reason


def test_a_given_id_is_used_whatever_is_newer(repo: Repository, tmp_path: Path) -> None:
    src = tree(tmp_path, "a", b"x" * 5000)
    first = upload(repo, src, PVC_A)
    upload(repo, src, PVC_A)
    chosen = upload(repo, src, PVC_A, parent=first.snapshot_id)
    assert (chosen.backup_mode, chosen.parent_id) == (BACKUP_INCREMENTAL, first.snapshot_id)


def test_a_given_id_of_the_other_mode_gives_a_full_backup_saying_why(repo: Repository, tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"z" * 8192)
    block = upload(repo, image, PVC_A, mode="block")
    fs = upload(repo, tree(tmp_path, "a", b"x"), PVC_A, parent=block.snapshot_id)
    assert (fs.backup_mode, fs.parent_id) == (BACKUP_FULL, None)
    assert block.snapshot_id in fs.full_reason and "block snapshot" in fs.full_reason


def test_an_unknown_id_fails_before_anything_is_stored(repo: Repository, tmp_path: Path) -> None:
    missing = "c" * 64
    with pytest.raises(ParentNotFoundError, match=missing) as raised:
        upload(repo, tree(tmp_path, "a", b"x" * 5000), PVC_A, parent=missing)
    assert raised.value.parent == missing
    assert repo.list_snapshots() == []
    with pytest.raises(ParentNotFoundError):
        select_parent(repo, "not-hex", source="/x", mode="filesystem", tags=PVC_A)
