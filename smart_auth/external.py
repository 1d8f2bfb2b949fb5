"""AUTH_MODE=external: access tokens issued by an external OpenID Connect provider (Keycloak,
Auth0, ...), verified against its published JWKS. The key set is cached and fetched again when
a token names a key id it does not hold (key rotation), at most once per
EXTERNAL_OIDC_JWKS_MIN_REFETCH_SECONDS, so forged key ids cannot hammer the provider."""

from __future__ import annotations

import logging
import threading
import time

import httpx
import jwt
from django.conf import settings

from smart_auth.context import AuthContext
from smart_auth.scopes import roles_from_scopes
from smart_auth.tokens import InvalidToken

logger = logging.getLogger(__name__)
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384"]


class ProviderKeys:
    """The provider's metadata and JWKS, cached per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched = 0.0
        self._metadata: dict | None = None

    def metadata(self) -> dict:
        if self._metadata is None:
            url = settings.EXTERNAL_OIDC_ISSUER.rstrip("/") + "/.well-known/openid-configuration"
            self._metadata = _get_json(url)
        return self._metadata

    def key(self, kid: str | None) -> jwt.PyJWK:
        with self._lock:
            since = time.monotonic() - self._fetched
            stale = since > settings.EXTERNAL_OIDC_JWKS_CACHE_SECONDS
            unknown = kid not in self._keys and since >= settings.EXTERNAL_OIDC_JWKS_MIN_REFETCH_SECONDS
            if stale or unknown or not self._keys:
                self._refresh()
            if kid is None and len(self._keys) == 1:
                return next(iter(self._keys.values()))
            found = self._keys.get(kid)
        if found is None:
            raise InvalidToken("no provider key with that kid")
        return found

    def _refresh(self) -> None:
        url = settings.EXTERNAL_OIDC_JWKS_URL or self.metadata()["jwks_uri"]
        keys = {}
        for data in _get_json(url).get("keys", []):
            try:
                keys[data.get("kid")] = jwt.PyJWK(data)
            except jwt.exceptions.PyJWKError:
                continue  # a key type or algorithm we do not verify with
        self._keys, self._fetched = keys, time.monotonic()


def _get_json(url: str) -> dict:
    try:
        response = httpx.get(url, timeout=10)
        response.raise_for_status()
        return response.json()
    except (httpx.HTTPError, ValueError) as exc:
        logger.warning("identity provider document unavailable: %s", type(exc).__name__)
        raise InvalidToken("identity provider unavailable") from exc


provider = ProviderKeys()


def verify(token: str, tenant: str, fhir_base: str) -> AuthContext:
    """The context of a valid provider token for this tenant. The audience binds the token to
    the tenant: the tenant's FHIR base, or EXTERNAL_OIDC_AUDIENCE plus a tenant claim."""
    try:
        header = jwt.get_unverified_header(token)
        if header.get("alg") not in ALGORITHMS:
            raise InvalidToken("algorithm not accepted")
        claims = jwt.decode(
            token,
            provider.key(header.get("kid")),
            algorithms=ALGORITHMS,
            audience=settings.EXTERNAL_OIDC_AUDIENCE or fhir_base,
            issuer=settings.EXTERNAL_OIDC_ISSUER,
            options={"require": ["exp", "iss", "sub", "aud"]},
        )
    except jwt.InvalidTokenError as exc:
        raise InvalidToken(str(exc)) from exc
    if settings.EXTERNAL_OIDC_AUDIENCE and claims.get(settings.EXTERNAL_OIDC_TENANT_CLAIM) != tenant:
        raise InvalidToken("token of another tenant")
    return _context(claims, tenant)


def _context(claims: dict, tenant: str) -> AuthContext:
    scopes = claims.get("scope", "")
    scopes = scopes.split() if isinstance(scopes, str) else list(claims.get("scp", []))
    roles = claims.get("roles") or claims.get("realm_access", {}).get("roles") or roles_from_scopes(scopes)
    return AuthContext(
        user=claims["sub"],
        roles=frozenset(roles),
        scopes=frozenset(scopes),
        patient=claims.get("patient"),
        encounter=claims.get("encounter"),
        fhir_user=claims.get("fhirUser"),
        client_id=claims.get("client_id") or claims.get("azp"),
        tenant=tenant,
    )
