"""Access tokens: RS256 JWTs carrying the grant (scope, launch context, tenant), also stored
hashed by django-oauth-toolkit so that revocation and introspection see them.

The same `access_token_claims` + `key_ring().sign` make the tokens of the authorization flow
(`access_token_generator`, called by oauthlib) and of `manage.py issue_token`."""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass

import jwt
from django.conf import settings
from django.db import connection
from oauth2_provider.models import get_access_token_model

from smart_auth.keys import key_ring
from smart_auth.oauthlib_core import FHIR_BASE_KEY, TENANT_KEY


@dataclass(frozen=True)
class LaunchContext:
    """What an authorization was granted besides scopes (SMART App Launch "launch context")."""

    patient: str = ""
    encounter: str = ""
    fhir_user: str = ""
    need_patient_banner: bool = True


def access_token_claims(
    *,
    fhir_base: str,
    tenant: str,
    client_id: str,
    subject: str,
    scope: str,
    context: LaunchContext,
    role: str = "",
) -> dict:
    now = int(time.time())
    claims = {
        "iss": fhir_base,
        "aud": fhir_base,
        "sub": subject,
        "client_id": client_id,
        "scope": scope,
        "tenant": tenant,
        "iat": now,
        "exp": now + settings.SMART_ACCESS_TOKEN_SECONDS,
        "jti": uuid.uuid4().hex,
    }
    optional = {
        "patient": context.patient,
        "encounter": context.encounter,
        "fhirUser": context.fhir_user,
        "role": role,
    }
    claims.update({name: value for name, value in optional.items() if value})
    return claims


def access_token_generator(request, refresh_token: bool = False) -> str:
    """oauthlib's token generator: `request` is oauthlib's, after the grant was validated."""
    user = request.user
    context = getattr(request, "launch_context", None) or LaunchContext()
    claims = access_token_claims(
        fhir_base=request.headers[FHIR_BASE_KEY],
        tenant=request.headers[TENANT_KEY],
        client_id=request.client.client_id,
        subject=str(user.pk) if user else request.client.client_id,
        scope=" ".join(request.scopes),
        context=context,
        role=_explicit_role(user),
    )
    return key_ring().sign(claims, {"typ": "at+jwt"})


def _explicit_role(user) -> str:
    profile = getattr(user, "smart", None) if user else None
    return profile.role if profile else ""


class InvalidToken(Exception):
    """The bearer token is not one this tenant issued, or no longer valid."""


def verify_access_token(token: str, tenant: str) -> dict:
    """The claims of a live access token of `tenant`; InvalidToken otherwise.

    The signature proves we issued it; the tenant claim binds it to this tenant; the stored
    (hashed) row, looked up in this tenant's schema, proves it was neither revoked nor issued
    elsewhere."""
    try:
        claims = key_ring().verify(token, options={"require": ["exp", "iat", "sub"], "verify_aud": False})
    except jwt.InvalidTokenError as exc:
        raise InvalidToken(str(exc)) from exc
    if claims.get("tenant") != tenant:
        raise InvalidToken("token of another tenant")
    checksum = hashlib.sha256(token.encode()).hexdigest()
    with connection.cursor() as cursor:  # on every API request: plain SQL, no queryset building
        cursor.execute(_LIVE_TOKEN, [checksum])
        if cursor.fetchone() is None:
            raise InvalidToken("token revoked or unknown")
    return claims


_LIVE_TOKEN = (
    f"SELECT 1 FROM {get_access_token_model()._meta.db_table} WHERE token_checksum = %s AND expires > now()"
)
