"""Looking inside a filesystem snapshot without restoring it: ``snapmover ls`` and ``snapmover dump``.

Called by the CLI. Paths inside a snapshot are relative to its root (the backed-up directory);
``/``, ``""`` and ``.`` name the root itself. Only the trees on the way to the path are read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Final

from jobs.engine.backup import load_trees
from jobs.engine.restore import RestoreRepository, load_root
from jobs.errors import IntegrityError, NotFoundError, UsageError
from jobs.repository.tree import NODE_DIR, NODE_FILE, Node

MiB: Final = 1024 * 1024
DUMP_WINDOW_BYTES: Final = 32 * MiB  # chunk data read ahead (and held) at once while dumping a file
ZERO_PIECE_BYTES: Final = 1 * MiB


class PathNotFoundError(NotFoundError):
    """The path does not exist in the snapshot."""


@dataclass(frozen=True)
class Entry:
    """One listed entry: its path inside the snapshot and its node."""

    path: str
    node: Node


def split_path(path: str) -> list[str]:
    """The components of a snapshot path (``..`` refused: paths never leave the snapshot)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UsageError(f"{path!r}: '..' is not allowed in a snapshot path")
    return parts


def _children(repo: RestoreRepository, node: Node) -> dict[str, Node]:
    if node.subtree is None:
        return {}
    return {n.name: n for n in load_trees(repo, [node.subtree], 2)[node.subtree]}


def find_node(repo: RestoreRepository, root_id: str, path: str) -> Entry:
    """The entry at ``path``; PathNotFoundError naming the first missing component."""
    node = load_root(repo, root_id, NODE_DIR)
    walked: list[str] = []
    for part in split_path(path):
        if node.type != NODE_DIR:
            raise PathNotFoundError(f"/{'/'.join(walked)} is a {node.type}, not a directory")
        child = _children(repo, node).get(part)
        walked.append(part)
        if child is None:
            raise PathNotFoundError(f"/{'/'.join(walked)}: no such file or directory in the snapshot")
        node = child
    return Entry("/".join(walked), node)


def list_path(repo: RestoreRepository, root_id: str, path: str) -> list[Entry]:
    """The entries of the directory at ``path``, sorted by name; a non-directory lists itself."""
    entry = find_node(repo, root_id, path)
    if entry.node.type != NODE_DIR:
        return [entry]
    prefix = entry.path + "/" if entry.path else ""
    children = _children(repo, entry.node)
    return [Entry(prefix + name, node) for name, node in sorted(children.items())]


def file_pieces(repo: RestoreRepository, node: Node, *, parallel: int = 4) -> Iterator[bytes]:
    """A file's bytes in order, a window of chunks at a time (every blob verified by the repository)."""
    content = node.content
    start = 0
    while start < len(content):
        end, window = start, 0
        while end < len(content) and (end == start or window < DUMP_WINDOW_BYTES):
            window += content[end][1] if content[end][0] is not None else 0
            end += 1
        wanted = [cid for cid, _ in content[start:end] if cid is not None]
        blobs = dict(repo.load_blobs(wanted, parallel=parallel)) if wanted else {}
        for cid, length in content[start:end]:
            if cid is None:
                for offset in range(0, length, ZERO_PIECE_BYTES):
                    yield bytes(min(ZERO_PIECE_BYTES, length - offset))
                continue
            data = bytes(blobs[cid])
            if len(data) != length:
                raise IntegrityError(f"blob {cid} has {len(data)} bytes, the tree says {length}")
            yield data
        start = end


def dump_file(repo: RestoreRepository, root_id: str, path: str, out: BinaryIO, *, parallel: int = 4) -> int:
    """Write the content of the regular file at ``path`` to ``out``; returns the bytes written.

    UsageError for a directory or any other non-file entry (the message says what it is)."""
    entry = find_node(repo, root_id, path)
    if entry.node.type == NODE_DIR:
        raise UsageError(f"/{entry.path}: is a directory; dump writes one file (use `snapmover ls` to list it)")
    if entry.node.type != NODE_FILE:
        raise UsageError(f"/{entry.path}: is a {entry.node.type}, not a regular file")
    written = 0
    for piece in file_pieces(repo, entry.node, parallel=parallel):
        out.write(piece)
        written += len(piece)
    out.flush()
    return written
