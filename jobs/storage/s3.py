"""``s3://bucket/prefix`` storage on any S3-compatible server (AWS, MinIO, Ceph RGW, moto).

The only module that imports boto3/botocore. One client is shared by all threads (botocore
clients are thread safe); its connection pool is sized to the requested parallelism. botocore's
own retries are set to a few attempts in ``standard`` mode: :class:`~jobs.storage.retry.RetryingStorage`
is the one place with a retry budget, and a body cut off mid-stream — which botocore does not
retry — surfaces here as a retryable :class:`~jobs.errors.StorageUnavailableError`. Every
botocore error is translated at this boundary; messages never carry credentials.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from jobs.errors import (
    MoverError,
    NotFoundError,
    ObjectExistsError,
    ObjectNotFoundError,
    StoragePermissionError,
    StorageUnavailableError,
    TLSVerificationError,
)
from jobs.storage.base import ObjectInfo, Storage
from jobs.storage.file import check_name

S3_MAX_KEYS_PER_PAGE = 1000  # S3's limit; moto returns more when asked, so we never ask
BOTOCORE_ATTEMPTS = 3
CONNECT_TIMEOUT_SECONDS = 10
READ_TIMEOUT_SECONDS = 60


class _ViewReader(io.RawIOBase):
    """A seekable read-only file over a memoryview: botocore streams (and re-reads on a retry)
    the request body from the caller's buffer instead of a copy of it."""

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view = view.cast("B")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._view[self._pos : self._pos + len(buffer)]
        n = len(chunk)
        memoryview(buffer).cast("B")[:n] = chunk
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        """Release the view: botocore's retry bookkeeping may keep this reader alive (in an
        exception's traceback) long after the request, and the caller reuses or unmaps the buffer."""
        self._view.release()
        super().close()


_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}
_PERMISSION_CODES = {
    "AccessDenied",
    "403",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AllAccessDisabled",
}
_PRECONDITION_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict"}


@dataclass(frozen=True)
class S3Options:
    """Connection options parsed from an ``s3://`` URL."""

    bucket: str
    prefix: str = ""
    endpoint: str | None = None
    region: str | None = None
    path_style: bool = False
    insecure: bool = False
    profile: str | None = None
    ca_bundle: str | None = None  # PEM file of the CA signing the endpoint (else AWS_CA_BUNDLE, else the system's)


