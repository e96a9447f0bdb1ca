"""Tree blobs are the bytes of ``json.dumps(sort_keys=True)`` over the nodes without their default
fields (FORMAT.md), although :func:`encode_tree` builds its dicts pre-sorted and skips the sort."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from jobs.repository.tree import Node, decode_tree, encode_tree


def reference(nodes: list[Node]) -> bytes:
    """The format's definition, written the slow way."""
    entries: list[dict[str, Any]] = []
    for node in sorted(nodes, key=lambda n: n.name):
        entry: dict[str, Any] = {}
        for f in dataclasses.fields(Node):
            default = f.default_factory() if callable(f.default_factory) else f.default
            value = getattr(node, f.name)
            if f.name in ("name", "type") or value != default:
                entry[f.name] = [list(c) for c in value] if f.name == "content" else value
        entries.append(entry)
    doc = {"v": 1, "entries": entries}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8", "surrogatepass")


def test_encoding_is_the_sorted_json_whatever_the_insertion_order() -> None:
    nodes = [
        Node(
            name="z",
            type="file",
            size=3,
            mode=0o644,
            content=[("ab" * 32, 3)],
            xattrs={"user.b": "Yg==", "user.a": "YQ=="},
        ),
        Node(name="a\udcff", type="symlink", target="z", size=1, uid=7, gid=8, mtime_ns=5),
        Node(name="d", type="dir", subtree="cd" * 32, nlink=1, inode=42, dev=3, atime_ns=1, ctime_ns=2),
        Node(name="c", type="chardev", rdev=259, xattrs={"security.selinux": "eA==", "a.b": "", "user.z": "eg=="}),
        Node(name="h", type="file", content=[(None, 4096), ("ef" * 32, 10)], size=4106, nlink=2),
    ]
    assert encode_tree(nodes) == reference(nodes)
    assert [n.name for n in decode_tree(encode_tree(nodes))] == sorted(n.name for n in nodes)
