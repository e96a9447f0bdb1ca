"""A real Kubernetes node for the test cluster: containerd + kubelet + kube-scheduler on this host.

Test infrastructure only (never shipped). :class:`RealNode` joins a running :class:`ControlPlane`
(tests/cluster/cluster.py starts both). Everything it changes on the host is private or recorded in its
state directory and undone by :meth:`RealNode.stop`:

* a bridge (``snapm0``, 10.244.0.1/24) that is the node IP, the kubelet address and the pods' CNI
  bridge; pods get a route to the service range only, so nothing beyond the bridge is reachable;
* iptables: a DNAT of the in-cluster API address 10.0.0.1:443 to the API server on 127.0.0.1
  (with ``route_localnet`` on the bridge), a FORWARD reject for anything leaving the bridge, and
  an OUTPUT reject of 169.254.0.0/16 — installed before the kubelet first starts — with, above
  it, the same reject for the node's own cgroup (containerd, kubelet and scheduler start in
  ``snapmover-node/daemons`` of the unified hierarchy), whose packet counter
  :meth:`RealNode.metadata_packets` reads (tests fail when it is not 0; other programs on the
  machine are rejected too but not counted);
* the sysctls the kubelet rewrites at start (saved first, restored at stop);
* a cgroup root of its own in every cgroup v1 hierarchy;
* containerd with private root, state, socket and runc root, and the kubelet with private root
  and certificate directories. The kubelet always runs with ``AWS_EC2_METADATA_DISABLED=true``.

A second node (``index=2``: ``node-2``) joins the same bridge and control plane; the first one owns
the machine-wide state above (bridge, shared rules, sysctls, the scheduler). The second one has
its own address on the bridge (10.244.0.2), pod range, cgroup root (``snapmover-node-2``) with its
own counting guard rule, containerd and kubelet, and runs both in a **private mount namespace**
(held by a ``sleep`` started with ``unshare --mount``; containerd and kubelet join it with
``nsenter``) in which :data:`NAMESPACED_PATHS` — the fixed host paths of the kubelet and
containerd, ``/var/log/pods`` first — are bind mounts of directories of its own. Without it the two
kubelets' container GC (``evictPodLogsDirectories``: every minute, each removes the
``/var/log/pods`` directories of pods it does not know) would delete each other's pod logs. The
namespace and every mount in it go away with its last process.

Why each setting is there: ../shared/REAL-NODE-FACTS.md (found by a failure each).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.cluster.controlplane import _alive, _terminate, cache_root, free_port, kube_bin_dir

BRIDGE = "snapm0"
BRIDGE_IP = "10.244.0.1"
POD_SUBNET = "10.244.0.0/24"
SERVICE_RANGE = "10.0.0.0/24"
API_SERVICE_IP = "10.0.0.1"
METADATA_RANGE = "169.254.0.0/16"
GUARD_COMMENT = "snapmover-node-guard"
PAUSE_IMAGE = "localhost/pause:3.4"
NO_REGISTRY = "http://127.0.0.1:9"  # the discard port: nothing listens there
KUBELET_SYSCTLS = ("vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops")
CGROUP_ROOT = "snapmover-node"
UNIFIED = Path("/sys/fs/cgroup/unified")  # cgroup v2 on a hybrid host: iptables' cgroup match uses it
HOST_PATHS = ("/var/log/pods", "/var/log/containers", "/run/containerd", "/var/lib/cni", "/var/lib/kubelet")
# the paths a kubelet and containerd use whatever their configuration says (the pod logs and their
# links, containerd's shim sockets, CNI results, the device-plugin socket
# /var/lib/kubelet/device-plugins/kubelet.sock): private bind mounts in a second node's mount namespace
NAMESPACED_PATHS = HOST_PATHS
MOUNT_NS = "mount-ns"  # the name of the process holding a second node's mount namespace
MAX_NODES = 4  # pod ranges of 60 addresses each in the bridge's /24
READY_TIMEOUT_SECONDS = 90
# One real node per machine (one bridge, one cgroup root, the kubelet's fixed host paths): a second
# one waits this long for the first to stop (several checkouts testing on one machine).
NODE_WAIT_SECONDS = int(os.environ.get("SNAPMOVER_NODE_WAIT_SECONDS", "1800"))


class NodeUnavailable(RuntimeError):
    """This machine cannot run the real node; the message names the cause in one line."""


class _Hold:
    """The machine lock :func:`hold_machine` took (``fd``), handed to the next RealNode.start,
    or why it gave up (``failure``, which that start raises)."""

    fd: int | None = None
    failure: str | None = None


HOLD = _Hold()


def _lock_holder(fd: int) -> str:
    """The PID the lock file names (written by whoever holds it), for a message."""
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode(errors="replace").strip()
    return f"PID {text}" if text else "an unknown process"


def _acquire_machine(wait_seconds: float, bridge: str = BRIDGE) -> int:
    """Wait (bounded) until no other real node runs on this machine; return the held lock's
    descriptor (closing it releases the lock). A node left by ``make cluster-up`` (whose process
    is gone) keeps its bridge: that is waited for too. The lock file names the holder's PID."""
    lock_path = cache_root() / "node" / "real-node.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not Path(f"/sys/class/net/{bridge}").exists():
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                return fd
            fcntl.flock(fd, fcntl.LOCK_UN)
            holder = f"bridge {bridge} of a node whose process is gone (make cluster-down stops it)"
        except BlockingIOError:
            holder = f"the real node of {_lock_holder(fd)}"
        if time.monotonic() > deadline:
            os.close(fd)
            raise NodeUnavailable(f"waited {wait_seconds:.0f} s for {holder} to stop: another checkout's tests use it")
        time.sleep(2)


