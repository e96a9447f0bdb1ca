"""Key files (``keys/<id>``): the master keys wrapped by a password (FORMAT.md §4).

A key file is a small JSON document, readable before anything is decrypted: scrypt parameters
and salt, the master keys sealed with the scrypt-derived key, and an HMAC over the document with
the master MAC key so ``check`` can authenticate every key file, whichever password it is for.
Several key files (several passwords) may open the same repository.
"""

from __future__ import annotations

import json
import secrets
import socket
from datetime import UTC, datetime
from typing import Any, Final

from jobs.errors import IntegrityError, ObjectNotFoundError, RepositoryNotFoundError, WrongPasswordError
from jobs.repository.crypto import KdfParams, MasterKeys, b64, derive_key, mac, open_sealed, seal, unb64
from jobs.storage.base import Storage

KEYS_PREFIX: Final = "keys/"
KEY_FILE_VERSION: Final = 1
SALT_BYTES: Final = 32


def key_aad(name: str) -> bytes:
    """Associated data binding sealed key material to its key file name."""
    return b"snapmover-key:" + name.encode()


def _body_for_mac(doc: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in doc.items() if k != "mac"}, sort_keys=True, separators=(",", ":")).encode()


def add_key(storage: Storage, keys: MasterKeys, password: str, params: KdfParams) -> str:
    """Write a new key file for ``password``; returns its object name."""
    name = KEYS_PREFIX + secrets.token_hex(16)
    salt = secrets.token_bytes(SALT_BYTES)
    kek = derive_key(password, salt, params)
    doc: dict[str, Any] = {
        "v": KEY_FILE_VERSION,
        "kdf": "scrypt",
        "n": params.n,
        "r": params.r,
        "p": params.p,
        "salt": b64(salt),
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "hostname": socket.gethostname(),
        "data": b64(seal(kek, json.dumps(keys.to_json()).encode(), key_aad(name))),
    }
    doc["mac"] = mac(keys.mac, _body_for_mac(doc))
    storage.put(name, json.dumps(doc, indent=1).encode(), overwrite=False)
    return name


def parse_key_file(name: str, raw: bytes) -> dict[str, Any]:
    """Parse a key file's JSON; IntegrityError naming it when malformed."""
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("v") != KEY_FILE_VERSION or doc.get("kdf") != "scrypt":
            raise ValueError("unsupported key file version or kdf")
        KdfParams(int(doc["n"]), int(doc["r"]), int(doc["p"]))
        unb64(doc["salt"])
        unb64(doc["data"])
        str(doc["mac"])
    except (ValueError, KeyError, TypeError) as e:
        raise IntegrityError(f"key file {name} is corrupted: {e}") from e
    return doc


def unwrap(name: str, doc: dict[str, Any], password: str) -> MasterKeys | None:
    """The master keys if ``password`` opens this key file, else None."""
    params = KdfParams(int(doc["n"]), int(doc["r"]), int(doc["p"]))
    kek = derive_key(password, unb64(doc["salt"]), params)
    try:
        plain = open_sealed(kek, unb64(doc["data"]), key_aad(name), f"key file {name}")
    except IntegrityError:
        return None
    try:
        keys = MasterKeys.from_json(json.loads(plain))
    except ValueError as e:
        raise IntegrityError(f"key file {name} holds malformed key material") from e
    verify_key_mac(name, doc, keys)
    return keys


def verify_key_mac(name: str, doc: dict[str, Any], keys: MasterKeys) -> None:
    """IntegrityError naming the key file when its HMAC does not match."""
    if not secrets.compare_digest(str(doc.get("mac", "")), mac(keys.mac, _body_for_mac(doc))):
        raise IntegrityError(f"key file {name} failed authentication (corrupted or tampered)")


def open_keys(storage: Storage, password: str) -> list[tuple[MasterKeys, str]]:
    """Every key file ``password`` opens, as (keys, name); WrongPasswordError when none does.

    More than one can open with the same password (two concurrent ``repo init`` runs, say); the
    caller keeps the one whose keys authenticate the ``config`` object.
    """
    names = sorted(o.name for o in storage.list(KEYS_PREFIX))
    if not names:
        raise RepositoryNotFoundError(
            f"the repository at {storage.location} has no key files yet (being initialised, or damaged)"
        )
    damaged: list[str] = []
    opened: list[tuple[MasterKeys, str]] = []
    for name in names:
        try:
            doc = parse_key_file(name, storage.get(name))
        except (IntegrityError, ObjectNotFoundError):
            damaged.append(name)
            continue
        try:
            keys = unwrap(name, doc, password)
        except IntegrityError:
            damaged.append(name)
            continue
        if keys is not None:
            opened.append((keys, name))
    if opened:
        return opened
    if damaged and len(damaged) == len(names):
        raise IntegrityError(f"every key file is corrupted ({', '.join(damaged)}); the repository cannot be opened")
    hint = f" (key files tried: {', '.join(names)}; a damaged key file also looks like this)" if len(names) == 1 else ""
    raise WrongPasswordError(f"wrong password: no key of the repository at {storage.location} opens with it{hint}")
