"""Capturing metadata into nodes and applying it back."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from jobs.errors import VolumeIOError
from jobs.repository import tree
from jobs.repository.tree import NODE_DIR, NODE_FIFO, NODE_FILE, NODE_SYMLINK, Node, decode_tree, encode_tree
from jobs.volume import metadata
from jobs.volume.metadata import apply_metadata, capture_metadata
from tests.unit.jobs.volume.treecompare import IS_ROOT, NON_UTF8_NAME


def _node(path: Path) -> Node:
    return Node(**capture_metadata(os.fsdecode(path.name), str(path), os.lstat(path)))


def test_entry_types_are_the_tree_node_types() -> None:
    names = [n for n in dir(metadata) if n.startswith("NODE_")]
    assert len(names) == 7
    assert all(getattr(metadata, n) == getattr(tree, n) for n in names)


def test_file_node_carries_mode_times_xattrs(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    os.chmod(f, 0o4751)
    os.utime(f, ns=(1_000_000_000_000_000_001, 1_234_567_890_123_456_789))
    os.setxattr(f, "user.k", b"\x00v")
    node = _node(f)
    assert node.type == NODE_FILE
    assert node.mode == 0o4751
    assert node.size == 3
    assert node.mtime_ns == 1_234_567_890_123_456_789
    assert node.atime_ns == 1_000_000_000_000_000_001
    assert node.inode == os.lstat(f).st_ino
    assert base64.b64decode(node.xattrs["user.k"]) == b"\x00v"


def test_symlink_fifo_dir_nodes(tmp_path: Path) -> None:
    (tmp_path / "l").symlink_to("target/nowhere")
    os.mkfifo(tmp_path / "p")
    (tmp_path / "d").mkdir()
    link, fifo, d = _node(tmp_path / "l"), _node(tmp_path / "p"), _node(tmp_path / "d")
    assert (link.type, link.target) == (NODE_SYMLINK, "target/nowhere")
    assert fifo.type == NODE_FIFO
    assert (d.type, d.size, d.nlink) == (NODE_DIR, 0, 1)


def test_non_utf8_name_survives_the_tree_encoding(tmp_path: Path) -> None:
    path = tmp_path / os.fsdecode(NON_UTF8_NAME)
    path.write_bytes(b"x")
    node = _node(path)
    back = decode_tree(encode_tree([node]))[0]
    assert os.fsencode(back.name) == NON_UTF8_NAME


def test_apply_metadata_restores_mode_times_xattrs(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"x")
    os.chmod(src, 0o2640)
    os.utime(src, ns=(5, 1_700_000_000_000_000_009))
    os.setxattr(src, "user.a", b"1")
    node = _node(src)
    dst = tmp_path / "dst"
    dst.write_bytes(b"x")
    apply_metadata(str(dst), node)
    st = os.lstat(dst)
    assert stat.S_IMODE(st.st_mode) == 0o2640
    assert (st.st_atime_ns, st.st_mtime_ns) == (5, 1_700_000_000_000_000_009)
    assert os.getxattr(dst, "user.a") == b"1"


@pytest.mark.skipif(not IS_ROOT, reason="chown needs root")
def test_apply_metadata_sets_owner_before_setuid_bits(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"x")
    os.chown(src, 1000, 1001)
    os.chmod(src, 0o6755)  # after chown: chown clears the setuid/setgid bits
    node = _node(src)
    dst = tmp_path / "dst"
    dst.write_bytes(b"x")
    apply_metadata(str(dst), node)
    st = os.lstat(dst)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1001, 0o6755)


def test_symlink_times_are_set_on_the_link_itself(tmp_path: Path) -> None:
    (tmp_path / "t").write_bytes(b"")
    os.utime(tmp_path / "t", ns=(7, 7))
    link = tmp_path / "l"
    link.symlink_to("t")
    node = _node(link)
    node.mtime_ns = 123_000_000_456
    apply_metadata(str(link), node)
    assert os.lstat(link).st_mtime_ns == 123_000_000_456
    assert os.stat(tmp_path / "t").st_mtime_ns == 7


def test_vanished_entry_is_a_volume_error(tmp_path: Path) -> None:
    (tmp_path / "l").symlink_to("x")
    st = os.lstat(tmp_path / "l")
    os.unlink(tmp_path / "l")
    with pytest.raises(VolumeIOError, match="vanished"):
        capture_metadata("l", str(tmp_path / "l"), st)


def test_creation_rules_probe_learns_owner_and_umask_and_leaves_nothing(tmp_path: Path) -> None:
    from jobs.volume.metadata import CreationRules

    old = os.umask(0o027)
    try:
        rules = CreationRules.probe(str(tmp_path))
    finally:
        os.umask(old)
    assert rules.owner == (os.geteuid(), os.getegid())
    assert rules.umask == 0o027
    assert list(tmp_path.iterdir()) == []
    assert rules.creation_mode(0o640) == 0o640
    assert rules.creation_mode(0o644) is None  # the umask would take the other-read bit
    assert rules.creation_mode(0o4750) is None  # special bits: chown clears them, so chmod comes last
    assert rules.creation_mode(0o440) == (0o440 if IS_ROOT else None)  # reopening it needs root


def test_creation_rules_in_an_unusable_target_predict_nothing(tmp_path: Path) -> None:
    from jobs.volume.metadata import CreationRules

    rules = CreationRules.probe(str(tmp_path / "missing"))
    assert (rules.owner, rules.umask) == (None, None)
    node = Node(name="f", type=NODE_FILE, mode=0o600, uid=os.geteuid(), gid=os.getegid())
    assert not rules.preset(node)
