"""Load: 200 DataUploads of small volumes submitted at once on the local cluster (slow).

Every one must reach Completed, none may stay stuck, and the launcher's concurrency limit must
hold the whole time (sampled from the mover pods while the run goes on). The API requests our
components make are counted by the API server itself: its audit log (tests/cluster/controlplane.py)
records every completed request with the client's user agent, and the launcher, the mover and
``backup-pvc`` each send their own (``snapmover-launcher/…``, ``snapmover-mover/…``). Target:
≤ 15 requests per DataUpload for launcher and mover together, counted from submission until the
last mover Job is cleaned up. The launcher's peak RSS is read from /proc (target ≤ 150 MiB).

The request target is reported, not asserted: under DESIGN's contracts a DataUpload needs about 22
writes (snapshot takeover as Velero does it: 7; per-CR ServiceAccount/Role/RoleBinding: 3; four
phase updates; two Events; PVC and Job create/delete: 4) plus 3 reads, so 15 is out of reach
without changing a contract (see RESULTS.md). What the test asserts is what the launcher's design
guarantees: reads come from watch caches, so the cost per CR stays at that floor however many CRs
wait — ``REQUESTS_PER_CR_CEILING`` fails the run if a change brings per-reconcile reads back.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from jobs.contract import LABEL_OWNER_NAME, LABEL_ROLE
from tests.e2e.conftest import velero_crds  # noqa: F401 - the fixture, shared with the e2e tests
from tests.e2e.launcher_env import LauncherEnv, launcher_env, pvc, wait_for
from tests.figures import Figures
from tests.fixtures.cluster import ClusterHandle

# the waits below add up to over an hour: 200 real pods, four at a time, on a loaded 2-core node
pytestmark = [pytest.mark.reliability, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(4200)]

COUNT = int(os.environ.get("SNAPMOVER_LOAD_COUNT", "200"))  # smaller only for quick local iterations
LIMIT = 4  # maxConcurrentJobs (and maxJobsPerNode: the cluster has one node)
REQUESTS_PER_CR_TARGET = 15
REQUESTS_PER_CR_CEILING = 25  # the floor above (~23 measured) plus one; polling reads would add dozens
RSS_TARGET_MIB = 150
FINAL = {"Completed", "Failed", "Canceled"}


def apply_list(env: LauncherEnv, items: list[dict[str, Any]], ns: str) -> None:
    """One kubectl apply for many objects (the API server still gets one request per object)."""
    env.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))


def items(env: LauncherEnv, kind: str, ns: str, *extra: str) -> list[dict[str, Any]]:
    return list(json.loads(env.kubectl("get", kind, "-n", ns, *extra, "-o", "json").stdout)["items"])


class MoverSampler:
    """Counts running mover pods every 0.5 s on its own API client (not a snapmover user agent)."""

    def __init__(self, cluster: ClusterHandle, ns: str) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(cluster.api_client())
        self.ns = ns
        self.peak = 0
        self.samples = 0
        self.example: Any = None  # one mover pod as the API server has it
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.done.wait(0.5):
            pods = self.core.list_namespaced_pod(self.ns, label_selector=LABEL_ROLE).items
            running = sum(1 for p in pods if p.status.phase == "Running")
            if pods and self.example is None:
                self.example = pods[0]
            self.peak = max(self.peak, running)
            self.samples += 1

    def __enter__(self) -> MoverSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(10)


def check_hardened(pod: Any) -> str:
    """Assert DESIGN §4's hardening on a mover pod as the cluster stores it; a one-line summary."""
    assert pod is not None, "no mover pod was ever seen"
    (container,) = pod.spec.containers
    sc = container.security_context
    assert sc.allow_privilege_escalation is False and sc.read_only_root_filesystem is True
    assert sc.capabilities.drop == ["ALL"] and set(sc.capabilities.add or []) <= {"DAC_READ_SEARCH"}
    assert not sc.privileged
    assert pod.spec.security_context.seccomp_profile.type == "RuntimeDefault"
    owner = pod.metadata.labels[LABEL_OWNER_NAME]
    assert pod.spec.service_account_name == f"snapmover-du-{owner}", pod.spec.service_account_name
    return (
        f"no privilege escalation, read-only root, drop ALL + {sc.capabilities.add}, seccomp RuntimeDefault, "
        f"ServiceAccount {pod.spec.service_account_name} (own CR only)"
    )


def received(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["requestReceivedTimestamp"]).replace("Z", "+00:00")).timestamp()