def hold_machine() -> None:
    """Take the machine's real-node lock now (waiting up to NODE_WAIT_SECONDS) for the next
    :meth:`RealNode.start` of this process. pytest calls it before the first test runs, so the wait
    for another checkout's node is not cut short by the per-test timeout; a wait that gives up
    makes that start fail with the reason."""
    if HOLD.fd is not None:
        return
    try:
        HOLD.fd = _acquire_machine(NODE_WAIT_SECONDS)
    except NodeUnavailable as e:
        HOLD.failure = str(e)


def check_host() -> None:
    """Raise NodeUnavailable naming the first reason a node cannot start here."""
    if os.geteuid() != 0:
        raise NodeUnavailable("the real test node needs root (it runs containerd, a bridge and iptables rules)")
    for tool in ("containerd", "ctr", "runc", "iptables", "ip"):
        if shutil.which(tool) is None:
            raise NodeUnavailable(f"the real test node needs {tool}: run scripts/node-setup.sh")
    if not Path("/usr/lib/cni/bridge").exists():
        raise NodeUnavailable("the real test node needs the CNI plugins in /usr/lib/cni: run scripts/node-setup.sh")
    if not (kube_bin_dir() / "kubelet").exists():
        raise NodeUnavailable("kubelet is not built: run scripts/kube-build.sh")
    if not pause_archive().exists():
        raise NodeUnavailable("the pause image is not built: run scripts/node-setup.sh")
    if not Path("/sys/fs/cgroup/memory").is_dir():
        raise NodeUnavailable("the real test node needs cgroup v1 hierarchies under /sys/fs/cgroup")


def pause_archive() -> Path:
    """The locally built CRI sandbox image (scripts/node-setup.sh)."""
    return cache_root() / "node" / "pause-3.4.oci.tar"


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def _cgroup_dirs(root: str = CGROUP_ROOT) -> list[Path]:
    """A node's cgroup root in every hierarchy (v1 ones and, on a hybrid host, the unified one
    runc also uses)."""
    base = Path("/sys/fs/cgroup")
    return [p / root for p in sorted(base.iterdir()) if p.is_dir()]


def _counts_cgroup(line: str, root: str) -> bool:
    """Whether an ``iptables -L -v`` line is a rule matching exactly the cgroup ``root``."""
    words = line.split()
    return any(a == "cgroup" and b == root for a, b in itertools.pairwise(words))


