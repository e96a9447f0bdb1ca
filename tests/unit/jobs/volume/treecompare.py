"""Test helpers: build a tree with every kind of entry and metadata, and compare two trees.

Used by the volume and engine unit tests and by the round-trip integration tests, so they all
check fidelity the same way: bytes AND metadata of every entry, hardlink structure, holes.
"""

from __future__ import annotations

import contextlib
import os
import random
import stat
import struct
from collections.abc import Collection
from pathlib import Path

IS_ROOT = os.geteuid() == 0
MiB = 1024 * 1024
NON_UTF8_NAME = b"caf\xe9-\xff.bin"  # not valid UTF-8
CARRIED_XATTR_PREFIXES = ("user.", "system.posix_acl_", "security.capability")


def posix_acl(entries: list[tuple[int, int, int]]) -> bytes:
    """The binary value of a system.posix_acl_* xattr: version 2, then (tag, perm, id) entries."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, ident) for tag, perm, ident in entries)


ACL_UNDEFINED = 0xFFFFFFFF
SAMPLE_ACL = posix_acl(
    [
        (0x01, 6, ACL_UNDEFINED),
        (0x02, 4, 1000),
        (0x04, 4, ACL_UNDEFINED),
        (0x10, 4, ACL_UNDEFINED),
        (0x20, 0, ACL_UNDEFINED),
    ]
)


def text_bytes(rng: random.Random, size: int) -> bytes:
    """Compressible log-like text of ``size`` bytes."""
    words = [b"alpha", b"beta", b"gamma", b"delta", b"volume", b"snapshot", b"pod", b"ready", b"\n"]
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choice(words) for _ in range(64))
    return bytes(out[:size])


def write_sparse(path: Path, size: int, data_ranges: list[tuple[int, bytes]]) -> None:
    """Create a file of ``size`` bytes that is a hole except at the given (offset, data) ranges."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in data_ranges:
            f.seek(offset)
            f.write(data)


