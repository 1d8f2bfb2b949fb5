"""Asymmetric client authentication: a JWT signed with the client's registered key
(`private_key_jwt`, RFC 7523; SMART App Launch 2.x "Client Authentication: Asymmetric", used
by confidential apps and by Backend Services)."""

from __future__ import annotations

import logging
import time

import httpx
import jwt
from django.core.cache import cache
from django.db import IntegrityError, transaction

from smart_auth.models import Client, UsedAssertion

logger = logging.getLogger(__name__)
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = ["RS384", "ES384"]  # SMART: servers SHALL support both
MAX_LIFETIME = 300  # seconds: `exp` at most five minutes ahead
JWKS_CACHE_SECONDS = 300


class AssertionRefused(Exception):
    pass


def authenticate(assertion_type: str, assertion: str, token_url: str) -> Client:
    """The client a valid assertion identifies; AssertionRefused (with the reason, for the
    log) otherwise."""
    if assertion_type != ASSERTION_TYPE:
        raise AssertionRefused("unsupported client_assertion_type")
    try:
        header = jwt.get_unverified_header(assertion)
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.InvalidTokenError as exc:
        raise AssertionRefused("malformed assertion") from exc
    if header.get("alg") not in ALGORITHMS:
        raise AssertionRefused("unsupported algorithm")
    client_id = unverified.get("iss")
    if not client_id or unverified.get("sub") != client_id:
        raise AssertionRefused("iss and sub must both be the client id")
    client = Client.objects.filter(client_id=client_id).first()
    if client is None or not (client.jwks or client.jwks_uri):
        raise AssertionRefused("unknown client or no registered keys")
    claims = _verified(assertion, header, _keys(client), token_url)
    _remember(claims)
    return client


def _verified(assertion: str, header: dict, keys: list[dict], token_url: str) -> dict:
    candidates = [key for key in keys if not header.get("kid") or key.get("kid") == header["kid"]]
    if not candidates:
        raise AssertionRefused("no registered key with that kid")
    for key in candidates:
        try:
            signing_key = jwt.PyJWK(key, algorithm=header["alg"]).key
            claims = jwt.decode(
                assertion,
                signing_key,
                algorithms=[header["alg"]],
                audience=token_url,
                options={"require": ["iss", "sub", "aud", "exp", "jti"]},
            )
        except (jwt.InvalidSignatureError, jwt.exceptions.PyJWKError):
            continue
        except jwt.InvalidTokenError as exc:
            raise AssertionRefused(f"assertion refused: {exc}") from exc
        if claims["exp"] > time.time() + MAX_LIFETIME:
            raise AssertionRefused("exp is more than five minutes ahead")
        return claims
    raise AssertionRefused("signature does not verify with the registered keys")


def _keys(client: Client) -> list[dict]:
    if client.jwks:
        return client.jwks.get("keys", [])
    cache_key = f"smart-client-jwks:{client.jwks_uri}"
    keys = cache.get(cache_key)
    if keys is None:
        try:
            response = httpx.get(client.jwks_uri, timeout=10, follow_redirects=False)
            response.raise_for_status()
            keys = response.json().get("keys", [])
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            raise AssertionRefused("the client's jwks_uri cannot be read") from exc
        cache.set(cache_key, keys, JWKS_CACHE_SECONDS)
    return keys


def _remember(claims: dict) -> None:
    """A `jti` is accepted once (RFC 7523 3, item 7): kept until the assertion expires."""
    UsedAssertion.objects.filter(expires__lt=time.time()).delete()
    try:
        with transaction.atomic():
            UsedAssertion.objects.create(jti=f"{claims['iss']}:{claims['jti']}", expires=claims["exp"])
    except IntegrityError as exc:
        raise AssertionRefused("jti already used") from exc
