"""An in-memory stand-in for the Repository, for unit tests of the pipelines.

It keeps the contract the pipelines rely on: keyed content ids, thread-safe dedup in
``add_blob`` (returns 0 for a known blob), and verification in ``load_blob``/``load_blobs``
(IntegrityError when a stored blob no longer matches its id).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import blake3

from jobs.errors import IntegrityError, ObjectNotFoundError

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class FakeConfig:
    cdc_min_bytes: int = 256 * KiB
    cdc_avg_bytes: int = 1 * MiB
    cdc_max_bytes: int = 4 * MiB
    cdc_seed: int = 0x5EED_1234_ABCD
    block_size: int = 1 * MiB


class FakeRepository:
    def __init__(self, config: FakeConfig | None = None) -> None:
        self.config = config or FakeConfig()
        self.blobs: dict[str, bytes] = {}
        self.kinds: dict[str, str] = {}
        self.stored_bytes = 0
        self.add_calls = 0
        self.on_add: Callable[[int], None] | None = None
        self._lock = threading.Lock()
        self._key = bytes(range(32))

    def chunk_id(self, data: bytes | memoryview) -> str:
        return blake3.blake3(data, key=self._key).hexdigest()

    def has_blob(self, chunk_id: str) -> bool:
        return chunk_id in self.blobs

    def add_blob(self, kind: str, chunk_id: str, data: bytes | memoryview) -> int:
        with self._lock:
            self.add_calls += 1
            calls = self.add_calls
        if self.on_add is not None:
            self.on_add(calls)
        with self._lock:
            if chunk_id in self.blobs:
                return 0
            self.blobs[chunk_id] = bytes(data)
            self.kinds[chunk_id] = kind
            self.stored_bytes += len(data)
            return len(data)

    def load_blob(self, chunk_id: str) -> bytes:
        try:
            data = self.blobs[chunk_id]
        except KeyError as e:
            raise ObjectNotFoundError(f"blob {chunk_id} not found") from e
        if self.chunk_id(data) != chunk_id:
            raise IntegrityError(f"blob {chunk_id} failed verification")
        return data

    def load_blobs(self, chunk_ids: Iterable[str], *, parallel: int = 4) -> Iterator[tuple[str, bytes]]:
        for cid in chunk_ids:
            yield cid, self.load_blob(cid)

    def data_bytes(self) -> int:
        return sum(len(b) for cid, b in self.blobs.items() if self.kinds[cid] == "data")
