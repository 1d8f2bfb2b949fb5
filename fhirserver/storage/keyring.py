"""The PHI key ring: AES-256-GCM data keys and HMAC blind-index keys, per tenant.

Two secrets, both 32 random bytes from settings: the master key (PHI_MASTER_KEY, with retired
ones in PHI_RETIRED_MASTER_KEYS so rotation needs no downtime) encrypts; the index key
(PHI_INDEX_KEY) computes blind indexes. Keeping them apart means the digests that must stay
stable for search never weaken the ciphertexts, and the encryption key can rotate without
rebuilding any index.

Each tenant gets its own keys, derived with HKDF-SHA256 with the tenant's schema in the info
(RFC 5869), so a ciphertext or digest copied into another tenant is meaningless there. A key id
(a short hash of the master key) leads every ciphertext, so the ring knows which master key
to derive from, and rotation can tell what is still under an old one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from functools import cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.db import connection

PREFIX = "phi:1:"  # format version 1: phi:1:<key id>:<base64url(nonce || ciphertext || tag)>
NONCE_BYTES = 12  # the GCM standard nonce; random, so one key must not seal ~2^32 values
DIGEST_BYTES = 16  # blind-index digests: 128 bits leave collisions out of reach


class UndecryptableError(Exception):
    """A ciphertext that the key ring cannot open: unknown key id, or not sealed for this place."""


def key_id(master: bytes) -> str:
    return _b64(hashlib.sha256(b"fhir-phi-key-id\x00" + master).digest())[:8]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derive(secret: bytes, purpose: bytes, schema: str) -> bytes:
    info = b"fhir-phi\x00" + purpose + b"\x00" + schema.encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


@cache
def _masters() -> dict[str, bytes]:
    keys = [settings.PHI_MASTER_KEY, *settings.PHI_RETIRED_MASTER_KEYS]
    return {key_id(key): key for key in keys}


def current_key_id() -> str:
    return key_id(settings.PHI_MASTER_KEY)


@cache
def _cipher(kid: str, schema: str) -> AESGCM:
    return AESGCM(_derive(_masters()[kid], b"field-encryption", schema))


@cache
def _index_key(schema: str) -> bytes:
    return _derive(settings.PHI_INDEX_KEY, b"blind-index", schema)


def _schema(schema: str | None = None) -> str:
    """The tenant whose keys apply: the connection's, unless a thread without it names one."""
    schema = schema or connection.schema_name
    if not schema or schema == "public":
        raise RuntimeError("PHI keys are per tenant: no tenant is selected on this connection")
    return schema


def seal(plaintext: bytes, associated: bytes, schema: str | None = None) -> str:
    """A ciphertext token of `plaintext` under the tenant's current key, bound to `associated`."""
    kid = current_key_id()
    nonce = os.urandom(NONCE_BYTES)
    return (
        f"{PREFIX}{kid}:{_b64(nonce + _cipher(kid, _schema(schema)).encrypt(nonce, plaintext, associated))}"
    )


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def sealed_key_id(token: str) -> str:
    return token[len(PREFIX) :].split(":", 1)[0]


def open_sealed(token: str, associated: bytes) -> bytes:
    """The plaintext of a token sealed by `seal` in this tenant for `associated`."""
    kid, _, body = token[len(PREFIX) :].partition(":")
    if kid not in _masters():
        raise UndecryptableError(f"no key with id {kid} in the PHI key ring")
    try:
        raw = _unb64(body)
        return _cipher(kid, _schema()).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated)
    except (InvalidTag, ValueError):  # ValueError: not base64, or too short to hold a nonce
        raise UndecryptableError(
            "a ciphertext does not belong to this tenant, resource and element"
        ) from None


def blind_digest(text: str) -> bytes:
    """The tenant's HMAC-SHA256 of `text`, truncated: equal inputs give equal digests, nothing more."""
    return hmac.digest(_index_key(_schema()), text.encode(), "sha256")[:DIGEST_BYTES]
