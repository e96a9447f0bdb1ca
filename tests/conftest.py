"""Shared pytest configuration: fixture plugins for the real servers tests talk to.

Every process a test starts inherits ``AWS_EC2_METADATA_DISABLED=true``: a boto3 client left
without credentials (the tests of missing credentials do that on purpose) would otherwise ask
the cloud metadata address for them. Nothing here may reach it; the real node's guard rule
rejects and counts such packets besides (tests/cluster/node.py).

A session whose tests use the cluster takes the machine's real-node lock before the first test
(``pytest_runtestloop``): waiting for another checkout's node happens outside the 600 s per-test
timeout, and a wait that gives up fails the cluster's start naming the holder's PID.
"""

import os

import pytest

os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

pytest_plugins = [
    "tests.fixtures.s3",
    "tests.fixtures.cluster",
    "tests.figures",
]


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """Wait for the machine's real node before any test runs, when a test needs the cluster."""
    from tests.cluster.cluster import LocalCluster, default_state_dir
    from tests.cluster.node import NodeUnavailable, check_host, hold_machine

    if session.config.option.collectonly or not any("kube_cluster" in item.fixturenames for item in session.items):
        return
    shared = default_state_dir()
    if os.environ.get("KUBECONFIG") == str(shared / "kubeconfig") and LocalCluster(shared).running():
        return  # a cluster of make cluster-up is reused: it holds the lock already
    try:
        check_host()
    except NodeUnavailable:
        return  # the cluster fixture reports the cause
    hold_machine()
