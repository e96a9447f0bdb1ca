"""Errors of the mover, each with the exit code of ``jobs.contract.ExitCode``.

Every layer raises a subclass of :class:`MoverError` (translating library exceptions at its
boundary with ``raise ... from e``). Only the CLI entry point catches broadly: it prints
``str(error)`` as one line a person can act on and exits with ``error.exit_code``. Messages must
never contain secrets, keys or credentialed URLs.
"""

from __future__ import annotations

from jobs.contract import ExitCode


class MoverError(Exception):
    """Something went wrong while moving data."""

    exit_code: ExitCode = ExitCode.FAILED
    retryable: bool = False


class UsageError(MoverError):
    """Bad input: a malformed option, URL, tag or CR field."""

    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    """The configuration (environment, password source, dataMoverConfig) is incomplete or invalid."""


class IntegrityError(MoverError):
    """A repository object failed authentication or structural checks (corrupted or tampered)."""

    exit_code = ExitCode.INTEGRITY


class WrongPasswordError(IntegrityError):
    """The password does not open any key of the repository."""


class StorageUnavailableError(MoverError):
    """The storage endpoint cannot be reached or keeps failing (network, 5xx, throttling)."""

    exit_code = ExitCode.STORAGE_UNAVAILABLE
    retryable = True


class TLSVerificationError(StorageUnavailableError):
    """The storage endpoint's TLS certificate is not signed by a trusted CA (never retried)."""

    retryable = False


class StoragePermissionError(MoverError):
    """The storage refuses access (credentials, bucket policy, file permissions)."""

    exit_code = ExitCode.STORAGE_UNAVAILABLE


class NotFoundError(MoverError):
    """A named thing does not exist (snapshot id, repository, storage object)."""

    exit_code = ExitCode.NOT_FOUND


class ObjectNotFoundError(NotFoundError):
    """A storage object does not exist."""


class ObjectExistsError(MoverError):
    """A create-only put found the object already present (used for locks)."""


class RepositoryNotFoundError(NotFoundError):
    """No repository is initialised at the given location."""


class RepositoryExistsError(UsageError):
    """`repo init` found a repository already initialised at the location."""


class SnapshotNotFoundError(NotFoundError):
    """No snapshot matches the given id or prefix."""


class VolumeIOError(MoverError):
    """The source or target volume is missing, unreadable or unwritable."""

    exit_code = ExitCode.VOLUME_IO


class LockHeldError(MoverError):
    """Another process holds a conflicting repository lock."""

    exit_code = ExitCode.LOCKED


class CanceledError(MoverError):
    """The operation was canceled (spec.cancel or SIGTERM)."""

    exit_code = ExitCode.CANCELED
