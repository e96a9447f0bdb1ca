"""A one-machine Ceph cluster with a RADOS Gateway on 127.0.0.1: the real S3 implementation the
bench's ``rgw`` round runs against (Debian's ``radosgw``, ``ceph-mon``, ``ceph-osd``).

One monitor, one bluestore OSD on a sparse file, one gateway (beast frontend), all under one
work directory with their own configuration, keyrings, sockets and logs; every address is
127.0.0.1 and every process is stopped by the PID this module started. ``RGW(work)`` as a
context manager yields itself with ``endpoint`` and ``credentials`` set.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType

ACCESS_KEY = "benchaccesskey"
SECRET_KEY = "bench-secret-key-not-secret"
OSD_BYTES = 24 * 1024**3  # sparse: only what is stored takes disk space


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RGW:
    """Start with ``with RGW(work) as rgw:``; ``rgw.endpoint`` is ``http://127.0.0.1:PORT``."""

    def __init__(self, work: Path) -> None:
        self.dir = work
        self.conf = work / "ceph.conf"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.endpoint = ""
        self.credentials = {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def __enter__(self) -> RGW:
        try:
            self._start()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._stop()

    # --- setup ----------------------------------------------------------------------------------

    def _run(self, *argv: str) -> str:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:3])} failed: {proc.stderr.strip()[-800:]}")
        return proc.stdout

    def _ceph(self, *args: str) -> str:
        return self._run("ceph", "-c", str(self.conf), "--connect-timeout", "30", *args)

    def _spawn(self, *argv: str) -> None:
        log = open(self.dir / f"{Path(argv[0]).name}.out", "ab")  # noqa: SIM115 - owned by the child
        self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def _write_conf(self, fsid: str, mon_port: int, rgw_port: int) -> None:
        d = self.dir
        self.conf.write_text(
            f"""[global]
fsid = {fsid}
mon_host = v1:127.0.0.1:{mon_port}
public_addr = 127.0.0.1
ms_bind_msgr2 = false
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
keyring = {d}/$name.keyring
run_dir = {d}/run
admin_socket = {d}/run/$name.asok
log_file = {d}/log/$name.log
pid_file = {d}/run/$name.pid
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
osd_crush_chooseleaf_type = 0
mon_max_pg_per_osd = 1000
[mon]
mon_data = {d}/mon/$id
[osd]
osd_data = {d}/osd/$id
keyring = {d}/osd/$id/keyring
osd_objectstore = bluestore
bluestore_block_path = {d}/osd/$id/block.file
bluestore_block_create = true
bluestore_block_size = {OSD_BYTES}
bluestore_fsck_on_mount = false
osd_memory_target = 1073741824
[client.rgw.bench]
rgw_frontends = beast endpoint=127.0.0.1:{rgw_port}
rgw_data = {d}/rgw
rgw_dns_name = 127.0.0.1
"""
        )

    def _start(self) -> None:
        for tool in ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool", "ceph-authtool", "ceph"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"the rgw round needs {tool}: make bench-deps installs Debian's Ceph packages")
        shutil.rmtree(self.dir, ignore_errors=True)
        for sub in ("run", "log", "mon/a", "osd/0", "rgw"):
            (self.dir / sub).mkdir(parents=True)
        fsid, mon_port, rgw_port = str(uuid.uuid4()), _free_port(), _free_port()
        self._write_conf(fsid, mon_port, rgw_port)
        d = self.dir
        mon_kr, admin_kr = d / "mon.keyring", d / "client.admin.keyring"
        self._run(
            "ceph-authtool", "--create-keyring", str(mon_kr), "--gen-key", "-n", "mon.", "--cap", "mon", "allow *"
        )
        self._run(
            "ceph-authtool", "--create-keyring", str(admin_kr), "--gen-key", "-n", "client.admin",
            "--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mgr", "allow *",
        )  # fmt: skip
        self._run("ceph-authtool", str(mon_kr), "--import-keyring", str(admin_kr))
        self._run(
            "monmaptool", "--create", "--fsid", fsid, "--addv", "a", f"[v1:127.0.0.1:{mon_port}]", str(d / "monmap")
        )
        self._run("ceph-mon", "-c", str(self.conf), "--mkfs", "-i", "a", "--monmap", str(d / "monmap"),
                  "--keyring", str(mon_kr))  # fmt: skip
        self._spawn("ceph-mon", "-f", "-c", str(self.conf), "-i", "a")
        self._ceph("status")  # waits for the monitor
        osd_uuid = str(uuid.uuid4())
        osd_id = self._ceph("osd", "new", osd_uuid).strip()
        self._run("ceph-osd", "-c", str(self.conf), "-i", osd_id, "--mkfs", "--mkkey", "--osd-uuid", osd_uuid,
                  "--no-mon-config")  # fmt: skip
        self._ceph("auth", "add", f"osd.{osd_id}", "osd", "allow *", "mon", "allow profile osd",
                   "-i", str(d / "osd" / osd_id / "keyring"))  # fmt: skip
        self._spawn("ceph-osd", "-f", "-c", str(self.conf), "-i", osd_id)
        self._wait("the OSD to come up", lambda: '"num_up_osds":1' in self._ceph("osd", "stat", "-f", "json"))
        self._ceph("auth", "get-or-create", "client.rgw.bench", "mon", "allow rw", "osd", "allow rwx",
                   "-o", str(d / "client.rgw.bench.keyring"))  # fmt: skip
        self._spawn("radosgw", "-f", "-c", str(self.conf), "-n", "client.rgw.bench")
        self.endpoint = f"http://127.0.0.1:{rgw_port}"
        self._wait("the gateway to listen", lambda: _listening(rgw_port), timeout=180)
        self._run(
            "radosgw-admin", "-c", str(self.conf), "user", "create", "--uid", "bench", "--display-name", "bench",
            "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY,
        )  # fmt: skip

    def _wait(self, what: str, ready: object, timeout: float = 120) -> None:
        assert callable(ready)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args[0]} exited ({p.returncode}) waiting for {what}: see {self.dir}/log")
            try:
                if ready():
                    return
            except RuntimeError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"timed out waiting for {what} (logs in {self.dir}/log)")

    def _stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
        self.procs.clear()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
        return True
    except OSError:
        return False
