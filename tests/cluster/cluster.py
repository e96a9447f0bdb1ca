"""A whole local cluster: the control plane, the real node and the CSI stand-in, as one unit.

Used by ``python -m tests.cluster`` (``make cluster-up/down``), by the pytest fixtures in
``tests/fixtures/cluster.py`` and by ``make demo``. The node is real (tests/cluster/node.py:
kube-scheduler, kubelet, containerd) and runs the image ``make images`` built; the harness
(tests/cluster/harness.py) only provisions volumes and takes snapshots. A machine where the node
cannot start makes :meth:`LocalCluster.start` raise NodeUnavailable naming the cause in one line.
Everything it starts is recorded by PID in the state directory; ``stop`` stops exactly those
processes and undoes the node's host changes (loop devices of Block PVs included).

A second real node (``node-2``, :meth:`LocalCluster.add_second_node`, or ``start(nodes=2)``) joins
on demand: the tests that need several nodes start it and remove it again, so every other test
runs on one node as before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.cluster import loopdev
from tests.cluster.controlplane import REPO_ROOT, ControlPlane, cache_root
from tests.cluster.node import NodeUnavailable, RealNode, check_host

MANIFESTS = Path(__file__).parent / "manifests"
NODE_NAME = "node-1"  # the node's name (the harness's `local` PVs are pinned to it)
SECOND_NODE = "node-2"  # the second node's name (tests/cluster/node.py index 2)
NODE_READY_TIMEOUT_SECONDS = 60


def snapmover_image() -> str:
    """The reference pods use for the image ``make images`` builds (imported into the node)."""
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    return f"localhost/snapmover:{version}"


def image_archives() -> list[Path]:
    """The OCI archives ``make images`` wrote, imported into a real node at start."""
    return sorted((REPO_ROOT / "build" / "images").glob("*.oci.tar"))


def default_state_dir() -> Path:
    """Where ``make cluster-up`` keeps its cluster."""
    return cache_root() / "cluster"


class LocalCluster:
    """Start/stop the local cluster recorded in ``state``."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.control = ControlPlane(state, node_name=NODE_NAME, more_nodes=(SECOND_NODE,))
        self.node = RealNode(state, name=NODE_NAME)
        self.node2 = RealNode(state, name=SECOND_NODE, index=2)
        self.kubeconfig = self.control.kubeconfig
        self.data_root = state / "volumes"
        self.left_behind: list[str] = []

    @property
    def server(self) -> str:
        return str(json.loads(self.control.info_file.read_text())["server"])

    def running(self) -> bool:
        return self.control.running()

    def audit_events(self, user_agent_prefix: str = "") -> list[dict[str, Any]]:
        """Completed API requests recorded by the API server's audit log (see ControlPlane),
        optionally only those whose client identified itself with ``user_agent_prefix``."""
        events = []
        with open(self.control.audit_log, encoding="utf-8") as f:
            for line in f:
                event = json.loads(line)
                if str(event.get("userAgent", "")).startswith(user_agent_prefix):
                    events.append(event)
        return events

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this cluster."""
        return subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", *args],
            check=check,
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def start(self, nodes: int = 1) -> None:
        """Start everything and wait until the node (``nodes=2``: both nodes) is Ready and the
        default objects exist.

        The node starts as soon as the API server answers: its kubelet's first registration
        (cadvisor start-up, the first status update) overlaps the image import, the CRDs and the
        harness. Prints where the time went."""
        t0 = time.monotonic()
        marks: list[tuple[str, float]] = []

        def mark(step: str) -> None:
            marks.append((step, time.monotonic()))

        check_host()  # NodeUnavailable names the cause in one line, before anything starts
        if not image_archives():
            raise NodeUnavailable("the snapmover image is not built: run make images")
        try:
            self._start(mark, nodes)
        except BaseException:
            self.stop()  # nothing half-started stays behind (make cluster-up exits after this)
            raise
        steps, last = [], t0
        for step, at in marks:
            steps.append(f"{step} {at - last:.1f}")
            last = at
        print(f"local cluster ready in {time.monotonic() - t0:.1f}s ({', '.join(steps)})", flush=True)

    def _start(self, mark: Callable[[str], None], nodes: int) -> None:
        info = self.control.start()
        mark("control plane")
        self.node.start(
            api_port=int(str(info["api_port"])), server=str(info["server"]), pki=self.control.pki,
            tokens=self.control.node_tokens,
        )  # fmt: skip
        mark("node processes")
        for archive in image_archives():
            self.node.import_image(archive)
        mark("image import")
        self.data_root.mkdir(parents=True, exist_ok=True)
        info["data_root"] = str(self.data_root)
        self.control.info_file.write_text(json.dumps(info))
        self._apply(MANIFESTS / "snapshot-crds.json")
        self._wait_crds()
        self._apply(MANIFESTS / "defaults.json")
        harness = self._start_harness()
        mark("CRDs, classes, harness")
        if nodes > 1:
            self._start_second_node()
            mark("node-2 processes, image import")
        self._wait_node(NODE_NAME, harness)
        mark("node Ready")
        if nodes > 1:
            self._wait_node(SECOND_NODE, harness)
            mark("node-2 Ready")
        self._wait_default_service_account()
        mark("default ServiceAccount")

    def _start_harness(self) -> subprocess.Popen[bytes]:
        log = open(self.state / "harness.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.cluster.harness", str(self.control.info_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
            start_new_session=True,
            cwd=REPO_ROOT,
        )
        with open(self.control.pid_file, "a") as f:
            f.write(f"{proc.pid} harness\n")
        return proc

    def add_second_node(self) -> None:
        """Start ``node-2`` on the running cluster (nothing when it runs) and wait until it is Ready."""
        if self.node2.pids():
            return
        t0 = time.monotonic()
        self._start_second_node()
        self._wait_node(SECOND_NODE)
        print(f"node {SECOND_NODE} ready in {time.monotonic() - t0:.1f}s", flush=True)

    def _start_second_node(self) -> None:
        info = json.loads(self.control.info_file.read_text())
        try:
            self.node2.start(
                api_port=int(info["api_port"]), server=str(info["server"]), pki=self.control.pki,
                tokens={"kubelet": self.control.node_token(SECOND_NODE)},
            )  # fmt: skip
            for archive in image_archives():
                self.node2.import_image(archive)
        except BaseException:
            self.node2.stop()
            raise

    def remove_second_node(self) -> list[str]:
        """Stop ``node-2`` (its pods deleted first, so its kubelet unmounts their volumes), undo its
        host changes and delete its Node object; returns what of it is left on the host."""
        if self.node2.pids():
            if self.control.running():
                on_node = ["--all-namespaces", "--field-selector", f"spec.nodeName={SECOND_NODE}"]
                if not self.node2.kubelet_alive():  # a killed node: nobody will confirm the deletion
                    self.kubectl("delete", "pods", *on_node, "--grace-period=0", "--force", check=False)
                self.kubectl("delete", "pods", *on_node, "--wait=true", "--timeout=60s", check=False)
            self.node2.stop()
        if self.control.running():
            self.kubectl("delete", "node", SECOND_NODE, "--ignore-not-found", "--wait=true", check=False)
        return self.node2.leftovers()

    def stop(self) -> None:
        """Stop everything: the pods are deleted first (the kubelets unmount their volumes and
        tear down their networks), then the nodes undo their host changes (node-2 first: node-1
        owns the bridge), the control plane and harness stop and the Block PVs' loop devices are
        detached. :attr:`left_behind` then lists what is still on the host (empty after a clean
        stop), taken before another checkout's node may start."""
        if self.node.pids() or self.node2.pids():
            if self.control.running():
                self.kubectl("delete", "pods", "--all", "--all-namespaces", "--wait=true", "--timeout=60s", check=False)
            self.node2.stop()
            self.node.stop(release=False)
        self.control.stop()
        loopdev.detach_under(self.data_root)  # Block PVs the harness had no time to delete
        self.left_behind = (
            self.node2.leftovers() + self.node.leftovers() + [f"loop device {d}" for d in loopdev.under(self.data_root)]
        )
        self.node.release_machine()

    def metadata_packets(self) -> int:
        """Packets to 169.254.0.0/16 the nodes' guard rules rejected (earlier runs of node-2 included)."""
        return sum(n.metadata_packets() if n.record.exists() else n.packets_before for n in (self.node, self.node2))

    def _apply(self, path: Path) -> None:
        for attempt in range(30):
            result = self.kubectl("apply", "-f", str(path), check=False)
            if result.returncode == 0:
                return
            time.sleep(0.5 + attempt * 0.1)
        raise RuntimeError(f"kubectl apply {path.name} failed: {result.stderr}")

    def _wait_crds(self) -> None:
        self.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/volumesnapshots.snapshot.storage.k8s.io",
            "crd/volumesnapshotcontents.snapshot.storage.k8s.io",
            "crd/volumesnapshotclasses.snapshot.storage.k8s.io",
        )

    def _wait_node(self, name: str, harness: subprocess.Popen[bytes] | None = None) -> None:
        deadline = time.monotonic() + NODE_READY_TIMEOUT_SECONDS
        ready = "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
        while time.monotonic() < deadline:
            if harness is not None and harness.poll() is not None:
                raise RuntimeError(f"harness exited: {(self.state / 'harness.log').read_text()[-2000:]}")
            if self.kubectl("get", "node", name, "-o", ready, check=False).stdout.strip() == "True":
                return
            time.sleep(0.5)
        node = self.node if name == NODE_NAME else self.node2
        raise RuntimeError(f"node {name} did not become Ready (logs in {node.dir})")

    def _wait_default_service_account(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            result = self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False)
            if result.returncode == 0:
                return
            time.sleep(0.3)
        raise RuntimeError("the controller manager did not create the default ServiceAccount")
