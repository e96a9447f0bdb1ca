"""``snapmover doctor``: a pre-flight check of a storage location (and its repository).

Each check prints one line: ``ok`` or ``FAIL``, what was checked, and for a failure the fix. The
checks run in order and stop at the first failure that makes the later ones meaningless (no
point probing objects in a bucket that cannot be reached). Used by :mod:`jobs.cli` (the
``doctor`` command, also run as a one-shot Job from ``manifests/examples/doctor-job.yaml``).
The probe object is ``doctor-probe-<random>`` beside the repository and is always deleted.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from jobs.engine.api import open_repository, read_password
from jobs.errors import (
    MoverError,
    NotFoundError,
    RepositoryNotFoundError,
    StoragePermissionError,
    StorageUnavailableError,
    UsageError,
    WrongPasswordError,
)
from jobs.storage.base import Storage
from jobs.storage.url import open_backend, redact_url

PROBE_PREFIX: Final = "doctor-probe-"
PROBE_BYTES: Final = 4096


@dataclass(frozen=True)
class CheckResult:
    """One line of the report; ``fix`` is empty when the check passed."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"
        return text + (f" — fix: {self.fix}" if self.fix else "")


def _fix_for(e: MoverError) -> str:
    if isinstance(e, UsageError):
        return "use -r file:///absolute/path or s3://bucket/prefix[?endpoint=https://...]"
    if isinstance(e, StoragePermissionError):
        return "check the credentials (Secret cloud-credentials, AWS_* variables) and the bucket policy"
    if isinstance(e, NotFoundError):
        return "create the bucket, or correct its name in the storage location"
    if "certificate" in str(e).lower() or "tls" in str(e).lower():
        return "give the CA that signs the endpoint's certificate (caCert / AWS_CA_BUNDLE)"
    if isinstance(e, StorageUnavailableError):
        return "check the endpoint URL, DNS, network policy and proxy settings (HTTPS_PROXY/NO_PROXY)"
    return "see the message above"


def _attempt(name: str, ok_detail: str, action: Callable[[], object]) -> CheckResult:
    try:
        action()
    except MoverError as e:
        return CheckResult(name, False, str(e), _fix_for(e))
    return CheckResult(name, True, ok_detail)


def _probe(storage: Storage) -> None:
    name = PROBE_PREFIX + secrets.token_hex(8)
    payload = secrets.token_bytes(PROBE_BYTES)
    storage.put(name, payload)
    try:
        back = storage.get(name)
        if back != payload:
            raise StorageUnavailableError(f"the probe object {name} read back different bytes")
    finally:
        storage.delete(name)
    if storage.exists(name):
        raise StoragePermissionError(f"the probe object {name} is still there after delete")


def storage_checks(url: str, password_file: str | None) -> Iterator[CheckResult]:
    """Check ``url``: it parses, the storage answers a listing, a probe object can be written, read
    back and deleted, and the password opens the repository there (or none exists yet)."""
    try:
        storage = open_backend(url, parallel=2)
    except MoverError as e:
        yield CheckResult("repository URL", False, str(e), _fix_for(e))
        return
    where = redact_url(url)
    try:
        listing = _attempt("storage access", f"{storage.location} answers", lambda: next(storage.list("config"), None))
        yield listing
        if not listing.ok:
            return
        probe = _attempt("write/read/delete", f"a {PROBE_BYTES}-byte probe object round-trips", lambda: _probe(storage))
        yield probe
        if not probe.ok:
            return
    finally:
        storage.close()
    try:
        password = read_password(password_file)
    except MoverError as e:
        yield CheckResult("repository password", False, str(e), "mount the password Secret and pass --password-file")
        return
    try:
        open_repository(url, password, parallel=2).close()
    except RepositoryNotFoundError:
        yield CheckResult("repository", True, f"none at {where} yet (the first backup creates it)")
    except WrongPasswordError as e:
        yield CheckResult(
            "repository",
            False,
            str(e),
            "use the password this repository was created with (Secret snapmover-repo-credentials)",
        )
    except MoverError as e:
        yield CheckResult("repository", False, str(e), _fix_for(e))
    else:
        yield CheckResult("repository", True, f"the password opens the repository at {where}")
