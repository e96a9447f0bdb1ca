"""Storage URLs: ``file:///abs/path`` and ``s3://bucket/prefix?endpoint=…&region=…&path_style=true``.

:func:`open_storage` is how every caller gets a :class:`~jobs.storage.base.Storage`: it parses
the URL (``UsageError``, exit 2, when malformed) and wraps the backend in the retry decorator.
The S3 backend is imported lazily so file-only use never loads boto3.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs, urlsplit, urlunsplit

from jobs.errors import UsageError
from jobs.storage.base import Storage
from jobs.storage.file import FileStorage
from jobs.storage.retry import RetryingStorage, RetryPolicy

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
S3_QUERY_KEYS = {"endpoint", "region", "path_style", "insecure", "profile", "ca_bundle"}


def redact_url(url: str) -> str:
    """The URL without any user:password part, safe for logs and messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<malformed URL>"
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    query = "&".join(f"{k}={v[0]}" for k, v in parse_qs(parts.query).items() if k in S3_QUERY_KEYS and k != "profile")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _flag(query: dict[str, list[str]], key: str, url: str) -> bool:
    value = query.get(key, ["false"])[0].lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise UsageError(f"repository URL {redact_url(url)}: {key} must be true or false, not {value!r}")


def open_storage(url: str, *, parallel: int = 8, retry: RetryPolicy | None = None) -> Storage:
    """Open the storage named by ``url``, wrapped in the retry decorator."""
    inner = open_backend(url, parallel=parallel)
    return RetryingStorage(inner, retry)


def open_backend(url: str, *, parallel: int = 8) -> Storage:
    """Open the bare backend for ``url`` (no retries)."""
    if not url:
        raise UsageError("no repository given: pass --repo or set SNAPMOVER_REPOSITORY")
    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise UsageError(f"malformed repository URL {redact_url(url)}: {e}") from e
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise UsageError(f"malformed repository URL {redact_url(url)}: use file:///absolute/path")
        return FileStorage(parts.path)
    if parts.scheme == "s3":
        return _open_s3(url, parts.netloc, parts.path, parse_qs(parts.query), parallel)
    raise UsageError(f"unsupported repository URL {redact_url(url)}: use file:///absolute/path or s3://bucket/prefix")


def _open_s3(url: str, bucket: str, path: str, query: dict[str, list[str]], parallel: int) -> Storage:
    unknown = set(query) - S3_QUERY_KEYS
    if unknown:
        raise UsageError(f"repository URL {redact_url(url)}: unknown option(s) {', '.join(sorted(unknown))}")
    if not bucket or "@" in bucket:
        raise UsageError(f"malformed repository URL {redact_url(url)}: use s3://bucket/prefix (no credentials)")
    endpoint = query.get("endpoint", [os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")])[0]
    if endpoint and not urlsplit(endpoint).scheme.startswith("http"):
        raise UsageError(f"repository URL {redact_url(url)}: endpoint must start with http:// or https://")
    from jobs.storage.s3 import S3Options, S3Storage

    options = S3Options(
        bucket=bucket,
        prefix=path.strip("/"),
        endpoint=endpoint or None,
        region=query.get("region", [None])[0],
        path_style=_flag(query, "path_style", url),
        insecure=_flag(query, "insecure", url),
        profile=query.get("profile", [None])[0],
        ca_bundle=query.get("ca_bundle", [None])[0],
    )
    return S3Storage(options, parallel=parallel)
