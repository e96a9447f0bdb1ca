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
import contextlib
import errno
import logging
import os
import secrets
import stat
from dataclasses import dataclass
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


def capture_metadata(name: str, path: str, st: os.stat_result, *, file_xattrs: bool = True) -> EntryFields:
    """The metadata of one entry from its ``lstat`` result (reads the link target and xattrs).

    With ``file_xattrs=False`` a regular file's xattrs are left empty: the caller reads them
    later (:func:`read_xattrs` on the descriptor it opens anyway, or from the previous
    snapshot when the file's ctime says they did not change). Raises VolumeIOError when the
    entry vanished or cannot be read.
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
        elif file_xattrs or kind != NODE_FILE:
            fields["xattrs"] = read_xattrs(path)
    except FileNotFoundError as e:
        raise VolumeIOError(f"{path}: vanished while reading its metadata") from e
    except OSError as e:
        raise VolumeIOError(f"{path}: cannot read metadata: {e.strerror}") from e
    return fields


def file_xattrs(target: str | int, path: str) -> dict[str, str]:
    """:func:`read_xattrs` of a regular file (by path or open descriptor), errors as
    VolumeIOError naming ``path``."""
    try:
        return read_xattrs(target)
    except FileNotFoundError as e:
        raise VolumeIOError(f"{path}: vanished while reading its metadata") from e
    except OSError as e:
        raise VolumeIOError(f"{path}: cannot read metadata: {e.strerror}") from e


def read_xattrs(path: str | int) -> dict[str, str]:
    """The carried extended attributes of ``path`` (not following symlinks) or of an open
    descriptor, values base64."""
    follow = isinstance(path, int)  # a descriptor: there is no link to follow
    try:
        names = os.listxattr(path, follow_symlinks=follow)
    except OSError as e:
        if e.errno in _UNSUPPORTED_ERRNOS:
            return {}
        raise
    out: dict[str, str] = {}
    for attr in names:
        if not (attr.startswith(XATTR_PREFIXES) or attr in XATTR_NAMES):
            continue
        try:
            value = os.getxattr(path, attr, follow_symlinks=follow)
        except OSError as e:
            if e.errno in (errno.ENODATA, *_UNSUPPORTED_ERRNOS):
                continue
            raise
        out[attr] = base64.b64encode(value).decode("ascii")
    return out


@dataclass(frozen=True)
class CreationRules:
    """What a regular file this process creates in a directory it created under a restore target
    starts with, learnt by creating one (:meth:`probe`): its owner, and the mask the umask applies
    to a creation mode. A file created with :meth:`creation_mode` of its node and owned by
    :attr:`owner` already has the mode and owner :func:`apply_metadata` would set, so those two
    syscalls per file are skipped (``preset=True``)."""

    owner: tuple[int, int] | None  # (uid, gid) of new files; None: unknown
    umask: int | None  # None: modes are not predictable (unknown umask, or a default ACL decides)

    @classmethod
    def probe(cls, target: str) -> CreationRules:
        """Create and remove a probe directory and file in ``target``; unknown rules on any error."""
        probe_dir = os.path.join(target, f".snapmover-probe-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            os.mkdir(probe_dir, 0o700)
        except OSError:
            return cls(None, None)
        probe_file = os.path.join(probe_dir, "f")
        try:
            fd = os.open(probe_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o666)
            try:
                st = os.fstat(fd)
            finally:
                os.close(fd)
            umask = _process_umask()
            if umask is not None and (stat.S_IMODE(st.st_mode) != 0o666 & ~umask or _has_default_acl(probe_dir)):
                umask = None
            return cls((st.st_uid, st.st_gid), umask)
        except OSError:
            return cls(None, None)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(probe_file)
            with contextlib.suppress(OSError):
                os.rmdir(probe_dir)

    def creation_mode(self, mode: int) -> int | None:
        """The mode to create a file with so that it gets exactly ``mode``; None when it cannot.

        Not for setuid/setgid/sticky bits (a later chown would clear them), bits the umask
        removes, or, unless we are root, files we could not reopen for writing."""
        if self.umask is None or mode & ~0o777 or mode & self.umask or not (_IS_ROOT or mode & 0o200):
            return None
        return mode

    def preset(self, node: EntryMetadata) -> bool:
        """True when a file created with :meth:`creation_mode` has the node's mode and owner."""
        owned = not _IS_ROOT or self.owner == (node.uid, node.gid)
        return owned and self.creation_mode(node.mode) is not None


def _process_umask() -> int | None:
    """The umask, read without changing it (Linux /proc); None when unavailable."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _has_default_acl(path: str) -> bool:
    try:
        os.getxattr(path, "system.posix_acl_default")
    except OSError as e:
        return e.errno not in (errno.ENODATA, *_UNSUPPORTED_ERRNOS)
    return True


def apply_metadata(path: str, node: EntryMetadata, *, preset: bool = False) -> None:
    """Give ``path`` the node's owner, xattrs, mode and times (in that order: chown clears setuid).

    Owner changes are attempted only as root (a non-root restore keeps the restoring user as
    owner); xattrs the target filesystem refuses are logged and skipped. ``preset``: the file was
    created with this mode and owner (:class:`CreationRules`), only xattrs and times are set.
    Raises VolumeIOError when the entry cannot be updated at all.
    """
    is_link = node.type == NODE_SYMLINK
    try:
        if _IS_ROOT and not preset:
            os.chown(path, node.uid, node.gid, follow_symlinks=False)
        if not is_link:
            _apply_xattrs(path, node.xattrs)
            if not preset or node.xattrs:  # an access ACL rewrites the group bits: mode last
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