def test_200_datauploads_at_once(velero_crds: ClusterHandle, tmp_path: Path, figures: Figures) -> None:  # noqa: F811
    config = {
        "maxConcurrentJobs": str(LIMIT),
        "maxJobsPerNode": str(LIMIT),
        "jobRetentionSeconds": "5",
        "prepareTimeout": "1800s",
    }
    with launcher_env(velero_crds, tmp_path, config) as env:
        names = [f"vol-{i:03d}" for i in range(COUNT)]
        apply_list(env, [pvc(n, size="8Mi") for n in names], env.app)
        wait_for(
            "every PVC to bind",
            lambda: sum(p["status"].get("phase") == "Bound" for p in items(env, "pvc", env.app)) == COUNT,
            timeout=300,
        )
        for i, name in enumerate(names):  # the application's data: a few small files per volume
            root = env.pv_path(name)
            (root / "dir").mkdir()
            (root / "dir" / "note.txt").write_text(f"volume {i}\n" * (i + 1))
            (root / "numbers").write_bytes(b"".join(b"%d\n" % n for n in range(i * 100, i * 100 + 500)))
        apply_list(
            env,
            [
                {
                    "apiVersion": "snapshot.storage.k8s.io/v1",
                    "kind": "VolumeSnapshot",
                    "metadata": {"name": f"snap-{n}"},
                    "spec": {"volumeSnapshotClassName": "standard", "source": {"persistentVolumeClaimName": n}},
                }
                for n in names
            ],
            env.app,
        )
        wait_for(
            "every VolumeSnapshot to be ready",
            lambda: (
                sum(bool((s.get("status") or {}).get("readyToUse")) for s in items(env, "volumesnapshots", env.app))
                == COUNT
            ),
            timeout=600,
        )
        launcher = env.start_launcher()
        wait_for("the launcher to lead", lambda: "became the leader" in env.launcher_log(), timeout=60)
        uploads = [
            {
                "apiVersion": "velero.io/v2alpha1",
                "kind": "DataUpload",
                "metadata": {"name": f"load-{n}", "labels": {"velero.io/backup-name": "load"}},
                "spec": {
                    "snapshotType": "CSI",
                    "csiSnapshot": {
                        "volumeSnapshot": f"snap-{n}",
                        "storageClass": "standard",
                        "snapshotClass": "standard",
                    },
                    "sourcePVC": n,
                    "sourceNamespace": env.app,
                    "datamover": "snapmover",
                    "backupStorageLocation": "default",
                    "operationTimeout": "30m",
                },
            }
            for n in names
        ]
        t0 = time.time()
        with MoverSampler(velero_crds, env.ns) as sampler:
            env.kubectl(
                "create",
                "-n",
                env.ns,
                "-f",
                "-",
                input=json.dumps({"apiVersion": "v1", "kind": "List", "items": uploads}),
            )

            def phases() -> Counter[str]:
                return Counter((d.get("status") or {}).get("phase") or "New" for d in items(env, "datauploads", env.ns))

            wait_for("every DataUpload to finish", lambda: sum(phases()[p] for p in FINAL) == COUNT, timeout=2400)
            all_final = time.time() - t0
            wait_for(
                "the launcher to clean up every mover Job",
                lambda: not items(env, "jobs", env.ns, "-l", LABEL_ROLE),
                timeout=600,
            )
            t1 = time.time()
        outcome = phases()
        assert outcome == Counter({"Completed": COUNT}), outcome
        assert launcher.poll() is None, "the launcher exited"
        assert "Traceback" not in env.launcher_log()
        assert sampler.samples > 0
        assert sampler.peak <= LIMIT, f"{sampler.peak} movers ran at once, limit {LIMIT}"
        hardened = check_hardened(sampler.example)
        password = env.repository_password()
        # made by the launcher at start-up: 32 random bytes, URL-safe base64
        assert len(password) >= 43 and len(set(password)) >= 20, "the default repository password is not random"
        status = Path(f"/proc/{launcher.pid}/status").read_text()
        peak_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))

        events = [e for e in velero_crds.audit_events("snapmover-") if t0 <= received(e) <= t1]
        by_agent = Counter(str(e["userAgent"]).split("/")[0] for e in events)
        by_call = Counter(
            f"{str(e['userAgent']).split('/')[0].removeprefix('snapmover-')} {e['verb']} "
            f"{(e.get('objectRef') or {}).get('resource', '?')}"
            + (f"/{e['objectRef']['subresource']}" if (e.get("objectRef") or {}).get("subresource") else "")
            for e in events
        )
        per_cr = len(events) / COUNT
        print(f"{len(events)} requests, {per_cr:.1f} per DataUpload; by client {dict(by_agent)}")
        for call, n in by_call.most_common():
            print(f"  {n:6d}  {n / COUNT:5.2f}/CR  {call}")

    figures.add(
        "load",
        f"{COUNT} DataUploads of small volumes at once (limit {LIMIT}): outcome; time until all final; "
        "until all cleaned up; peak movers running (sampled)",
        f"{dict(outcome)}; {all_final:.0f} s; {t1 - t0:.0f} s; {sampler.peak} (limit {LIMIT})",
    )
    figures.add(
        "load",
        f"API requests per DataUpload (audit log; launcher + mover; target ≤ {REQUESTS_PER_CR_TARGET})",
        f"{per_cr:.1f} — {'PASS' if per_cr <= REQUESTS_PER_CR_TARGET else 'MISS'} "
        f"({', '.join(f'{a} {n / COUNT:.1f}' for a, n in by_agent.most_common())}): "
        + "; ".join(f"{c} {n / COUNT:.2f}" for c, n in by_call.most_common()),
    )
    figures.add("load", "a mover pod as stored by the API server", hardened)
    figures.add(
        "load",
        f"launcher peak RSS (target ≤ {RSS_TARGET_MIB} MiB)",
        f"{peak_kib / 1024:.0f} MiB — {'PASS' if peak_kib / 1024 <= RSS_TARGET_MIB else 'MISS'}",
    )
    assert per_cr <= REQUESTS_PER_CR_CEILING, f"{per_cr:.1f} API requests per DataUpload"
    assert peak_kib / 1024 <= RSS_TARGET_MIB, f"launcher peak RSS {peak_kib / 1024:.0f} MiB"
