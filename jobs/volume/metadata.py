"""File metadata: capture it for tree nodes and apply it on restore.

The engine's backup pipeline calls :func:`capture_metadata` for every directory entry it walks and
builds a :class:`jobs.repository.tree.Node` from the returned fields (this layer does not import
the repository: the field names and type strings are the tree's, pinned by a test); the restore
pipeline calls :func:`apply_metadata` with a node once the entry's contents are in place (files
first, then directories deepest first, so writing into a directory never disturbs its times).

What is captured: type, permission bits incl. setuid/setgid/sticky, owner, size, atime/mtime/ctime
in nanoseconds, inode/device/link count (hardlinks and incremental change detection), device
numbers, symlink targets, and the extended attributes a faithful restore needs (``user.*``, POSIX
ACLs, file capabilities). Names are ``str`` with ``surrogateescape`` so any byte string survives.
"""

from __future__ import annotations

import base64
import errno
import logging
import os
import stat
from typing import Final, Protocol, TypedDict

from jobs.errors import VolumeIOError

# Entry types: the same strings as jobs.repository.tree.NODE_* (tests/unit/jobs/volume pins it).
NODE_FILE: Final = "file"
NODE_DIR: Final = "dir"
NODE_SYMLINK: Final = "symlink"
NODE_FIFO: Final = "fifo"
NODE_CHARDEV: Final = "chardev"
NODE_BLOCKDEV: Final = "blockdev"
NODE_SOCKET: Final = "socket"


class EntryFields(TypedDict):
    """Metadata of one entry, named as the fields of ``jobs.repository.tree.Node``."""

    name: str
    type: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    atime_ns: int
    ctime_ns: int
    inode: int
    dev: int
    nlink: int
    rdev: int
    target: str
    xattrs: dict[str, str]


class EntryMetadata(Protocol):
    """What :func:`apply_metadata` reads (a tree Node has these attributes)."""

    type: str
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    atime_ns: int
    xattrs: dict[str, str]


log = logging.getLogger(__name__)

# Extended attributes we carry. trusted.* needs CAP_SYS_ADMIN to even read and security.selinux
# labels belong to the target cluster's policy, so both are left to the target system.
XATTR_PREFIXES: Final = ("user.",)
XATTR_NAMES: Final = frozenset({"system.posix_acl_access", "system.posix_acl_default", "security.capability"})

_TYPE_BY_FORMAT: Final = {
    stat.S_IFREG: NODE_FILE,
    stat.S_IFDIR: NODE_DIR,
    stat.S_IFLNK: NODE_SYMLINK,
    stat.S_IFIFO: NODE_FIFO,
    stat.S_IFCHR: NODE_CHARDEV,
    stat.S_IFBLK: NODE_BLOCKDEV,
    stat.S_IFSOCK: NODE_SOCKET,
}
FORMAT_BY_TYPE: Final = {v: k for k, v in _TYPE_BY_FORMAT.items()}
_IS_ROOT: Final = os.geteuid() == 0
# Errors that mean "this filesystem or this process cannot do that", not "the volume is broken".
_UNSUPPORTED_ERRNOS: Final = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES, errno.EINVAL})


def node_type(st: os.stat_result) -> str | None:
    """The tree node type of a stat result, None for kinds we cannot represent."""
    return _TYPE_BY_FORMAT.get(stat.S_IFMT(st.st_mode))


def capture_metadata(name: str, path: str, st: os.stat_result) -> EntryFields:
    """The metadata of one entry from its ``lstat`` result (reads the link target and xattrs).

    Raises VolumeIOError when the entry vanished or cannot be read.
    """
    kind = node_type(st)
    if kind is None:
        raise VolumeIOError(f"{path}: unsupported file type {stat.S_IFMT(st.st_mode):o}")
    fields = EntryFields(
        name=name,
        type=kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        size=st.st_size if kind in (NODE_FILE, NODE_SYMLINK) else 0,
        mtime_ns=st.st_mtime_ns,
        atime_ns=st.st_atime_ns,
        ctime_ns=st.st_ctime_ns,
        inode=st.st_ino,
        dev=st.st_dev,
        nlink=st.st_nlink if kind != NODE_DIR else 1,
        rdev=st.st_rdev if kind in (NODE_CHARDEV, NODE_BLOCKDEV) else 0,
        target="",
        xattrs={},
    )
    try:
        if kind == NODE_SYMLINK:
            fields["target"] = os.readlink(path)
        else:
            fields["xattrs"] = read_xattrs(path)
    except FileNotFoundError as e:
        raise VolumeIOError(f"{path}: vanished while reading its metadata") from e
    except OSError as e:
        raise VolumeIOError(f"{path}: cannot read metadata: {e.strerror}") from e
    return fields


def read_xattrs(path: str) -> dict[str, str]:
    """The carried extended attributes of ``path`` (not following symlinks), values base64."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in _UNSUPPORTED_ERRNOS:
            return {}
        raise
    out: dict[str, str] = {}
    for attr in names:
        if not (attr.startswith(XATTR_PREFIXES) or attr in XATTR_NAMES):
            continue
        try:
            value = os.getxattr(path, attr, follow_symlinks=False)
        except OSError as e:
            if e.errno in (errno.ENODATA, *_UNSUPPORTED_ERRNOS):
                continue
            raise
        out[attr] = base64.b64encode(value).decode("ascii")
    return out


def apply_metadata(path: str, node: EntryMetadata) -> None:
    """Give ``path`` the node's owner, xattrs, mode and times (in that order: chown clears setuid).

    Owner changes are attempted only as root (a non-root restore keeps the restoring user as
    owner); xattrs the target filesystem refuses are logged and skipped. Raises VolumeIOError
    when the entry cannot be updated at all.
    """
    is_link = node.type == NODE_SYMLINK
    try:
        if _IS_ROOT:
            os.chown(path, node.uid, node.gid, follow_symlinks=False)
        if not is_link:
            _apply_xattrs(path, node.xattrs)
            os.chmod(path, node.mode)
        os.utime(path, ns=(node.atime_ns, node.mtime_ns), follow_symlinks=False)
    except OSError as e:
        raise VolumeIOError(f"{path}: cannot set metadata: {e.strerror}") from e


def _apply_xattrs(path: str, xattrs: dict[str, str]) -> None:
    for attr, value in xattrs.items():
        try:
            os.setxattr(path, attr, base64.b64decode(value), follow_symlinks=False)
        except OSError as e:
            if e.errno not in _UNSUPPORTED_ERRNOS:
                raise
            log.warning("%s: extended attribute %s not restored: %s", path, attr, e.strerror)
