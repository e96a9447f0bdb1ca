"""Hostile and malformed DataUpload/DataDownload objects on the local cluster (slow).

A corpus of objects the API server accepts but that are wrong: missing or empty fields, wrong
values inside ``dataMoverConfig``, absurd timeouts, names at the 63/253-character limits, unicode
and path-traversal strings, references to missing PVCs, snapshots, storage locations and Secrets,
unsupported providers, unreachable endpoints and snapshot ids that do not exist. Each must end
``Failed`` with a message naming the problem (a few odd-but-valid ones must complete); valid CRs
submitted alongside complete; an invalid field value fails before the CR is ever Accepted (its
message naming field and value); the launcher never restarts or logs a traceback; and no status,
Event, log or termination message contains the repository password or the S3 secret key.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import velero_crds  # noqa: F401 - the fixture, shared with the e2e tests
from tests.e2e.launcher_env import LauncherEnv, launcher_env, pvc, wait_for
from tests.figures import Figures
from tests.fixtures.cluster import ClusterHandle

pytestmark = [pytest.mark.reliability, pytest.mark.e2e, pytest.mark.slow]

DROP = object()  # a spec value meaning "leave this field out"
FINAL = {"Completed", "Failed", "Canceled"}
S3_SECRET = "hostile-s3-secret-Zm9vYmFyYmF6-5e1"
LONG = "x" * 300


@dataclass
class Case:
    """One CR of the corpus: kind, what is wrong, and what its final status must say."""

    kind: str  # "du" or "dd"
    label: str
    spec: dict[str, Any] = field(default_factory=dict)
    expect: tuple[str, ...] = ()  # every one of these must be in the Failed message
    phase: tuple[str, ...] = ("Failed",)  # allowed final phases ("Completed" for odd but valid ones)
    snapshot: bool = False  # needs a real VolumeSnapshot of its own (the launcher takes it over)
    name: str | None = None
    rejected: str = ""  # why the API server refused it (then it is not part of the corpus)
    at_once: bool = False  # the launcher's field check fails it before it is ever Accepted


def csi(volume_snapshot: str) -> dict[str, str]:
    return {"volumeSnapshot": volume_snapshot, "storageClass": "standard", "snapshotClass": "standard"}


def upload_cases() -> list[Case]:
    du = "du"
    return [
        Case(
            du, "empty backupStorageLocation", {"backupStorageLocation": ""}, ("backupStorageLocation",), at_once=True
        ),
        Case(du, "no backupStorageLocation", {"backupStorageLocation": DROP}, ("backupStorageLocation",)),
        Case(du, "empty sourcePVC", {"sourcePVC": ""}, ("sourcePVC",), at_once=True),
        Case(du, "no sourceNamespace", {"sourceNamespace": DROP}, ("sourceNamespace",)),
        Case(du, "empty volumeSnapshot", {"csiSnapshot": csi("")}, ("volumeSnapshot",), at_once=True),
        Case(du, "no csiSnapshot", {"csiSnapshot": DROP}, ("csiSnapshot",), at_once=True),
        Case(du, "snapshotType AWS", {"snapshotType": "AWS"}, ("snapshotType", "AWS"), at_once=True),
        Case(du, "empty snapshotType", {"snapshotType": ""}, ("snapshotType",), at_once=True),
        Case(du, "operationTimeout words", {"operationTimeout": "soon"}, ("operationTimeout", "soon"), at_once=True),
        Case(du, "operationTimeout negative", {"operationTimeout": "-5m"}, ("operationTimeout",), at_once=True),
        Case(
            du,
            "operationTimeout of 10^14 hours",
            {"operationTimeout": "99999999999999h"},
            ("spec.operationTimeout", "at most 2562047h"),
            snapshot=True,
            at_once=True,
        ),
        Case(
            du,
            "operationTimeout of 10^40 s",
            {"operationTimeout": "9" * 40},
            ("spec.operationTimeout", "at most 2562047h"),
            snapshot=True,
            at_once=True,
        ),
        Case(du, "operationTimeout zero", {"operationTimeout": "0s"}, ("spec.operationTimeout", "0s"), at_once=True),
        Case(
            du,
            "path traversal sourceNamespace",
            {"sourceNamespace": "../../kube-system"},
            ("spec.sourceNamespace", "'../../kube-system'", "namespace name"),
            at_once=True,
        ),
        Case(du, "upper-case sourceNamespace", {"sourceNamespace": "Kube-System"}, ("'Kube-System'",), at_once=True),
        Case(du, "slash in sourcePVC", {"sourcePVC": "data/../x"}, ("spec.sourcePVC", "'data/../x'"), at_once=True),
        Case(
            du,
            "storageClass with a space",
            {"csiSnapshot": {"volumeSnapshot": "s", "storageClass": "fast ssd"}},
            ("spec.csiSnapshot.storageClass", "'fast ssd'"),
            at_once=True,
        ),
        Case(du, "unknown storage location", {"backupStorageLocation": "nowhere"}, ("'nowhere' not found",)),
        Case(du, "unicode storage location", {"backupStorageLocation": "stöñage-☃"}, ("stöñage-☃",), at_once=True),
        Case(
            du,
            "path traversal storage location",
            {"backupStorageLocation": "../../etc/passwd"},
            ("../../etc",),
            at_once=True,
        ),
        Case(du, "missing source PVC", {"sourcePVC": "no-such-pvc"}, ("no-such-pvc", "does not exist")),
        Case(du, "missing source namespace", {"sourceNamespace": "no-such-ns"}, ("no-such-ns",)),
        Case(du, "path traversal sourcePVC", {"sourcePVC": "../../../etc"}, ("../../../etc",), at_once=True),
        Case(du, "300-char sourcePVC", {"sourcePVC": LONG}, (LONG[:60],), at_once=True),
        Case(du, "missing VolumeSnapshot", {}, ("no-such-snapshot", "does not exist")),
        Case(du, "path traversal VolumeSnapshot", {"csiSnapshot": csi("../../x")}, ("../../x",), at_once=True),
        Case(du, "unicode VolumeSnapshot", {"csiSnapshot": csi("snäp-☃")}, ("snäp-☃",), at_once=True),
        Case(du, "300-char VolumeSnapshot", {"csiSnapshot": csi(LONG)}, (LONG[:60],), at_once=True),
        *(
            Case(
                du,
                f"ParallelFilesUpload {value!r}",
                {"dataMoverConfig": {"ParallelFilesUpload": value}},
                ("dataMoverConfig.ParallelFilesUpload", "from 1 to 1024"),
                snapshot=True,
                at_once=True,
            )
            for value in ("abc", "0", "-3", "1.5", "99999999999999999999999", "1e400")
        ),
        Case(du, "unknown provider", {"backupStorageLocation": "gcp"}, ("provider", "gcp")),
        Case(du, "credentials Secret missing", {"backupStorageLocation": "nosecret"}, ("no-such-secret",)),
        Case(du, "credentials Secret lacks its key", {"backupStorageLocation": "nokey"}, ("has no key",)),
        Case(du, "unreachable endpoint", {"backupStorageLocation": "unreachable"}, ("127.0.0.1:9",), snapshot=True),
        Case(du, "endpoint not http", {"backupStorageLocation": "ftp"}, ("ftp://",), snapshot=True),
        Case(du, "empty bucket", {"backupStorageLocation": "nobucket"}, ("bucket",), snapshot=True),
        # odd but valid: must complete
        Case(
            du,
            "unknown dataMoverConfig key",
            {"dataMoverConfig": {"Frobnicate": "yes"}},
            phase=("Completed",),
            snapshot=True,
        ),
        Case(
            du,
            "null dataMoverConfig value",
            {"dataMoverConfig": {"ParallelFilesUpload": None}},
            phase=("Completed",),
            snapshot=True,
        ),
        Case(du, "63-char name", name="n" * 63, phase=("Completed",), snapshot=True),
        Case(du, "64-char name", name="m" * 64, phase=("Completed",), snapshot=True),
        Case(du, "253-char name", name="l" * 253, phase=("Completed",), snapshot=True),
        Case(du, "canceled at creation", {"cancel": True}, phase=("Canceled",), snapshot=True),
    ]


def download_cases() -> list[Case]:
    dd = "dd"
    return [
        Case(dd, "empty snapshotID", {"snapshotID": ""}, ("snapshotID",), at_once=True),
        Case(dd, "no snapshotID", {"snapshotID": DROP}, ("snapshotID",)),
        Case(dd, "unknown snapshotID", {"snapshotID": "f" * 64}, ("f" * 64,)),
        Case(dd, "path traversal snapshotID", {"snapshotID": "../../etc/passwd"}, ("../../etc/passwd",), at_once=True),
        Case(dd, "unicode snapshotID", {"snapshotID": "snäp-☃"}, ("snäp-☃",), at_once=True),
        Case(
            dd,
            "empty target PVC",
            {"targetVolume": {"pvc": "", "pv": "", "namespace": "APP"}},
            ("targetVolume",),
            at_once=True,
        ),
        Case(dd, "no targetVolume", {"targetVolume": DROP}, ("targetVolume",)),
        Case(
            dd,
            "missing target PVC",
            {"targetVolume": {"pvc": "no-such-pvc", "pv": "", "namespace": "APP"}},
            ("no-such-pvc",),
        ),
        Case(
            dd,
            "missing target namespace",
            {"targetVolume": {"pvc": "t", "pv": "", "namespace": "no-such-ns"}},
            ("no-such-ns",),
        ),
        Case(
            dd, "bound target PVC", {"targetVolume": {"pvc": "data", "pv": "", "namespace": "APP"}}, ("already bound",)
        ),
        Case(dd, "unknown storage location", {"backupStorageLocation": "nowhere"}, ("'nowhere' not found",)),
        Case(
            dd,
            "WriteSparseFiles maybe",
            {"dataMoverConfig": {"WriteSparseFiles": "maybe"}},
            ("dataMoverConfig.WriteSparseFiles", "'maybe'"),
            at_once=True,
        ),
        Case(
            dd,
            "ParallelFilesDownload lots",
            {"dataMoverConfig": {"ParallelFilesDownload": "lots"}},
            ("dataMoverConfig.ParallelFilesDownload", "'lots'"),
            at_once=True,
        ),
        Case(dd, "operationTimeout words", {"operationTimeout": "1 fortnight"}, ("operationTimeout",), at_once=True),
        Case(
            dd,
            "path traversal sourceNamespace",
            {"sourceNamespace": "../../kube-system"},
            ("spec.sourceNamespace", "'../../kube-system'"),
            at_once=True,
        ),
        Case(
            dd,
            "path traversal target namespace",
            {"targetVolume": {"pvc": "t", "pv": "", "namespace": "../app"}},
            ("spec.targetVolume.namespace", "'../app'"),
            at_once=True,
        ),
        Case(
            dd,
            "target pv a path",
            {"targetVolume": {"pvc": "t", "pv": "/etc", "namespace": "APP"}},
            ("spec.targetVolume.pv", "'/etc'"),
            at_once=True,
        ),
        Case(dd, "upper-case snapshotID", {"snapshotID": "F" * 64}, ("spec.snapshotID", "64 hex"), at_once=True),
        Case(dd, "nodeOS windows", {"nodeOS": "windows"}, ("spec.nodeOS", "'windows'"), at_once=True),
        Case(dd, "valid restore alongside", phase=("Completed",)),
    ]


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        if value is DROP:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def storage_locations(env: LauncherEnv, s3_endpoint: str) -> None:
    """BackupStorageLocations that are wrong in one way each, plus the credentials Secret."""
    env.kubectl(
        "create",
        "secret",
        "generic",
        "cloud-credentials",
        "-n",
        env.ns,
        f"--from-literal=cloud=[default]\naws_access_key_id = hostile\naws_secret_access_key = {S3_SECRET}\n",
    )

    def bsl(
        name: str,
        provider: str = "aws",
        url: str = s3_endpoint,
        bucket: str = "b",
        cred: str = "cloud-credentials",
        key: str = "cloud",
    ) -> None:
        env.apply(
            {
                "apiVersion": "velero.io/v1",
                "kind": "BackupStorageLocation",
                "metadata": {"name": name},
                "spec": {
                    "provider": provider,
                    "objectStorage": {"bucket": bucket},
                    "config": {"region": "us-east-1", "s3Url": url, "s3ForcePathStyle": "true"},
                    "credential": {"name": cred, "key": key},
                },
            }
        )

    bsl("gcp", provider="gcp")
    bsl("nosecret", cred="no-such-secret")
    bsl("nokey", key="no-such-key")
    bsl("unreachable", url="http://127.0.0.1:9")
    bsl("ftp", url="ftp://127.0.0.1:21")
    bsl("nobucket", bucket="")


def submit(env: LauncherEnv, case: Case, index: int, snapshot_id: str) -> str | None:
    """Create the CR; None (and the reason in ``case.rejected``) when the API server refuses it."""
    app = env.app
    meta: dict[str, Any] = {"name": case.name} if case.name else {"generateName": f"hostile-{index}-"}
    if case.kind == "du":
        base = {
            "snapshotType": "CSI",
            "csiSnapshot": {
                "volumeSnapshot": f"snap-{index}" if case.snapshot else "no-such-snapshot",
                "storageClass": "standard",
                "snapshotClass": "standard",
            },
            "sourcePVC": "data",
            "sourceNamespace": app,
            "datamover": "snapmover",
            "backupStorageLocation": "default",
            "operationTimeout": "60s" if case.snapshot else "5s",
        }
        kind = "DataUpload"
    else:
        base = {
            "targetVolume": {"pvc": f"target-{index}", "pv": "", "namespace": app},
            "backupStorageLocation": "default",
            "datamover": "snapmover",
            "snapshotID": snapshot_id,
            "sourceNamespace": app,
            "operationTimeout": "10s",
        }
        kind = "DataDownload"
    spec = json.loads(json.dumps(merge(base, case.spec), default=lambda o: None).replace('"APP"', json.dumps(app)))
    body = {"apiVersion": "velero.io/v2alpha1", "kind": kind, "metadata": meta, "spec": spec}
    res = env.kubectl("create", "-n", env.ns, "-f", "-", "-o", "name", input=json.dumps(body), check=False)
    if res.returncode != 0:
        case.rejected = res.stderr.strip()
        return None
    return str(res.stdout).strip().split("/")[-1]


def test_hostile_and_malformed_crs_fail_clearly(
    velero_crds: ClusterHandle,  # noqa: F811
    s3_server: str,
    tmp_path: Path,
    figures: Figures,
) -> None:
    cases = upload_cases() + download_cases()
    assert len(cases) >= 40
    with launcher_env(velero_crds, tmp_path) as env:
        launcher = env.start_launcher()
        env.apply(pvc("data"), env.app)
        env.run_pod_job("fill", "mkdir -p /data/d && echo hello > /data/d/h && seq 1 5000 > /data/n", "data")
        storage_locations(env, s3_server)
        env.snapshot("snap-base", "data")
        base = env.data_upload("snap-base", "data")
        status = env.wait_phase("dataupload", base, FINAL, timeout=300)["status"]
        assert status["phase"] == "Completed", status
        snapshot_id = status["snapshotID"]
        for i, case in enumerate(cases):
            if case.snapshot:
                env.snapshot(f"snap-{i}", "data")
            if case.kind == "dd":
                env.apply(pvc(f"target-{i}", selector={"velero.io/dynamic-pv-restore": f"x.t{i}.y"}), env.app)
        env.snapshot("snap-valid", "data")
        t0 = time.monotonic()
        submitted = [(case, submit(env, case, i, snapshot_id)) for i, case in enumerate(cases)]
        valid = env.data_upload("snap-valid", "data")
        rejected = [f"{c.kind} {c.label}: {c.rejected}" for c, _ in submitted if c.rejected]
        cases = [c for c, n in submitted if n is not None]
        names = [n for _c, n in submitted if n is not None]
        print("refused by the API server:", *rejected, sep="\n  ")
        assert len(cases) >= 40, rejected
        plural = {"du": "dataupload", "dd": "datadownload"}

        def phases() -> list[str]:
            return [env.phase(plural[c.kind], n) for c, n in zip(cases, names, strict=True)]

        wait_for("every hostile CR to finish", lambda: all(p in FINAL for p in phases()), timeout=900)
        elapsed = time.monotonic() - t0
        assert env.wait_phase("dataupload", valid, FINAL, timeout=300)["status"]["phase"] == "Completed"

        problems = []
        outcomes: Counter[str] = Counter()
        at_once = 0
        for case, name in zip(cases, names, strict=True):
            st = env.get(plural[case.kind], name).get("status") or {}
            message = str(st.get("message", ""))
            outcomes[st.get("phase", "New")] += 1
            print(f"{case.kind} {case.label[:40]:<40} {st.get('phase')}: {message[:230]}")
            named = st.get("phase") != "Failed" or all(e in message for e in case.expect)
            accepted = "acceptedTimestamp" in st  # a CR failed by the field check never was
            if st.get("phase") not in case.phase or not named or (case.at_once and accepted):
                problems.append(f"{case.kind} {case.label}: {st.get('phase')} accepted={accepted} {message[:200]!r}")
            at_once += case.at_once and not accepted
        assert launcher.poll() is None, "the launcher exited"
        log = env.launcher_log()
        assert "Traceback" not in log, log[-3000:]
        assert not problems, "\n".join(problems)

        # secrets: nowhere in statuses, Events, logs or termination messages
        password = env.repository_password()
        statuses = [
            json.dumps(item.get("status") or {})
            for kind in ("datauploads", "datadownloads")
            for item in json.loads(env.kubectl("get", kind, "-n", env.ns, "-o", "json").stdout)["items"]
        ]
        events = env.kubectl("get", "events", "-A", "-o", "json").stdout
        pods = env.kubectl("get", "pods", "-n", env.ns, "-o", "json").stdout
        pod_logs = env.kubectl(
            "logs", "-n", env.ns, "-l", "app.kubernetes.io/name=snapmover", "--tail=-1", "--prefix", check=False
        ).stdout
        haystack = "\n".join([*statuses, events, pods, pod_logs, log])
        for secret in (password, S3_SECRET, base64.b64encode(S3_SECRET.encode()).decode()):
            assert secret not in haystack
        rss = Path(f"/proc/{launcher.pid}/status").read_text()
        peak = next(line.split()[1] for line in rss.splitlines() if line.startswith("VmHWM"))
    figures.add(
        "hostile CRs",
        "corpus size; final phases; every Failed message names the problem; valid CRs alongside",
        f"{len(cases)} ({sum(c.kind == 'du' for c in cases)} DataUploads, {sum(c.kind == 'dd' for c in cases)} "
        f"DataDownloads); {dict(outcomes)}; yes; completed",
    )
    figures.add(
        "hostile CRs",
        "invalid field values failed by the launcher's field check before being Accepted (message names field + value)",
        f"{at_once} of {len(cases)}, e.g. sourceNamespace '../../kube-system'",
    )
    figures.add(
        "hostile CRs",
        "objects the API server itself refused (so not part of the corpus)",
        "; ".join(r[:100] for r in rejected) or "none",
    )
    figures.add(
        "hostile CRs",
        "time until every CR was final; launcher restarts; launcher peak RSS",
        f"{elapsed:.0f} s; 0; {int(peak) / 1024:.0f} MiB",
    )
    figures.add(
        "secrets (cluster)",
        "repository password / S3 secret key in CR statuses, Events, pod specs+statuses, mover logs, launcher log",
        f"none found in {len(haystack)} characters",
    )
