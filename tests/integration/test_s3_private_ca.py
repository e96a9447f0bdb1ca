"""An S3 endpoint over TLS with a private CA (tests/fixtures/tlsfront.py in front of moto): the
mover works with the CA configured (AWS_CA_BUNDLE, or ``?ca_bundle=`` in the URL) and, without
it, fails with one clear line, exit 4, no traceback and no retry loop."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from jobs.contract import ExitCode
from tests.fixtures.s3 import FAKE_CREDENTIALS
from tests.fixtures.tlsfront import TLSFront, make_ca_and_cert
from tests.integration.test_cli_data import snapmover

pytestmark = pytest.mark.integration


@pytest.fixture
def tls(s3_server: str, tmp_path: Path) -> Iterator[tuple[TLSFront, Path]]:
    ca, cert, key = make_ca_and_cert(tmp_path)
    backend = urlsplit(s3_server)
    front = TLSFront((str(backend.hostname), int(backend.port or 80)), cert, key)
    try:
        yield front, ca
    finally:
        front.close()


def env_for(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("SNAPMOVER_", "AWS_", "REQUESTS_CA", "SSL_CERT"))}
    e.update(FAKE_CREDENTIALS, SNAPMOVER_PASSWORD="tls test password", AWS_EC2_METADATA_DISABLED="true")
    return e


def test_private_ca_configured_works(tls: tuple[TLSFront, Path], s3_bucket: str, tmp_path: Path) -> None:
    front, ca = tls
    e = env_for(tmp_path)
    url = f"s3://{s3_bucket}/repo?endpoint={front.url}"
    snapmover("repo", "init", "-r", url, env={**e, "AWS_CA_BUNDLE": str(ca)})
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"over tls" * 1000)
    snapshot_id = snapmover("upload", "-r", f"{url}&ca_bundle={ca}", "--source", str(src), env=e).stdout.split()[-1]
    out = snapmover("snapshots", "-r", url, env={**e, "AWS_CA_BUNDLE": str(ca)})
    assert snapshot_id[:8] in out.stdout


def test_without_the_ca_one_clear_line(tls: tuple[TLSFront, Path], s3_bucket: str, tmp_path: Path) -> None:
    front, _ca = tls
    result = snapmover(
        "repo",
        "init",
        "-r",
        f"s3://{s3_bucket}/repo?endpoint={front.url}",
        env=env_for(tmp_path),
        expect=ExitCode.STORAGE_UNAVAILABLE,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "TLS certificate of https://127.0.0.1" in lines[0] and "caCert" in lines[0]
