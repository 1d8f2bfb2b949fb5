"""The RS256 signing key ring: the current key signs; retired keys stay published (and keep
verifying) until the tokens they signed have expired. `kid` is the base64url SHA-256 of the
public modulus, so it is stable for a key and differs between keys."""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from django.conf import settings

ALGORITHM = "RS256"


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def key_id(public_key: rsa.RSAPublicKey) -> str:
    n = public_key.public_numbers().n
    modulus = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(hashlib.sha256(modulus).digest()).rstrip(b"=").decode()


@dataclass(frozen=True)
class VerificationKey:
    kid: str
    public_key: rsa.RSAPublicKey

    def jwk(self) -> dict:
        numbers = self.public_key.public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "alg": ALGORITHM,
            "kid": self.kid,
            "n": _b64url_uint(numbers.n),
            "e": _b64url_uint(numbers.e),
        }


class KeyRing:
    def __init__(self, signing_pem: str, retired_pems: list[str]):
        self._private = load_pem_private_key(signing_pem.encode(), password=None)
        current = VerificationKey(key_id(self._private.public_key()), self._private.public_key())
        retired = [_public_key(pem) for pem in retired_pems]
        self.current = current
        self.keys = {key.kid: key for key in [current, *retired]}

    def sign(self, claims: dict, headers: dict | None = None) -> str:
        return jwt.encode(
            claims, self._private, algorithm=ALGORITHM, headers={"kid": self.current.kid, **(headers or {})}
        )

    def verify(self, token: str, **options) -> dict:
        """Decode a token this server signed; raises jwt.InvalidTokenError for anything else
        (unknown kid, another algorithm including `none`, bad signature, expired, wrong aud)."""
        header = jwt.get_unverified_header(token)
        key = self.keys.get(header.get("kid"))
        if key is None or header.get("alg") != ALGORITHM:
            raise jwt.InvalidTokenError("unknown key or algorithm")
        return jwt.decode(token, key.public_key, algorithms=[ALGORITHM], **options)

    def jwks(self) -> dict:
        return {"keys": [key.jwk() for key in self.keys.values()]}


def _public_key(pem: str) -> VerificationKey:
    data = pem.encode()
    key = (
        load_pem_private_key(data, password=None).public_key()
        if b"PRIVATE KEY" in data
        else load_pem_public_key(data)
    )
    return VerificationKey(key_id(key), key)


@functools.cache
def key_ring() -> KeyRing:
    retired = [Path(path).read_text() for path in settings.SMART_RETIRED_SIGNING_KEY_FILES]
    return KeyRing(settings.SMART_SIGNING_KEY_PEM, retired)
