"""Tree blobs: the serialized directory listings that snapshots point at.

A snapshot manifest names one root *tree*. A tree is one blob (kind ``tree``) holding the
entries (:class:`Node`) of one directory, sorted by name; a directory entry points at its own
tree with ``subtree``, a file entry lists its chunks in ``content``. Block-volume snapshots have a
root tree with exactly one node of type ``block``. The repository walks trees (for ``check``
and ``prune``) only through :func:`referenced_ids`; the volume layer builds and reads nodes.

Encoding (pinned by FORMAT.md and the golden vectors): UTF-8 JSON,
``{"v": 1, "entries": [node, ...]}`` with keys sorted and defaults omitted. Names that are not
valid UTF-8 are carried with Python's ``surrogateescape`` (JSON ``\\udcXX`` escapes) so any
byte string survives. ``content`` is a list of ``[chunk id hex | null, length]`` pairs where
``null`` is a run of zero bytes that was never stored (a hole on restore).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any, Final

from jobs.errors import IntegrityError

TREE_FORMAT_VERSION: Final = 1

NODE_FILE: Final = "file"
NODE_DIR: Final = "dir"
NODE_SYMLINK: Final = "symlink"
NODE_FIFO: Final = "fifo"
NODE_CHARDEV: Final = "chardev"
NODE_BLOCKDEV: Final = "blockdev"
NODE_SOCKET: Final = "socket"
NODE_BLOCK_VOLUME: Final = "block"  # the whole raw volume of a block-mode snapshot
NODE_TYPES: Final = frozenset(
    {
        NODE_FILE,
        NODE_DIR,
        NODE_SYMLINK,
        NODE_FIFO,
        NODE_CHARDEV,
        NODE_BLOCKDEV,
        NODE_SOCKET,
        NODE_BLOCK_VOLUME,
    }
)

# One piece of a file: (chunk id as hex, or None for an unstored zero run; length in bytes).
ContentRef = tuple[str | None, int]


@dataclass
class Node:
    """One directory entry with the metadata a faithful restore needs."""

    name: str
    type: str
    mode: int = 0  # permission bits incl. setuid/setgid/sticky (stat.S_IMODE)
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime_ns: int = 0
    atime_ns: int = 0
    ctime_ns: int = 0  # recorded for incremental change detection; cannot be restored
    inode: int = 0
    dev: int = 0
    nlink: int = 1
    rdev: int = 0  # device number of chardev/blockdev nodes
    target: str = ""  # symlink target
    xattrs: dict[str, str] = field(default_factory=dict)  # name -> base64 of the value
    content: list[ContentRef] = field(default_factory=list)
    subtree: str | None = None  # chunk id hex of the directory's tree blob

    def to_json(self) -> dict[str, Any]:
        """The node as a JSON-ready dict, omitting fields at their default value, its keys (and
        its xattrs' names) already in sorted order, so the encoder needs no ``sort_keys`` pass.

        Runs once per entry of every backup: it reads the instance dict against a precomputed
        list of defaults instead of asking ``dataclasses.fields`` each time (a fifth of a
        small-file backup's main-thread time went there)."""
        values = self.__dict__
        out: dict[str, Any] = {}
        for name, default in _SORTED_FIELDS:
            value = values[name]
            if value != default:  # name and type have no default (MISSING): always written
                out[name] = value
        xattrs = out.get("xattrs")
        if xattrs is not None and len(xattrs) > 1:
            out["xattrs"] = dict(sorted(xattrs.items()))
        return out  # content: (id, length) tuples encode as JSON arrays, no copy needed

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Node:
        """Build a node from its JSON dict; raises IntegrityError when it is malformed."""
        try:
            content = data.pop("content", ())  # the dict is ours (fresh from the JSON decoder)
            node = cls(**data)
            node.content = [(cid, int(length)) for cid, length in content]
        except (TypeError, ValueError) as e:
            raise IntegrityError(f"malformed tree entry: {e}") from e
        if node.type not in NODE_TYPES:
            raise IntegrityError(f"malformed tree entry: unknown node type {node.type!r}")
        return node


_DEFAULTS: Final[dict[str, Any]] = {
    f.name: (f.default_factory() if callable(f.default_factory) else f.default) for f in fields(Node)
}
# Every field in sorted name order with its default: written only when it differs from it
# (name and type, which have none, always; content, whose default is empty, when it has pieces).
_SORTED_FIELDS: Final[tuple[tuple[str, Any], ...]] = tuple(sorted(_DEFAULTS.items()))


def encode_tree(nodes: list[Node]) -> bytes:
    """Serialize one directory's entries (sorted by name) as a tree blob plaintext."""
    entries = [n.to_json() for n in sorted(nodes, key=lambda n: n.name)]
    # every dict is built in sorted key order ("entries" < "v"; Node.to_json): the bytes are
    # those of sort_keys=True, without its per-dict sort
    return json.dumps({"entries": entries, "v": TREE_FORMAT_VERSION}, separators=(",", ":")).encode(
        "utf-8", "surrogatepass"
    )


# Stands for an entry left out of encode_tree_parts' pieces: a JSON string of one NUL, which no
# name, target or base64 xattr value can be (a NUL inside a longer string is not it either).
_HOLE: Final = "\0"
_HOLE_JSON: Final = json.dumps(_HOLE)

TreeParts = list[str | Node]


def encode_tree_parts(nodes: list[Node], holes: list[Node]) -> TreeParts:
    """:func:`encode_tree` with the entries ``holes`` (some of ``nodes``) still open: the encoded
    text of everything else with those nodes in their places, for :func:`join_tree_parts` to
    finish once they are filled in (a directory's subdirectory entries need their subtree ids).
    All but the holes is encoded in one go, as encode_tree does."""
    open_ids = {id(n) for n in holes}
    ordered = sorted(nodes, key=lambda n: n.name)
    entries = [_HOLE if id(n) in open_ids else n.to_json() for n in ordered]
    text = json.dumps({"entries": entries, "v": TREE_FORMAT_VERSION}, separators=(",", ":"))
    pieces = text.split(_HOLE_JSON)
    in_order = [n for n in ordered if id(n) in open_ids]
    if len(pieces) != len(in_order) + 1:  # cannot happen (see _HOLE); never guess
        raise ValueError("a tree entry encodes to the hole marker")
    parts: TreeParts = [pieces[0]]
    for node, piece in zip(in_order, pieces[1:], strict=True):
        parts += [node, piece]
    return parts


def join_tree_parts(parts: TreeParts) -> bytes:
    """The tree blob plaintext of :func:`encode_tree_parts`' pieces, its holes encoded as they are now:
    the same bytes as :func:`encode_tree` of the same nodes."""
    return "".join(p if isinstance(p, str) else _encode_entry(p) for p in parts).encode("utf-8", "surrogatepass")


def _encode_entry(node: Node) -> str:
    return json.dumps(node.to_json(), separators=(",", ":"))


def decode_tree(data: bytes | bytearray | memoryview) -> list[Node]:
    """Parse a tree blob plaintext; raises IntegrityError when it is not a valid tree."""
    try:
        doc = json.loads(str(data, "utf-8", "surrogatepass"))
    except (UnicodeDecodeError, ValueError) as e:
        raise IntegrityError(f"malformed tree blob: {e}") from e
    if not isinstance(doc, dict) or doc.get("v") != TREE_FORMAT_VERSION or not isinstance(doc.get("entries"), list):
        raise IntegrityError("malformed tree blob: unsupported version or missing entries")
    return [Node.from_json(e) for e in doc["entries"]]


def referenced_ids(nodes: list[Node]) -> Iterator[tuple[str, str]]:
    """Yield ``(kind, chunk id hex)`` for every blob the entries reference (``data`` or ``tree``)."""
    for node in nodes:
        if node.subtree is not None:
            yield "tree", node.subtree
        for cid, _length in node.content:
            if cid is not None:
                yield "data", cid
