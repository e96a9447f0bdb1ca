"""AES-256-GCM of the format: the two implementations (pycryptodome for objects, OpenSSL through
`cryptography` for blobs) produce and accept the same ``nonce ‖ ciphertext ‖ tag``."""

from __future__ import annotations

import os

import pytest
from Crypto.Cipher import AES

from jobs.errors import IntegrityError
from jobs.repository import crypto
from jobs.repository.crypto import NONCE_BYTES, SEAL_OVERHEAD_BYTES, TAG_BYTES, open_sealed, seal, seal_parts_into

KEY = bytes(range(32))


def seal_parts(key: bytes, parts: tuple[bytes, ...], aad: bytes) -> bytes:
    out = bytearray(SEAL_OVERHEAD_BYTES + sum(len(p) for p in parts))
    seal_parts_into(key, parts, aad, memoryview(out))
    return bytes(out)


AAD = b"snapmover-blob:\x01" + bytes(32)


@pytest.mark.parametrize("size", [0, 1, 4096, 1 << 20])
def test_blob_sealed_by_openssl_opens_with_pycryptodome_and_back(size: int) -> None:
    data = os.urandom(size)
    sealed = seal_parts(KEY, (b"\x00", data), AAD)
    assert len(sealed) == NONCE_BYTES + 1 + size + TAG_BYTES
    cipher = AES.new(KEY, AES.MODE_GCM, nonce=sealed[:NONCE_BYTES])
    cipher.update(AAD)
    assert cipher.decrypt_and_verify(sealed[NONCE_BYTES:-TAG_BYTES], sealed[-TAG_BYTES:]) == b"\x00" + data
    assert open_sealed(KEY, seal(KEY, data, AAD), AAD, "x") == data  # pycryptodome seal, OpenSSL open


def test_every_flipped_byte_and_wrong_aad_fail_authentication() -> None:
    sealed = bytearray(seal_parts(KEY, (b"\x01", b"payload"), AAD))
    for i in range(len(sealed)):
        sealed[i] ^= 1
        with pytest.raises(IntegrityError, match="failed authentication"):
            open_sealed(KEY, bytes(sealed), AAD, "blob x")
        sealed[i] ^= 1
    assert open_sealed(KEY, memoryview(sealed), AAD, "blob x") == b"\x01payload"
    with pytest.raises(IntegrityError, match="failed authentication"):
        open_sealed(KEY, bytes(sealed), AAD + b"!", "blob x")
    with pytest.raises(IntegrityError, match="truncated"):
        open_sealed(KEY, bytes(sealed[:20]), AAD, "blob x")


def test_nonces_are_never_repeated_across_pool_refills() -> None:
    nonces = [crypto._NONCES.take() for _ in range(3 * crypto.NONCES_PER_READ + 7)]
    assert all(len(n) == crypto.NONCE_BYTES for n in nonces)
    assert len(set(nonces)) == len(nonces)


def test_a_forked_child_never_takes_the_parents_next_nonces() -> None:
    crypto._NONCES.take()  # the pool now holds unused nonces the child inherits
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its first nonce and leave at once
        os.write(write_end, crypto._NONCES.take())
        os._exit(0)
    os.close(write_end)
    child_nonce = os.read(read_end, crypto.NONCE_BYTES)
    os.close(read_end)
    os.waitpid(pid, 0)
    parents_next = {crypto._NONCES.take() for _ in range(crypto.NONCES_PER_READ)}
    assert len(child_nonce) == crypto.NONCE_BYTES
    assert child_nonce not in parents_next
