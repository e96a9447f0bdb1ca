"""The repository's ``config`` object and the parameters fixed when a repository is created.

:class:`RepositoryConfig` is written sealed at ``repo init`` (FORMAT.md §4) and read back by
:func:`read_config` whenever a repository is opened, and again by ``check``. This module sits low
in ``jobs.repository`` (it needs only the crypto layer) so that the pack writer, the facade
(:mod:`jobs.repository.repository`) and maintenance can all use the configuration and the object
names without importing each other.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Final

from jobs.errors import (
    IntegrityError,
    ObjectExistsError,
    ObjectNotFoundError,
    RepositoryExistsError,
    RepositoryNotFoundError,
)
from jobs.repository.crypto import MasterKeys, open_sealed, seal
from jobs.storage.base import Storage

KiB: Final = 1024
MiB: Final = 1024 * KiB
REPOSITORY_VERSION: Final = 1
SUPPORTED_VERSIONS: Final = frozenset({1})
CONFIG_NAME: Final = "config"
CONFIG_AAD: Final = b"snapmover-config"
DATA_PREFIX: Final = "data/"
DEFAULT_PACK_TARGET_BYTES: Final = 16 * MiB
DEFAULT_BLOCK_SIZE: Final = 1 * MiB
# pyfastcdc limits: min <= 1 MiB, avg <= 4 MiB, max <= 16 MiB.
DEFAULT_CDC_MIN_BYTES: Final = 512 * KiB
DEFAULT_CDC_AVG_BYTES: Final = 1 * MiB
DEFAULT_CDC_MAX_BYTES: Final = 8 * MiB


@dataclass(frozen=True)
class RepositoryConfig:
    """Parameters fixed at ``repo init`` (stored sealed in the ``config`` object)."""

    version: int
    id: str
    cdc_min_bytes: int
    cdc_avg_bytes: int
    cdc_max_bytes: int
    block_size: int
    pack_target_bytes: int

    @property
    def cdc_seed(self) -> int:
        """The chunker's secret gear-table seed (from the key material; never printed)."""
        return int(self.__dict__.get("_cdc_seed", 0))

    def with_seed(self, seed: int) -> RepositoryConfig:
        """A copy carrying the secret seed (kept out of ``asdict`` and ``repr``)."""
        copy = RepositoryConfig(**asdict(self))
        object.__setattr__(copy, "_cdc_seed", seed)
        return copy


def write_config(storage: Storage, keys: MasterKeys, config: RepositoryConfig) -> None:
    """Store the sealed ``config`` object, create-only: of concurrent inits exactly one wins, the
    others get RepositoryExistsError."""
    try:
        storage.put(
            CONFIG_NAME, seal(keys.encryption, json.dumps(asdict(config)).encode(), CONFIG_AAD), overwrite=False
        )
    except ObjectExistsError as e:
        raise RepositoryExistsError(f"a repository already exists at {storage.location}") from e


def read_config(storage: Storage, keys: MasterKeys) -> RepositoryConfig:
    """Load and authenticate the ``config`` object."""
    try:
        sealed = storage.get(CONFIG_NAME)
    except ObjectNotFoundError as e:
        raise RepositoryNotFoundError(f"no repository config at {storage.location}") from e
    plain = open_sealed(keys.encryption, sealed, CONFIG_AAD, f"repository config object {CONFIG_NAME!r}")
    try:
        config = RepositoryConfig(**json.loads(plain))
    except (ValueError, TypeError) as e:
        raise IntegrityError(f"repository config object {CONFIG_NAME!r} is malformed") from e
    if config.version not in SUPPORTED_VERSIONS:
        raise IntegrityError(
            f"repository format version {config.version} is not supported by this snapmover "
            f"(supports {sorted(SUPPORTED_VERSIONS)}); upgrade snapmover"
        )
    return config
