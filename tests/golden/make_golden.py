"""Regenerate the golden repository in tests/golden/repo-v1 (run deliberately, never from tests).

    .venv/bin/python -m tests.golden.make_golden

(The version-2 manifest vector alone, without touching the repository:
``.venv/bin/python -c "from tests.golden.make_golden import make_snapshot_v2; make_snapshot_v2()"``.)

The repository pins format version 1: tests/unit/jobs/repository/test_golden.py opens it with
the fixed password and checks every id, tree and byte. Regenerating it is a format change:
bump the format version in jobs/FORMAT.md and keep reading the old one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from jobs.repository.config import MiB
from jobs.repository.crypto import KdfParams
from jobs.repository.repository import Repository
from jobs.repository.snapshots import SnapshotManifest
from jobs.repository.tree import NODE_DIR, NODE_FILE, NODE_SYMLINK, Node, encode_tree
from jobs.storage.file import FileStorage

HERE = Path(__file__).parent
REPO = HERE / "repo-v1"
PASSWORD = "golden-password"
FILES = {
    "hello.txt": b"hello, snapmover\n",
    "log.txt": b"".join(b"2026-11-24T14:00:%02d INFO request id=%d served\n" % (i % 60, i) for i in range(400)),
}


def main() -> None:
    shutil.rmtree(REPO, ignore_errors=True)
    repo = Repository.init(FileStorage(REPO), PASSWORD, pack_target_bytes=1 * MiB, kdf_params=KdfParams(n=1 << 10))
    nodes = []
    ids = {}
    for name, data in FILES.items():
        cid = repo.chunk_id(data)
        repo.add_blob("data", cid, data)
        ids[name] = cid
        nodes.append(
            Node(
                name=name,
                type=NODE_FILE,
                mode=0o644,
                size=len(data),
                mtime_ns=1_700_000_000_123_456_789,
                content=[(cid, len(data))],
            )
        )
    nodes.append(Node(name="sparse", type=NODE_FILE, mode=0o600, size=8192, content=[(None, 8192)]))
    nodes.append(Node(name="link", type=NODE_SYMLINK, mode=0o777, target="hello.txt"))
    tree = encode_tree(nodes)
    tree_id = repo.chunk_id(tree)
    repo.add_blob("tree", tree_id, tree)
    top = encode_tree([Node(name=".", type=NODE_DIR, mode=0o755, subtree=tree_id)])
    top_id = repo.chunk_id(top)
    repo.add_blob("tree", top_id, top)
    repo.flush()
    manifest = SnapshotManifest(
        time="2026-11-24T14:00:00.000000Z",
        hostname="golden",
        source="/golden",
        tags={"source-namespace": "app", "source-pvc": "data"},
        root=top_id,
        summary={"total_bytes": sum(map(len, FILES.values())) + 8192, "files": 3},
    )
    sid = repo.save_snapshot(manifest)
    repo.close()
    expected = {
        "password": PASSWORD,
        "repository_id": repo.id,
        "snapshot_id": sid,
        "root": top_id,
        "tree": tree_id,
        "chunk_ids": ids,
        "tree_hex": tree.hex(),
    }
    (HERE / "expected-v1.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    print(f"golden repository written to {REPO}")


SNAPSHOT_V2 = HERE / "snapshot-v2.json"
SNAPSHOT_V2_KEY = bytes(range(32))  # a fixed test key: the vector pins the manifest encoding, not a repository
SNAPSHOT_V2_ID = "ab" * 32


def make_snapshot_v2() -> None:
    """Write a sealed version-2 manifest (one with ``excludes``) as a vector next to the repository."""
    manifest = SnapshotManifest(
        id=SNAPSHOT_V2_ID,
        time="2026-12-02T01:00:00.000000Z",
        hostname="golden",
        source="/golden",
        tags={"source-namespace": "app", "source-pvc": "data"},
        root="cd" * 32,
        summary={"total_bytes": 10, "files": 1},
        excludes=["**/cache/", "*.tmp", "!keep.tmp"],
    )
    sealed = manifest.encode(SNAPSHOT_V2_KEY)
    vector = {"key_hex": SNAPSHOT_V2_KEY.hex(), "id": SNAPSHOT_V2_ID, "sealed_hex": sealed.hex()}
    SNAPSHOT_V2.write_text(json.dumps(vector, indent=1, sort_keys=True) + "\n")
    print(f"version-2 manifest vector written to {SNAPSHOT_V2}")


if __name__ == "__main__":
    main()
    make_snapshot_v2()