def make_sample_tree(root: Path, *, seed: int = 1, large_bytes: int = 3 * MiB) -> None:
    """Populate ``root`` with every entry kind the mover must restore faithfully."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "empty").write_bytes(b"")
    (root / "small.txt").write_bytes(b"hello snapmover\n")
    (root / "large.bin").write_bytes(rng.randbytes(large_bytes))
    (root / "text.log").write_bytes(text_bytes(rng, 2 * MiB + 123))
    (root / "zeros.bin").write_bytes(bytes(2 * MiB))
    write_sparse(root / "sparse.img", 8 * MiB + 5, [(MiB, rng.randbytes(70_000)), (6 * MiB, b"tail data")])
    write_sparse(root / "hole-only.img", 3 * MiB, [])
    sub = root / "dir" / "nested" / "deeper"
    sub.mkdir(parents=True)
    (sub / "leaf.txt").write_bytes(b"leaf")
    (root / "emptydir").mkdir()
    (root / "link-to-small").symlink_to("small.txt")
    (root / "dangling").symlink_to("does/not/exist")
    (root / "dir" / "abs-link").symlink_to("/etc/hostname")
    (root / "hard-a").write_bytes(rng.randbytes(5000))
    os.link(root / "hard-a", root / "dir" / "hard-b")
    os.link(root / "hard-a", root / "hard-c")
    os.mkfifo(root / "fifo")
    (root / os.fsdecode(NON_UTF8_NAME)).write_bytes(b"non-utf8 name")
    (root / "unicode-é-名前.txt").write_bytes(b"unicode name")
    for name, mode in (("setuid", 0o4755), ("setgid", 0o2750), ("private", 0o600)):
        (root / name).write_bytes(name.encode())
        os.chmod(root / name, mode)
    sticky = root / "sticky-dir"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    readonly = root / "readonly-dir"
    readonly.mkdir()
    (readonly / "inside").write_bytes(b"in a read-only dir")
    os.setxattr(root / "small.txt", "user.comment", b"a user xattr")
    os.setxattr(root / "dir", "user.dirattr", b"\x00\x01binary")
    with contextlib.suppress(OSError):  # a filesystem without ACLs: compared as absent on both sides
        os.setxattr(root / "text.log", "system.posix_acl_access", SAMPLE_ACL)
    if IS_ROOT:
        os.mknod(root / "chardev", 0o640 | stat.S_IFCHR, os.makedev(1, 3))
        os.mknod(root / "blockdev", 0o600 | stat.S_IFBLK, os.makedev(7, 200))
        os.chown(root / "small.txt", 1234, 5678)
        os.chown(root / "dangling", 4321, 8765, follow_symlinks=False)
        os.chown(root / "dir", 1111, 2222)
    os.chmod(readonly, 0o555)
    for i, path in enumerate(sorted(_all_paths(root), reverse=True)):  # children before parents
        ns = 1_600_000_000_123_456_789 + i * 1_000_000_007
        os.utime(path, ns=(ns + 17, ns), follow_symlinks=False)
    os.chmod(root, 0o751)
    os.utime(root, ns=(1_500_000_000_000_000_001, 1_500_000_000_987_654_321))


def _all_paths(root: Path) -> list[bytes]:
    out = []
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        out.extend(os.path.join(dirpath, n) for n in dirnames + filenames)
    return out


def _entries(root: Path) -> dict[bytes, os.stat_result]:
    base = os.fsencode(root)
    return {os.path.relpath(p, base): os.lstat(p) for p in _all_paths(root)} | {b".": os.lstat(base)}


def _xattrs(path: bytes) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in names if n.startswith(CARRIED_XATTR_PREFIXES)}


def _hardlink_groups(entries: dict[bytes, os.stat_result]) -> set[frozenset[bytes]]:
    groups: dict[tuple[int, int], set[bytes]] = {}
    for rel, st in entries.items():
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            groups.setdefault((st.st_dev, st.st_ino), set()).add(rel)
    return {frozenset(g) for g in groups.values()}


def _read(path: bytes) -> bytes:
    """A file's bytes without touching its atime where allowed, so a tree can be compared twice."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOATIME)
    except PermissionError:  # O_NOATIME needs ownership or CAP_FOWNER
        fd = os.open(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def compare_trees(
    src: Path, dst: Path, *, check_owner: bool = IS_ROOT, only: Collection[bytes] | None = None
) -> list[str]:
    """Differences between two trees (empty list = faithful): every entry's bytes and metadata.

    atime is compared for regular files only (both sides are stat'ed before any content is read;
    listing a directory or reading a symlink updates theirs); holes are compared as "the restored
    file has no more allocated blocks than the source". ``only``: the restore must hold exactly
    these entries of the source (relative paths; the root is implied), each compared in full; a
    file's link count is then the number of its names within ``only``.
    """
    a, b = _entries(src), _entries(dst)
    if only is not None:
        a = {rel: st for rel, st in a.items() if rel in only or rel == b"."}
    diffs = []
    if set(a) != set(b):
        diffs.append(
            f"entry sets differ: only in source {sorted(set(a) - set(b))}, only in restore {sorted(set(b) - set(a))}"
        )
    groups = _hardlink_groups(a)
    names = {member: len(group) for group in groups for member in group}
    for rel in sorted(set(a) & set(b)):
        sa, sb = a[rel], b[rel]
        if only is not None and stat.S_ISREG(sa.st_mode) and sb.st_nlink != names.get(rel, 1):
            diffs.append(f"{rel!r}: st_nlink {sb.st_nlink}, expected {names.get(rel, 1)} (names within the subset)")
        pa, pb = os.path.join(os.fsencode(src), rel), os.path.join(os.fsencode(dst), rel)
        # with ``only`` a file's link count is checked above against its names within the subset
        fields = ["st_mode", "st_size", "st_mtime_ns", "st_rdev"] + ([] if only is not None else ["st_nlink"])
        if check_owner:
            fields += ["st_uid", "st_gid"]
        if stat.S_ISDIR(sa.st_mode):
            fields = [f for f in fields if f not in ("st_size", "st_nlink")]
        if stat.S_ISREG(sa.st_mode):
            # The mover reads with O_NOATIME; listing a directory or reading a link updates atime.
            fields.append("st_atime_ns")
        for f in fields:
            if getattr(sa, f) != getattr(sb, f):
                diffs.append(f"{rel!r}: {f} {getattr(sa, f)} != {getattr(sb, f)}")
        if _xattrs(pa) != _xattrs(pb):
            diffs.append(f"{rel!r}: xattrs {_xattrs(pa)} != {_xattrs(pb)}")
        if stat.S_ISLNK(sa.st_mode) and os.readlink(pa) != os.readlink(pb):
            diffs.append(f"{rel!r}: symlink target differs")
        if stat.S_ISREG(sa.st_mode) and stat.S_ISREG(sb.st_mode):
            if _read(pa) != _read(pb):
                diffs.append(f"{rel!r}: contents differ")
            if sb.st_blocks > sa.st_blocks + 8:  # 8 x 512 B: one filesystem block of slack
                diffs.append(f"{rel!r}: restored file is less sparse ({sb.st_blocks} > {sa.st_blocks} blocks)")
    groups = {g for g in groups if len(g) > 1}  # a subset may keep one name of a group
    if groups != _hardlink_groups(b):
        diffs.append(f"hardlink groups differ: {groups} != {_hardlink_groups(b)}")
    return diffs


def allocated_bytes(path: Path) -> int:
    """Bytes the filesystem allocated for ``path`` (st_blocks x 512)."""
    return os.lstat(path).st_blocks * 512
