"""The local control plane: etcd + kube-apiserver + kube-controller-manager on 127.0.0.1.

Test infrastructure only (never shipped). :class:`ControlPlane` generates a throwaway CA, serving
certificate, service-account key pair and admin token in a state directory, starts the three
processes on free loopback ports, waits until the API server is ready, and writes a kubeconfig.
Every process is recorded by PID in ``<state>/pids`` so ``stop`` (or ``make cluster-down`` from
another shell) stops exactly what was started, nothing else.

The binaries come from ``scripts/kube-build.sh`` (built once from Debian's source package and
cached under ``~/.cache/snapmover/kube-1.20.2/``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

KUBE_VERSION = "1.20.2"
REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_SECONDS = 60


def cache_root() -> Path:
    """Where build outputs and the default cluster state live (outside the checkout)."""
    return Path(os.environ.get("SNAPMOVER_CACHE", Path.home() / ".cache" / "snapmover"))


def kube_bin_dir() -> Path:
    """Directory of the cached kube-apiserver / kube-controller-manager binaries."""
    return cache_root() / f"kube-{KUBE_VERSION}"


def ensure_binaries() -> None:
    """Build the binaries if they are not cached yet (prints progress)."""
    if not (kube_bin_dir() / "kube-apiserver").exists() or shutil.which("etcd") is None:
        subprocess.run([str(REPO_ROOT / "scripts" / "kube-build.sh")], check=True)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path) -> None:
    """CA, a serving certificate for 127.0.0.1/localhost, and the service-account key pair."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "30",
        "-subj",
        "/CN=snapmover-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        cwd=d,
    )
    (d / "san.cnf").write_text(
        "[req]\ndistinguished_name=dn\n[dn]\n[ext]\nsubjectAltName=IP:127.0.0.1,IP:10.0.0.1,IP:10.244.0.1,DNS:localhost,"
        "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\n"
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=kube-apiserver",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        cwd=d,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "30",
        "-extfile",
        "san.cnf",
        "-extensions",
        "ext",
        "-out",
        "server.crt",
        cwd=d,
    )
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


