"""Secrets: the repository password, the S3 secret key and the key material never appear in any
CLI output (stdout, stderr, warnings and retry notices included) nor in any repository object.

Every command is run, on S3 through a fault-injecting proxy (so retry notices and storage errors
are printed too) and with failure paths: a wrong password, credentials embedded in the URL, a
missing snapshot, an unreadable password file. Key material means the master keys (raw, hex and
base64) and the sealed fields of the key file (its salt, data and MAC).
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from tests.figures import Figures
from tests.reliability.conftest import PASSWORD, make_tree, run, snapshot_of
from tests.reliability.s3proxy import FaultProxy

pytestmark = pytest.mark.reliability

S3_SECRET = "reliability-s3-secret-Qm9vYmFy-31d7"


def forms(secret: bytes) -> list[str]:
    """Every usual printable form of a binary secret."""
    return [
        secret.hex(),
        secret.hex().upper(),
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).decode(),
        base64.b64encode(secret).decode().rstrip("="),
    ]


def test_secrets_never_appear_in_outputs_or_objects(
    s3_server: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, figures: Figures
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    proxy = FaultProxy(s3_server, fraction=0.1, seed=77, max_delay=1.0).start()  # retries print notices
    try:
        url = f"s3://{s3_bucket}/repo?endpoint={proxy.url}"
        password_file = tmp_path / "password"
        password_file.write_text(PASSWORD + "\n")
        env = {"SNAPMOVER_REPOSITORY": url, "SNAPMOVER_PASSWORD": PASSWORD}
        src = tmp_path / "src"
        make_tree(src, 11, files=40, big=1)
        outputs = []

        def cli(*args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
            res = run({**env, **(extra or {})}, *args)
            outputs.append(res.stdout + res.stderr)
            return res

        cli("repo", "init", "--pack-size", "1")
        sid = snapshot_of(cli("upload", "--source", str(src)))
        cli("upload", "--source", str(src), "--json")
        cli("upload", "--source", str(src), "--password-file", str(password_file), extra={"SNAPMOVER_PASSWORD": ""})
        cli("snapshots", "--json")
        cli("repo", "info", "--json")
        cli("repo", "check", "--read-data", "--json")
        cli("download", "--snapshot", sid, "--target", str(tmp_path / "out"))
        cli("download", "--snapshot", "ffff", "--target", str(tmp_path / "x"))
        cli("forget", sid)
        cli("prune", "--json")
        cli("repo", "unlock", "--all")
        cli("snapshots", extra={"SNAPMOVER_PASSWORD": "not-" + PASSWORD})
        cli("snapshots", extra={"SNAPMOVER_REPOSITORY": f"s3://AKIDEXAMPLE:{S3_SECRET}@{s3_bucket}/repo"})
        cli("snapshots", "--password-file", str(tmp_path), extra={"SNAPMOVER_PASSWORD": ""})
        cli("snapshots", extra={"SNAPMOVER_REPOSITORY": f"s3://no-such-bucket-x/repo?endpoint={proxy.url}"})
    finally:
        proxy.stop()

    from jobs.repository.repository import Repository
    from jobs.storage.url import open_storage

    storage = open_storage(f"s3://{s3_bucket}/repo?endpoint={s3_server}")
    with Repository.open(storage, PASSWORD) as repository:
        keys = repository.keys
    key_docs = [json.loads(storage.get(o.name)) for o in storage.list("keys/")]
    objects = {o.name: storage.get(o.name) for o in storage.list()}
    storage.close()

    binary_secrets = [keys.encryption, keys.chunk_id, keys.mac]
    key_file_fields = [doc[f] for doc in key_docs for f in ("salt", "data", "mac")]
    text_secrets = [PASSWORD, S3_SECRET, *key_file_fields, *(f for s in binary_secrets for f in forms(s))]
    blob = "\n".join(outputs)
    assert "Traceback" not in blob
    leaked = [s[:6] + "…" for s in text_secrets if s in blob]
    assert not leaked, f"secrets in CLI output: {leaked}"
    assert "cdc_seed" not in blob and f" {keys.cdc_seed}" not in blob
    for name, body in objects.items():
        for secret in [PASSWORD.encode(), S3_SECRET.encode(), *binary_secrets]:
            assert secret not in body, f"a secret in repository object {name}"
    figures.add(
        "secrets",
        "CLI runs scanned (incl. retries through a 10 % faulty proxy, error paths); objects scanned; "
        "secret strings looked for",
        f"{len(outputs)} runs, {len(blob)} characters; {len(objects)} objects; "
        f"{len(text_secrets) + 1} strings (password, S3 secret key, master keys raw/hex/base64, "
        "key-file salt/data/mac, chunker seed): none found",
    )
