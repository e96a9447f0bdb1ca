"""Operator-facing manifests: the doctor Job example runs `snapmover doctor` hardened, with the
credentials and password mounted as files (never env literals), and its URL parses."""

from __future__ import annotations

from pathlib import Path

import yaml

from jobs.storage.url import open_backend

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"


def test_doctor_job_example() -> None:
    job, role, binding = yaml.safe_load_all((EXAMPLES / "doctor-job.yaml").read_text())
    assert job["kind"] == "Job" and job["metadata"]["namespace"] == "snapmover"
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "snapmover-launcher"  # the RBAC checks answer for the launcher
    (container,) = pod["containers"]
    assert container["command"][:3] == ["snapmover", "doctor", "-r"] and "--cluster" in container["command"]
    assert {v for r in role["rules"] for v in r["verbs"]} == {"list"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "snapmover-launcher", "namespace": "snapmover"}]
    open_backend(container["command"][3]).close()  # a URL the mover accepts
    ctx = container["securityContext"]
    assert (
        ctx["readOnlyRootFilesystem"] and not ctx["allowPrivilegeEscalation"] and ctx["capabilities"]["drop"] == ["ALL"]
    )
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert Path(env["AWS_SHARED_CREDENTIALS_FILE"]).parent.as_posix() in mounts
    assert Path(env["SNAPMOVER_PASSWORD_FILE"]).parent.as_posix() in mounts
    assert not any("SECRET" in name or name == "SNAPMOVER_PASSWORD" for name in env)


def test_make_release_renders_the_default_install_without_crds_and_one_with_them() -> None:
    import subprocess

    root = EXAMPLES.parents[1]
    out = subprocess.run(["make", "-s", "release"], cwd=root, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all((root / "build" / "install.yaml").read_text()) if d]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Deployment", "snapmover-launcher") in kinds and ("Namespace", "snapmover") in kinds
    assert not {n for k, n in kinds if k == "CustomResourceDefinition"}  # never replaces Velero's
    with_crds = [d for d in yaml.safe_load_all((root / "build" / "install-without-velero.yaml").read_text()) if d]
    assert {d["metadata"]["name"] for d in with_crds if d["kind"] == "CustomResourceDefinition"} == {
        "datauploads.velero.io",
        "datadownloads.velero.io",
        "backupstoragelocations.velero.io",
    }
    assert [d for d in with_crds if d["kind"] != "CustomResourceDefinition"] == docs