def _client_cert(d: Path, name: str, subject: str) -> None:
    """A client certificate NAME.crt/NAME.key signed by the CA in D."""
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d
    )
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "30", "-out", f"{name}.crt", cwd=d)  # fmt: skip


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager, recorded in a state directory."""

    def __init__(self, state_dir: Path, *, node_name: str = "snapmover-node", more_nodes: tuple[str, ...] = ()) -> None:
        self.state = state_dir
        self.node_name = node_name
        self.more_nodes = more_nodes  # nodes that may join later (tests/cluster/node.py index 2…)
        self.node_tokens: dict[str, str] = {}
        self.pki = state_dir / "pki"
        self.kubeconfig = state_dir / "kubeconfig"
        self.pid_file = state_dir / "pids"
        self.info_file = state_dir / "cluster.json"
        self.audit_log = state_dir / "audit.log"

    # --- start ------------------------------------------------------------------------------

    def start(self) -> dict[str, object]:
        """Start everything; returns the connection info also written to cluster.json."""
        ensure_binaries()
        if self.state.exists():
            shutil.rmtree(self.state)
        self.state.mkdir(parents=True)
        make_pki(self.pki)
        token = secrets.token_hex(16)
        tokens = f'{token},admin,admin,"system:masters"\n'
        # the node (tests/cluster/node.py): kubelet and scheduler identities, the kubelet client
        self.node_tokens = {"kubelet": secrets.token_hex(16), "scheduler": secrets.token_hex(16)}
        tokens += (
            f'{self.node_tokens["kubelet"]},system:node:{self.node_name},kubelet,"system:nodes"\n'
            f"{self.node_tokens['scheduler']},system:kube-scheduler,scheduler\n"
        )
        for i, name in enumerate(self.more_nodes, start=2):  # a user name of its own per node
            tokens += f'{secrets.token_hex(16)},system:node:{name},kubelet-{i},"system:nodes"\n'
        _client_cert(self.pki, "kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client")
        node_flags = [
            f"--kubelet-client-certificate={self.pki / 'kubelet-client.crt'}",
            f"--kubelet-client-key={self.pki / 'kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP",
            "--enable-admission-plugins=NodeRestriction",
        ]
        (self.pki / "tokens.csv").write_text(tokens)
        etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
        etcd_dir = Path("/dev/shm") / f"snapmover-etcd-{secrets.token_hex(4)}"
        self._spawn(
            "etcd",
            [
                "etcd",
                "--data-dir",
                str(etcd_dir),
                "--name",
                "snapmover-test",
                "--listen-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{etcd_peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{etcd_peer}",
                "--initial-cluster",
                f"snapmover-test=http://127.0.0.1:{etcd_peer}",
                "--log-level",
                "error",
            ],
        )
        (self.state / "etcd-dir").write_text(str(etcd_dir))
        bins = kube_bin_dir()
        self._spawn(
            "kube-apiserver",
            [
                str(bins / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                "--insecure-port=0",
                f"--tls-cert-file={self.pki / 'server.crt'}",
                f"--tls-private-key-file={self.pki / 'server.key'}",
                f"--client-ca-file={self.pki / 'ca.crt'}",
                f"--token-auth-file={self.pki / 'tokens.csv'}",
                "--authorization-mode=Node,RBAC",
                *node_flags,
                f"--service-account-key-file={self.pki / 'sa.pub'}",
                f"--service-account-signing-key-file={self.pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--api-audiences=https://kubernetes.default.svc",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=none",
                f"--audit-policy-file={self._audit_policy()}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-maxsize=500",
                "--v=0",
            ],
        )
        server = f"https://127.0.0.1:{api_port}"
        self._write_kubeconfig(server, token)
        self._wait_ready(server, token)
        self._spawn(
            "kube-controller-manager",
            [
                str(bins / "kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                "--port=0",
                f"--service-account-private-key-file={self.pki / 'sa.key'}",
                f"--root-ca-file={self.pki / 'ca.crt'}",
                # nodelifecycle stays on: only it lifts the node's not-ready taint
                "--controllers=*,-nodeipam,-csrsigning,-bootstrapsigner,-tokencleaner",
                "--concurrent-gc-syncs=5",
                "--v=0",
            ],
        )
        info: dict[str, object] = {"server": server, "kubeconfig": str(self.kubeconfig), "api_port": api_port}
        self.info_file.write_text(json.dumps(info))
        return info

    def node_token(self, node: str) -> str:
        """The bearer token of node ``node``'s kubelet (from the API server's token file, so a
        process that did not start the control plane can add a node to it)."""
        for line in (self.pki / "tokens.csv").read_text().splitlines():
            token, user, *_ = line.split(",")
            if user == f"system:node:{node}":
                return token
        raise KeyError(f"the API server has no identity for node {node}")

    def _audit_policy(self) -> Path:
        """An audit policy recording one line per completed request of clients outside the control
        plane (who, verb, resource, user agent): tests count the API requests snapmover makes."""
        policy = self.state / "audit-policy.yaml"
        policy.write_text(
            json.dumps(
                {
                    "apiVersion": "audit.k8s.io/v1",
                    "kind": "Policy",
                    "omitStages": ["RequestReceived", "ResponseStarted"],
                    "rules": [
                        {"level": "None", "users": ["system:kube-controller-manager", "system:apiserver"]},
                        {"level": "None", "nonResourceURLs": ["/*"]},
                        {"level": "Metadata"},
                    ],
                }
            )
        )
        return policy

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.state / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        with open(self.pid_file, "a") as f:
            f.write(f"{proc.pid} {name}\n")

    def _write_kubeconfig(self, server: str, token: str) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "snapmover-test",
            "clusters": [
                {
                    "name": "snapmover-test",
                    "cluster": {"server": server, "certificate-authority": str(self.pki / "ca.crt")},
                }
            ],
            "users": [{"name": "admin", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "snapmover-test",
                    "context": {"cluster": "snapmover-test", "user": "admin", "namespace": "default"},
                }
            ],
        }
        self.kubeconfig.write_text(json.dumps(config, indent=1))
        self.kubeconfig.chmod(0o600)

    def _wait_ready(self, server: str, token: str) -> None:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        last = ""
        while time.monotonic() < deadline:
            req = urllib.request.Request(server + "/readyz", headers={"Authorization": f"Bearer {token}"})
            try:
                with urllib.request.urlopen(req, context=ctx, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError as e:
                last = str(e)
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"kube-apiserver did not become ready: {last}")

    # --- stop -------------------------------------------------------------------------------

    def pids(self) -> list[tuple[int, str]]:
        """Processes this state directory started (PID, name)."""
        if not self.pid_file.exists():
            return []
        out = []
        for line in self.pid_file.read_text().splitlines():
            pid, _, name = line.partition(" ")
            out.append((int(pid), name))
        return out

    def stop(self) -> None:
        """Stop every recorded process (SIGTERM, then SIGKILL), newest first; remove etcd data."""
        for pid, _name in reversed(self.pids()):
            _terminate(pid)
        etcd_dir_file = self.state / "etcd-dir"
        if etcd_dir_file.exists():
            shutil.rmtree(etcd_dir_file.read_text().strip(), ignore_errors=True)
        self.pid_file.unlink(missing_ok=True)

    def running(self) -> bool:
        """True when every recorded process is alive."""
        pids = self.pids()
        return bool(pids) and all(_alive(pid) for pid, _ in pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _terminate(pid: int, grace: float = 10.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:
            if not _alive(pid):
                return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