class S3Storage(Storage):
    """Objects as S3 keys ``<prefix>/<name>`` in one bucket."""

    def __init__(self, options: S3Options, *, parallel: int = 8, session: Any = None) -> None:
        self._opt = options
        self._parallel = parallel
        self._prefix = options.prefix.strip("/") + "/" if options.prefix.strip("/") else ""
        config = Config(
            retries={"mode": "standard", "max_attempts": BOTOCORE_ATTEMPTS},
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            max_pool_connections=max(10, parallel * 2),
            s3={"addressing_style": "path" if options.path_style else "auto"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        try:
            if session is None:
                session = (
                    boto3.session.Session(profile_name=options.profile) if options.profile else boto3.session.Session()
                )
            self._session = session
            self._client: Any = session.client(
                "s3",
                endpoint_url=options.endpoint,
                region_name=options.region,
                config=config,
                # None lets botocore honour AWS_CA_BUNDLE; True would ignore it
                verify=False if options.insecure else (options.ca_bundle or None),
            )
        except botocore.exceptions.BotoCoreError as e:
            raise StorageUnavailableError(f"cannot set up the S3 client for {self.location}: {e}") from e

    @property
    def location(self) -> str:
        where = f" at {self._opt.endpoint}" if self._opt.endpoint else ""
        return f"s3://{self._opt.bucket}/{self._prefix.rstrip('/')}{where}"

    def _key(self, name: str) -> str:
        check_name(name)
        return self._prefix + name

    def create_bucket_if_missing(self) -> None:
        """Create the bucket when it does not exist (used by ``repo init`` only)."""
        try:
            self._client.head_bucket(Bucket=self._opt.bucket)
            return
        except botocore.exceptions.ClientError as e:
            if _code(e) not in {"404", "NoSuchBucket", "NotFound"}:
                raise self._translate(e, "bucket") from e
        except botocore.exceptions.BotoCoreError as e:
            raise self._translate(e, "bucket") from e
        kwargs: dict[str, Any] = {"Bucket": self._opt.bucket}
        region = self._client.meta.region_name
        if region and region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self._client.create_bucket(**kwargs)
        except botocore.exceptions.ClientError as e:
            if _code(e) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise self._translate(e, "bucket") from e
        except botocore.exceptions.BotoCoreError as e:
            raise self._translate(e, "bucket") from e

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        kwargs: dict[str, Any] = {"Bucket": self._opt.bucket, "Key": self._key(name)}
        if length is not None:
            if length == 0:
                self.stat(name)
                return b""
            kwargs["Range"] = f"bytes={offset}-{offset + length - 1}"
        elif offset:
            kwargs["Range"] = f"bytes={offset}-"
        try:
            resp = self._client.get_object(**kwargs)
            data: bytes = resp["Body"].read()
        except botocore.exceptions.ClientError as e:
            if _code(e) in {"InvalidRange", "416"}:
                raise ObjectNotFoundError(
                    f"object {name}: range {offset}+{length} is past its end; it is truncated"
                ) from e
            raise self._translate(e, name) from e
        except (botocore.exceptions.BotoCoreError, OSError) as e:
            raise self._translate(e, name) from e
        expected = resp.get("ContentLength")
        if expected is not None and len(data) != expected:
            raise StorageUnavailableError(f"object {name}: body cut off ({len(data)} of {expected} bytes)")
        if length is not None and len(data) != length:
            raise ObjectNotFoundError(
                f"object {name}: short read ({len(data)} of {length} bytes at offset {offset}); it is truncated"
            )
        return data

    def put(self, name: str, data: bytes | memoryview, *, overwrite: bool = True) -> None:
        body = data if isinstance(data, bytes) else _ViewReader(memoryview(data))  # never a copy of a pack
        kwargs: dict[str, Any] = {"Bucket": self._opt.bucket, "Key": self._key(name), "Body": body}
        if not overwrite:
            kwargs["IfNoneMatch"] = "*"
        try:
            self._client.put_object(**kwargs)
        except botocore.exceptions.ClientError as e:
            if not overwrite and _code(e) in _PRECONDITION_CODES:
                raise ObjectExistsError(f"object {name} already exists") from e
            raise self._translate(e, name) from e
        except botocore.exceptions.BotoCoreError as e:
            raise self._translate(e, name) from e
        finally:
            if isinstance(body, _ViewReader):
                body.close()

    def delete(self, name: str) -> None:
        try:
            self._client.delete_object(Bucket=self._opt.bucket, Key=self._key(name))
        except botocore.exceptions.ClientError as e:
            if _code(e) in _NOT_FOUND_CODES:
                return
            raise self._translate(e, name) from e
        except botocore.exceptions.BotoCoreError as e:
            raise self._translate(e, name) from e

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        kwargs: dict[str, Any] = {
            "Bucket": self._opt.bucket,
            "Prefix": self._prefix + prefix,
            "MaxKeys": S3_MAX_KEYS_PER_PAGE,
        }
        cut = len(self._prefix)
        while True:
            try:
                resp = self._client.list_objects_v2(**kwargs)
            except botocore.exceptions.ClientError as e:
                raise self._translate(e, prefix or "/") from e
            except botocore.exceptions.BotoCoreError as e:
                raise self._translate(e, prefix or "/") from e
            for item in resp.get("Contents", []):
                yield ObjectInfo(item["Key"][cut:], int(item["Size"]))
            token = resp.get("NextContinuationToken")
            if not resp.get("IsTruncated") or not token:
                return
            kwargs["ContinuationToken"] = token

    def stat(self, name: str) -> ObjectInfo:
        try:
            resp = self._client.head_object(Bucket=self._opt.bucket, Key=self._key(name))
        except botocore.exceptions.ClientError as e:
            raise self._translate(e, name) from e
        except botocore.exceptions.BotoCoreError as e:
            raise self._translate(e, name) from e
        return ObjectInfo(name, int(resp["ContentLength"]))

    def reopened(self) -> Storage:
        # a new client (its own connection pool) from the same session: the service models and
        # credentials that session loaded are reused, not read again
        return S3Storage(self._opt, parallel=self._parallel, session=self._session)

    def close(self) -> None:
        self._client.close()

    def _translate(self, e: Exception, name: str) -> MoverError:
        if isinstance(e, botocore.exceptions.ClientError):
            code = _code(e)
            if code == "NoSuchBucket":
                return NotFoundError(f"bucket {self._opt.bucket!r} does not exist at {self.location}")
            if code in _NOT_FOUND_CODES:
                return ObjectNotFoundError(f"object {name} not found in {self.location}")
            if code in _PERMISSION_CODES:
                return StoragePermissionError(
                    f"access to {self.location} denied ({code}); check the storage credentials and bucket policy"
                )
            return StorageUnavailableError(f"S3 error on {name} at {self.location}: {code}")
        if isinstance(e, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError):
            return StoragePermissionError(f"no S3 credentials found for {self.location}; configure them")
        if isinstance(e, botocore.exceptions.SSLError):
            return TLSVerificationError(
                f"TLS certificate of {self._opt.endpoint or 'the S3 endpoint'} not trusted; give its CA "
                "(BackupStorageLocation objectStorage.caCert, the ConfigMap's caCert, or AWS_CA_BUNDLE)"
            )
        if isinstance(e, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectTimeoutError):
            return StorageUnavailableError(f"cannot reach {self.location}")
        return StorageUnavailableError(f"S3 request for {name} at {self.location} failed: {type(e).__name__}")


def _code(e: botocore.exceptions.ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))
