"""The real node's machine lock (tests/cluster/node.py): taken before the timed tests, and a wait
that gives up names the PID holding it. Uses a private cache directory and a bridge name that
does not exist, so the machine's real node (if one runs) is not involved."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster import node

HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"{os.getpid()}\\n".encode())
print("held", flush=True)
time.sleep(60)
"""


def test_a_free_lock_is_taken_and_names_this_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNAPMOVER_CACHE", str(tmp_path))
    fd = node._acquire_machine(1, bridge="snapm-absent")
    try:
        assert (tmp_path / "node" / "real-node.lock").read_text().strip() == str(os.getpid())
    finally:
        os.close(fd)


def test_a_wait_that_gives_up_names_the_holders_pid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNAPMOVER_CACHE", str(tmp_path))
    lock = tmp_path / "node" / "real-node.lock"
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(node.NodeUnavailable, match=f"PID {holder.pid}"):
            node._acquire_machine(1, bridge="snapm-absent")
    finally:
        holder.kill()
        holder.wait()


def test_a_failed_hold_makes_the_node_start_fail_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node.HOLD, "failure", "waited 1 s for the real node of PID 42 to stop")
    with pytest.raises(node.NodeUnavailable, match="PID 42"):
        node.RealNode(Path("/nonexistent"))._take_machine()
    assert node.HOLD.failure is None