class RealNode:
    """containerd, kubelet (and, on the first node, kube-scheduler) for one node, recorded in its
    state directory (``<state>/node`` for the first, ``<state>/node-N`` for node N)."""

    def __init__(self, state: Path, name: str = "snapmover-node", index: int = 1) -> None:
        if not 1 <= index <= MAX_NODES:
            raise ValueError(f"node index {index} is not in 1..{MAX_NODES}")
        self.name = name
        self.index = index
        self.primary = index == 1  # owns the bridge, the shared rules, the sysctls, the scheduler
        self.dir = state / ("node" if self.primary else f"node-{index}")
        self.ip = BRIDGE_IP if self.primary else f"10.244.0.{index}"
        first = 10 + 60 * (index - 1)
        self.pod_range = (f"10.244.0.{first}", f"10.244.0.{first + 59}")
        self.cgroup_root = CGROUP_ROOT if self.primary else f"{CGROUP_ROOT}-{index}"
        self.daemons = UNIFIED / self.cgroup_root / "daemons"  # the node's processes (the guard counts them)
        self.record = self.dir / "host.json"
        self.pid_file = self.dir / "pids"
        self.sock = self.dir / "containerd" / "containerd.sock"
        self._stopped: list[tuple[int, str]] = []
        self._lock: int | None = None
        self.packets_before = 0  # counted by this node's guard rule before its last stop

    def _take_machine(self) -> None:
        """Hold the machine's real-node lock until :meth:`stop`: the one :func:`hold_machine` took
        before the tests ran, else wait for it here (bounded by NODE_WAIT_SECONDS)."""
        if HOLD.failure is not None:
            failure, HOLD.failure = HOLD.failure, None
            raise NodeUnavailable(failure)
        if HOLD.fd is not None:
            held, HOLD.fd = HOLD.fd, None
            if not Path(f"/sys/class/net/{BRIDGE}").exists():
                self._lock = held
                return
            os.close(held)  # a node was started without the lock meanwhile: wait for it below
        self._lock = _acquire_machine(NODE_WAIT_SECONDS)

    def release_machine(self) -> None:
        """Let another real node start on this machine."""
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor drops the flock
            self._lock = None

    # --- host state -----------------------------------------------------------------------------

    def _save(self, rec: dict[str, Any]) -> None:
        self.record.write_text(json.dumps(rec))

    def _load(self) -> dict[str, Any]:
        return json.loads(self.record.read_text()) if self.record.exists() else {}

    def _iptables_rules(self, api_port: int) -> list[list[str]]:
        tag = ["-m", "comment", "--comment", GUARD_COMMENT]
        counting = []
        if UNIFIED.is_dir():
            # inserted above the rule for everyone: counts only the node's own processes (kubelet,
            # containerd and shims, scheduler, all in the node's cgroup), not other programs here
            counting.append(["filter", "OUTPUT", "-d", METADATA_RANGE, "-m", "cgroup", "--path", self.cgroup_root,
                             *tag, "-j", "REJECT"])  # fmt: skip
        if not self.primary:
            return counting  # the bridge's rules and the reject for everyone are the first node's
        return [
            ["filter", "OUTPUT", "-d", METADATA_RANGE, *tag, "-j", "REJECT"],
            *counting,
            ["filter", "FORWARD", "-i", BRIDGE, "!", "-o", BRIDGE, *tag, "-j", "REJECT"],
            ["nat", "PREROUTING", "-i", BRIDGE, "-d", API_SERVICE_IP, "-p", "tcp", "--dport", "443",
             *tag, "-j", "DNAT", "--to-destination", f"127.0.0.1:{api_port}"],
        ]  # fmt: skip

    def _setup_host(self, api_port: int) -> None:
        rec: dict[str, Any] = {"sysctls": {}, "rules": [], "cgroups": [], "bridge": False, "addresses": []}
        if self.primary:
            for key in KUBELET_SYSCTLS:
                rec["sysctls"][key] = Path("/proc/sys", *key.split(".")).read_text().strip()
            # paths the kubelet and containerd use whatever their configuration says: removed at
            # stop when this node created them (a second node's mount points among them)
            rec["absent"] = [p for p in HOST_PATHS if not Path(p).exists()]
        elif not Path(f"/sys/class/net/{BRIDGE}").exists():
            raise NodeUnavailable(f"node {self.name} joins the first node's bridge {BRIDGE}, which is not there")
        self._save(rec)
        for d in _cgroup_dirs(self.cgroup_root):  # first: the counting guard rule names the unified one
            if d.exists():
                raise NodeUnavailable(f"cgroup {d} exists already: another real test node runs (make cluster-down)")
            d.mkdir()
            rec["cgroups"].append(str(d))
            self._save(rec)
            if d.parent.name == "cpuset":
                for f in ("cpuset.cpus", "cpuset.mems"):
                    (d / f).write_text((d.parent / f).read_text())
        if UNIFIED.is_dir():
            self.daemons.mkdir()
        for rule in self._iptables_rules(api_port):
            table, chain, *spec = rule
            _run("iptables", "-t", table, "-I", chain, "1", *spec)
            rec["rules"].append(rule)
            self._save(rec)
        if not self.primary:
            _run("ip", "addr", "add", f"{self.ip}/24", "dev", BRIDGE)
            rec["addresses"].append(f"{self.ip}/24")
            self._save(rec)
            return
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        rec["bridge"] = True
        self._save(rec)
        _run("ip", "addr", "add", f"{BRIDGE_IP}/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        Path(f"/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet").write_text("1")

    def _teardown_host(self) -> list[str]:
        rec = self._load()
        problems: list[str] = []
        for rule in reversed(rec.get("rules", [])):
            table, chain, *spec = rule
            if _run("iptables", "-t", table, "-D", chain, *spec, check=False).returncode != 0:
                problems.append(f"iptables rule {' '.join(rule)} was already gone")
        for address in rec.get("addresses", []):
            _run("ip", "addr", "del", address, "dev", BRIDGE, check=False)
        if rec.get("bridge"):
            _run("ip", "link", "del", BRIDGE, check=False)
        for d in reversed(rec.get("cgroups", [])):
            _remove_cgroup(Path(d))
        for key, value in rec.get("sysctls", {}).items():
            Path("/proc/sys", *key.split(".")).write_text(value)
        for p in rec.get("absent", []):
            shutil.rmtree(p, ignore_errors=True)
        self.record.unlink(missing_ok=True)
        return problems

    def leftovers(self) -> list[str]:
        """What of this node is still on the host (empty after a clean stop)."""
        left = [f"process {name} ({pid})" for pid, name in self.pids() or self._stopped if _alive(pid)]
        if self.primary and Path(f"/sys/class/net/{BRIDGE}").exists():
            left.append(f"bridge {BRIDGE}")
        if not self.primary and f"inet {self.ip}/" in _run("ip", "addr", "show", check=False).stdout:
            left.append(f"address {self.ip}")
        rules = _run("iptables-save").stdout.splitlines()
        mine = [line for line in rules if GUARD_COMMENT in line]
        if not self.primary:  # only its own counting rule: the others are the first node's
            mine = [line for line in mine if f"--path {self.cgroup_root} " in line]
        left += [f"iptables rule {line}" for line in mine]
        left += [f"cgroup {d}" for d in _cgroup_dirs(self.cgroup_root) if d.exists()]
        prefix = str(self.dir.resolve()) + "/"
        left += [f"mount {m}" for m in _mounts() if m.startswith(prefix)]
        return left

    def metadata_packets(self) -> int:
        """Packets of the node's processes the OUTPUT guard rejected (to 169.254.0.0/16) since the
        node first started, earlier runs of it included (on a host without the unified cgroup
        hierarchy: of every process)."""
        return self.packets_before + self._counted()

    def _counted(self) -> int:
        out = _run("iptables", "-t", "filter", "-L", "OUTPUT", "-v", "-n", "-x").stdout
        guards = [line for line in out.splitlines() if GUARD_COMMENT in line and METADATA_RANGE in line]
        ours = [line for line in guards if _counts_cgroup(line, self.cgroup_root)] or guards
        for line in ours:
            return int(line.split()[0])
        raise RuntimeError("the 169.254.0.0/16 guard rule is missing")

    # --- processes ------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
        """Start a process of the node in its own session (so its PID is the process's) and record
        it; a second node's processes join its mount namespace first."""
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        holder = self._namespace_holder()
        if holder is not None:
            argv = ["nsenter", f"--mount=/proc/{holder}/ns/mnt", "--", *argv]
        if self.daemons.is_dir():  # joins the node's cgroup before it runs (the guard counts its packets)
            argv = ["sh", "-c", f'echo $$ > {self.daemons / "cgroup.procs"} && exec "$@"', name, *argv]
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **(env or {})}
        )
        with open(self.pid_file, "a") as f:
            f.write(f"{proc.pid} {name}\n")
        return proc.pid

    def _namespace_holder(self) -> int | None:
        """The PID holding a second node's mount namespace (None: the first node, or not yet made)."""
        return next((pid for pid, name in self.pids() if name == MOUNT_NS), None)

    def _make_mount_namespace(self) -> None:
        """A private mount namespace for a second node's containerd and kubelet, held by a ``sleep``,
        with a directory of its own bound over each of :data:`NAMESPACED_PATHS` (made on the host
        when missing: the first node removes the ones it found missing at its stop)."""
        holder = self._spawn(MOUNT_NS, ["unshare", "--mount", "--propagation", "private", "sleep", "infinity"])
        ours = os.readlink("/proc/self/ns/mnt")
        deadline = time.monotonic() + 10
        while True:
            try:
                if os.readlink(f"/proc/{holder}/ns/mnt") != ours:
                    break
            except FileNotFoundError:
                raise NodeUnavailable(f"unshare --mount exited (log: {self.dir / (MOUNT_NS + '.log')})") from None
            if time.monotonic() > deadline:
                raise NodeUnavailable("unshare --mount made no mount namespace within 10 s")
            time.sleep(0.02)
        for path in NAMESPACED_PATHS:
            private = self.dir / "host" / path.strip("/").replace("/", "-")
            private.mkdir(parents=True, exist_ok=True)
            Path(path).mkdir(parents=True, exist_ok=True)
            result = _run("nsenter", f"--mount=/proc/{holder}/ns/mnt", "--", "mount", "--bind", str(private), path,
                          check=False)  # fmt: skip
            if result.returncode != 0:
                raise NodeUnavailable(f"cannot bind {private} over {path} in the node's mount namespace: "
                                      f"{result.stderr.strip()}")  # fmt: skip

    def in_namespace(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command where the node's containerd and kubelet run (a second node: in its mount
        namespace)."""
        holder = self._namespace_holder()
        prefix = ["nsenter", f"--mount=/proc/{holder}/ns/mnt", "--"] if holder is not None else []
        return _run(*prefix, *argv, check=check)

    def start(self, *, api_port: int, server: str, pki: Path, tokens: dict[str, str]) -> None:
        """Set up the host, start containerd, import the pause image, start the kubelet (and, on
        the first node, the scheduler). ``tokens``: ``kubelet`` (this node's identity) and, for the
        first node, ``scheduler``."""
        check_host()
        if self.primary:
            self._take_machine()
        elif self.pids():
            raise NodeUnavailable(f"node {self.name} runs already (its processes are in {self.pid_file})")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)  # a stopped or killed node joins again afresh
        self.dir.mkdir(parents=True, exist_ok=True)
        self._setup_host(api_port)
        if not self.primary:
            self._make_mount_namespace()
        self._start_containerd()
        self.import_image(pause_archive())
        kubeconfig = self._kubeconfig("kubelet", server, pki, tokens["kubelet"])
        if self.primary:
            sched = self._kubeconfig("scheduler", server, pki, tokens["scheduler"])
            self._spawn(
                "kube-scheduler",
                [str(kube_bin_dir() / "kube-scheduler"), f"--kubeconfig={sched}", "--leader-elect=false",
                 "--port=0", "--secure-port=0", "--v=0"],
            )  # fmt: skip
        config = self._kubelet_config(pki)
        self._spawn(
            "kubelet",
            [
                str(kube_bin_dir() / "kubelet"),
                f"--kubeconfig={kubeconfig}",
                f"--config={config}",
                "--container-runtime=remote",
                f"--container-runtime-endpoint=unix://{self.sock}",
                f"--root-dir={self.dir / 'kubelet'}",
                f"--cert-dir={self.dir / 'kubelet-pki'}",
                f"--volume-plugin-dir={self.dir / 'volume-plugins'}",
                f"--node-ip={self.ip}",
                f"--hostname-override={self.name}",
                "--v=0",
            ],
            env={"AWS_EC2_METADATA_DISABLED": "true"},
        )

    def _start_containerd(self) -> None:
        d = self.dir / "containerd"
        start, end = self.pod_range
        cni_conf = self.dir / "cni" / "net.d"
        cni_conf.mkdir(parents=True, exist_ok=True)
        d.mkdir(parents=True, exist_ok=True)
        (cni_conf / "10-snapmover.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "0.4.0",
                    "name": "snapmover",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": BRIDGE,
                            "isGateway": False,
                            "ipMasq": False,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "dataDir": str(self.dir / "cni" / "ipam"),
                                "ranges": [[{"subnet": POD_SUBNET, "rangeStart": start, "rangeEnd": end}]],
                                "routes": [{"dst": SERVICE_RANGE, "gw": self.ip}],
                            },
                        }
                    ],
                }
            )
        )
        # No registry can be reached from here and none may be asked: every registry host
        # (`_default`) resolves to a closed port on 127.0.0.1, so a pull of an image that was not
        # imported fails at once (ErrImagePull) without a DNS query or a connection leaving the host.
        registry = d / "registry"
        (registry / "_default").mkdir(parents=True, exist_ok=True)
        (registry / "_default" / "hosts.toml").write_text(
            f'server = "{NO_REGISTRY}"\n[host."{NO_REGISTRY}"]\n  capabilities = ["pull", "resolve"]\n'
        )
        (d / "config.toml").write_text(
            f"""version = 2
root = "{d / "root"}"
state = "{d / "state"}"
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[debug]
  address = "{d / "debug.sock"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d / "runc"}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{registry}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_conf}"
"""
        )
        self._spawn("containerd", ["containerd", "--config", str(d / "config.toml")])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.sock.exists() and self.ctr("version", check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise NodeUnavailable(f"containerd did not start (log: {self.dir / 'containerd.log'})")

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The node's containerd CLI in the CRI namespace."""
        return _run("ctr", "-a", str(self.sock), "-n", "k8s.io", *args, check=check)

    def import_image(self, archive: Path) -> None:
        """Import an OCI archive (``make images`` output, the pause image) into the node."""
        self.ctr("images", "import", str(archive))

    def _kubeconfig(self, who: str, server: str, pki: Path, token: str) -> Path:
        path = self.dir / f"{who}.kubeconfig"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "c",
                    "clusters": [
                        {"name": "c", "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")}}
                    ],
                    "users": [{"name": who, "user": {"token": token}}],
                    "contexts": [{"name": "c", "context": {"cluster": "c", "user": who}}],
                }
            )
        )
        path.chmod(0o600)
        return path

    def _kubelet_config(self, pki: Path) -> Path:
        resolv = self.dir / "resolv.conf"
        resolv.write_text("")
        path = self.dir / "kubelet-config.json"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    "address": self.ip,
                    "port": free_port(),
                    "readOnlyPort": 0,
                    "healthzPort": 0,
                    "authentication": {
                        "anonymous": {"enabled": False},
                        "webhook": {"enabled": True},
                        "x509": {"clientCAFile": str(pki / "ca.crt")},
                    },
                    "authorization": {"mode": "Webhook"},
                    "cgroupDriver": "cgroupfs",
                    "cgroupRoot": f"/{self.cgroup_root}",
                    "failSwapOn": False,
                    "makeIPTablesUtilChains": False,
                    "resolvConf": str(resolv),
                    "imageGCHighThresholdPercent": 100,
                    "imageGCLowThresholdPercent": 99,
                    "nodeStatusUpdateFrequency": "2s",
                    "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
                    # enough for the 200-DataUpload load test: the launcher runs at most its
                    # maxConcurrentJobs (4 there, asserted) movers at once, and finished pods do not
                    # count (kube-scheduler ignores Succeeded/Failed pods, so does the kubelet's admission)
                    "maxPods": 30,
                }
            )
        )
        return path

    # --- stop -----------------------------------------------------------------------------------

    def pids(self) -> list[tuple[int, str]]:
        """Processes this node started (PID, name)."""
        if not self.pid_file.exists():
            return []
        return [(int(p), n) for p, _, n in (line.partition(" ") for line in self.pid_file.read_text().splitlines())]

    def stop(self, *, release: bool = True) -> list[str]:
        """Stop kubelet, scheduler, the pods' containers and containerd (a second node: then its
        mount namespace, and with it every mount in it); undo every host change. Returns what was
        found already undone (empty when teardown was clean). With ``release=False`` the machine
        stays locked (:meth:`release_machine`), so :meth:`leftovers` cannot see the next node
        another checkout starts."""
        self._stopped = self.pids()
        by_name = {n: p for p, n in self._stopped}
        for name in ("kubelet", "kube-scheduler"):
            if name in by_name:
                _terminate(by_name[name])
        if "containerd" in by_name and _alive(by_name["containerd"]) and self.sock.exists():
            for line in self.ctr("tasks", "ls", "-q", check=False).stdout.split():
                self.ctr("tasks", "kill", "-s", "SIGKILL", line, check=False)
            time.sleep(0.5)
            for line in self.ctr("containers", "ls", "-q", check=False).stdout.split():
                self.ctr("tasks", "delete", "-f", line, check=False)
                self.ctr("containers", "delete", line, check=False)
        for name in ("containerd", MOUNT_NS):
            if name in by_name:
                _terminate(by_name[name])
        self._kill_cgroup_processes()  # what a killed node left (shims, containers)
        self._unmount_under(self.dir)
        if self.record.exists():
            with contextlib.suppress(RuntimeError):
                self.packets_before += self._counted()
        problems = self._teardown_host()
        self.pid_file.unlink(missing_ok=True)
        if release:
            self.release_machine()
        return problems

    def kubelet_alive(self) -> bool:
        """Whether this node's kubelet process runs."""
        return any(name == "kubelet" and _alive(pid) for pid, name in self.pids())

    def kill(self) -> None:
        """The node dies at once, as if it lost power: SIGKILL to its kubelet, then to every
        process in its cgroups (containerd, the shims, the pods' containers; a second node's mount
        namespace goes with them). Nothing is cleaned up and the API server is not told:
        :meth:`stop` undoes the host changes afterwards."""
        for pid, name in self.pids():
            if name == "kubelet":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._kill_cgroup_processes()
        for pid, _name in self.pids():  # reap the ones this process started (no zombie looks alive)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)

    def _kill_cgroup_processes(self) -> None:
        """SIGKILL every process in the node's cgroups until none is left (bounded: 10 s)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pids = {
                int(pid)
                for d in _cgroup_dirs(self.cgroup_root)
                if d.is_dir()
                for procs in d.rglob("cgroup.procs")
                for pid in _read(procs).split()
            }
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def _unmount_under(self, root: Path) -> None:
        prefix = str(root.resolve()) + "/"
        for m in sorted((m for m in _mounts() if m.startswith(prefix)), key=len, reverse=True):
            _run("umount", "-l", m, check=False)


def _read(path: Path) -> str:
    """A cgroup file's text ('' when its cgroup went away meanwhile)."""
    try:
        return path.read_text()
    except OSError:
        return ""


def _mounts() -> list[str]:
    return [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]


def _remove_cgroup(d: Path) -> None:
    """Remove a cgroup directory tree bottom-up (cgroup files cannot be unlinked, only rmdir'd)."""
    if not d.exists():
        return
    for sub in [*sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True), d]:
        with contextlib.suppress(OSError):
            sub.rmdir()
