"""Golden vectors: a version-1 repository checked into tests/golden must keep opening, byte for byte.

If this fails, the on-disk format changed: that needs a new format version (jobs/FORMAT.md §12),
not a regenerated golden repository.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from jobs.errors import WrongPasswordError
from jobs.repository.maintenance import check
from jobs.repository.repository import Repository
from jobs.repository.tree import NODE_FILE, decode_tree, encode_tree
from jobs.storage.file import FileStorage
from tests.golden.make_golden import FILES

GOLDEN = Path(__file__).parents[3] / "golden"
EXPECTED = json.loads((GOLDEN / "expected-v1.json").read_text())


@pytest.fixture
def golden(tmp_path: Path) -> Repository:
    copy = tmp_path / "repo"
    shutil.copytree(GOLDEN / "repo-v1", copy)
    return Repository.open(FileStorage(copy), EXPECTED["password"])


def test_golden_repository_opens_and_verifies(golden: Repository) -> None:
    assert golden.id == EXPECTED["repository_id"]
    assert golden.config.version == 1
    assert check(golden, read_data=True).errors == []


def test_golden_ids_trees_and_bytes(golden: Repository) -> None:
    (snap,) = golden.list_snapshots()
    assert snap.id == EXPECTED["snapshot_id"]
    assert snap.root == EXPECTED["root"]
    assert snap.tags == {"source-namespace": "app", "source-pvc": "data"}
    assert snap.time == "2026-11-24T14:00:00.000000Z"
    (top,) = decode_tree(golden.load_blob(snap.root))
    assert top.subtree == EXPECTED["tree"]
    raw_tree = golden.load_blob(EXPECTED["tree"])
    assert raw_tree.hex() == EXPECTED["tree_hex"]
    nodes = {n.name: n for n in decode_tree(raw_tree)}
    assert encode_tree(list(nodes.values())) == raw_tree
    for name, data in FILES.items():
        node = nodes[name]
        assert node.type == NODE_FILE and node.mtime_ns == 1_700_000_000_123_456_789
        (cid, length), *_ = node.content
        assert cid == EXPECTED["chunk_ids"][name] == golden.chunk_id(data)
        assert golden.load_blob(cid) == data and length == len(data)
    assert nodes["sparse"].content == [(None, 8192)]
    assert nodes["link"].target == "hello.txt"


def test_golden_repository_rejects_a_wrong_password() -> None:
    with pytest.raises(WrongPasswordError):
        Repository.open(FileStorage(GOLDEN / "repo-v1"), "not-golden")
