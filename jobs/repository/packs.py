"""Blobs and pack files (FORMAT.md §5-6).

A *blob* is one chunk, optionally snappy-compressed, sealed with AES-256-GCM; its associated
data is ``"snapmover-blob:" ‖ kind ‖ chunk id`` so a blob cannot be presented as another one.
The sealed plaintext starts with one flag byte (0 = stored, 1 = snappy). A *pack* is blobs back
to back, then the sealed pack header (one fixed-size entry per blob, in order) and the header's
sealed length as 4 bytes little-endian. The header duplicates what the index says, so packs can
be verified (``check --read-data``) and an index rebuilt from packs alone.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final, TypeAlias

import cramjam
import snappy

from jobs.errors import IntegrityError
from jobs.repository.crypto import SEAL_OVERHEAD_BYTES, open_sealed, seal, seal_parts_into

KIND_DATA: Final = 0
KIND_TREE: Final = 1
KIND_CODES: Final = {"data": KIND_DATA, "tree": KIND_TREE}
KIND_NAMES: Final = {v: k for k, v in KIND_CODES.items()}

FLAG_RAW: Final = b"\x00"
FLAG_SNAPPY: Final = b"\x01"
BLOB_OVERHEAD_BYTES: Final = SEAL_OVERHEAD_BYTES + 1  # nonce + tag + flag byte
# Keep compression only when it saves at least 1/32 (~3 %) of the chunk.
COMPRESSION_MIN_SAVING_SHIFT: Final = 5
# Chunks smaller than this are not worth compressing.
COMPRESSION_MIN_BYTES: Final = 256

PACK_HEADER_AAD: Final = b"snapmover-pack-header"
# One header entry: chunk id (32) | kind (1) | flags (1) | sealed length (4) | raw length (4).
HEADER_ENTRY: Final = struct.Struct("<32sBBII")
HEADER_LENGTH: Final = struct.Struct("<I")
CHUNK_ID_BYTES: Final = 32

# An opened blob: the chunk's bytes, in whatever buffer holding them cost no extra copy.
BlobData: TypeAlias = bytes | bytearray | memoryview


def blob_aad(kind: int, chunk_id: bytes) -> bytes:
    """Associated data binding a sealed blob to its kind and id."""
    return b"snapmover-blob:" + bytes((kind,)) + chunk_id


def compress_chunk(data: bytes | memoryview, scratch: bytearray | None = None) -> tuple[bytes, bytes | memoryview]:
    """``(flag, payload)``: the snappy-compressed chunk when that pays, else the chunk itself.

    With ``scratch`` (at least :func:`compress_bound` bytes, reused by the caller) the chunk is
    compressed into it and the payload is a view of it, valid until the next call: no large
    allocation per chunk. The output is the same raw snappy stream either way."""
    raw_length = len(data)
    if raw_length >= COMPRESSION_MIN_BYTES:
        packed: bytes | memoryview
        if scratch is None:
            packed = snappy.compress(data)
        else:
            packed = memoryview(scratch)[: cramjam.snappy.compress_raw_into(data, scratch)]
        if len(packed) <= raw_length - (raw_length >> COMPRESSION_MIN_SAVING_SHIFT):
            return FLAG_SNAPPY, packed
    return FLAG_RAW, data


def compress_bound(raw_length: int) -> int:
    """The most bytes snappy can produce for ``raw_length`` input bytes (its worst case)."""
    return 32 + raw_length + raw_length // 6


def sealed_blob_length(payload: bytes | memoryview) -> int:
    """Bytes the blob takes in a pack: nonce, flag byte, payload, tag."""
    return BLOB_OVERHEAD_BYTES + len(payload)


def seal_blob_into(
    key: bytes, kind: int, chunk_id: bytes, flag: bytes, payload: bytes | memoryview, out: memoryview
) -> None:
    """Encrypt one blob (see :func:`compress_chunk`) into ``out``, exactly its sealed length."""
    seal_parts_into(key, (flag, payload), blob_aad(kind, chunk_id), out)


def open_blob(key: bytes, kind: int, chunk_id: bytes, sealed: bytes | memoryview, where: str) -> BlobData:
    """Decrypt, authenticate and decompress one blob; IntegrityError naming ``where``.

    No copies beyond the decryption: a stored chunk is a view past the flag byte, a compressed
    one is decompressed straight into a buffer of its (snappy-encoded) length."""
    plain = open_sealed(key, sealed, blob_aad(kind, chunk_id), f"blob {chunk_id.hex()[:16]} in {where}")
    flag, body = plain[:1], memoryview(plain)[1:]
    if flag == FLAG_RAW:
        return body
    if flag == FLAG_SNAPPY:
        try:
            out = bytearray(cramjam.snappy.decompress_raw_len(body))
            if cramjam.snappy.decompress_raw_into(body, out) == len(out):
                return out
        except cramjam.DecompressionError:
            pass
        raise IntegrityError(f"blob {chunk_id.hex()[:16]} in {where} does not decompress")
    raise IntegrityError(f"blob {chunk_id.hex()[:16]} in {where} has an unknown compression flag")


@dataclass(frozen=True, slots=True)
class PackEntry:
    """One blob as listed in a pack header (slots: a pack of small blobs holds ~20,000)."""

    chunk_id: bytes
    kind: int
    offset: int
    length: int
    raw_length: int
    compressed: bool


def pack_trailer_length(blobs: int) -> int:
    """Length of the trailer (sealed header and its length) of a pack holding ``blobs`` blobs."""
    return SEAL_OVERHEAD_BYTES + HEADER_ENTRY.size * blobs + HEADER_LENGTH.size


def encode_pack_trailer(key: bytes, blobs: list[PackEntry]) -> bytes:
    """The sealed header plus its length, appended after the blobs (in the same order)."""
    header = b"".join(HEADER_ENTRY.pack(b.chunk_id, b.kind, int(b.compressed), b.length, b.raw_length) for b in blobs)
    sealed = seal(key, header, PACK_HEADER_AAD)
    return sealed + HEADER_LENGTH.pack(len(sealed))


def decode_pack_header(key: bytes, pack: bytes, name: str) -> list[PackEntry]:
    """Parse and authenticate the header of a whole pack; IntegrityError naming the pack."""
    if len(pack) < HEADER_LENGTH.size + SEAL_OVERHEAD_BYTES:
        raise IntegrityError(f"pack {name} is truncated")
    (sealed_len,) = HEADER_LENGTH.unpack_from(pack, len(pack) - HEADER_LENGTH.size)
    start = len(pack) - HEADER_LENGTH.size - sealed_len
    if start < 0:
        raise IntegrityError(f"pack {name} has a corrupted header length")
    header = open_sealed(key, memoryview(pack)[start : len(pack) - HEADER_LENGTH.size], PACK_HEADER_AAD, f"pack {name}")
    if len(header) % HEADER_ENTRY.size:
        raise IntegrityError(f"pack {name} has a malformed header")
    entries = []
    offset = 0
    for cid, kind, flags, length, raw_length in HEADER_ENTRY.iter_unpack(header):
        entries.append(PackEntry(cid, kind, offset, length, raw_length, bool(flags & 1)))
        offset += length
    if offset != start:
        raise IntegrityError(f"pack {name}: header does not match the blob area ({offset} != {start} bytes)")
    return entries
