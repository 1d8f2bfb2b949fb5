"""Authentication of FHIR API requests (after the tenant middleware).

AUTH_MODE=development gives every request an administrator context (settings refuse it unless
DEBUG). AUTH_MODE=standalone verifies this server's own access tokens (smart_auth.tokens),
AUTH_MODE=external those of an external OpenID Connect provider (smart_auth.external).
A missing, expired, revoked or foreign token gets 401 with `WWW-Authenticate` (RFC 6750 3).
"""

from __future__ import annotations

import logging

from django.conf import settings

from audit import trail
from fhirserver.operation_outcome import outcome_response
from smart_auth import external
from smart_auth.context import AuthContext, development_context
from smart_auth.scopes import roles_from_scopes
from smart_auth.tokens import InvalidToken, verify_access_token
from smart_auth.urls_of import fhir_base

logger = logging.getLogger(__name__)
FHIR_PREFIX = "/fhir"
# Public: clients read these to learn how to authorize (SMART App Launch 2.x, FHIR R4 http.html).
PUBLIC_PATHS = frozenset(
    {"/fhir/metadata", "/fhir/.well-known/smart-configuration", "/fhir/.well-known/openid-configuration"}
)


class AuthContextMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.auth_context = None
        tenant = getattr(request, "tenant", None)
        if (
            tenant is None
            or not request.path_info.startswith(FHIR_PREFIX)
            or request.path_info in PUBLIC_PATHS
        ):
            return self.get_response(request)
        if settings.AUTH_MODE == "development":
            request.auth_context = development_context(tenant.slug)
            return self.get_response(request)
        token = _bearer(request)
        if token is None:
            return _refused(request, _unauthorized(None, "A bearer token is required"))
        try:
            request.auth_context = _verified_context(request, token, tenant.slug)
        except InvalidToken as exc:
            logger.info("bearer token refused: %s", exc)
            refusal = _unauthorized("invalid_token", "The access token is invalid, expired or revoked")
            return _refused(request, refusal)
        return self.get_response(request)


def _verified_context(request, token: str, tenant: str) -> AuthContext:
    if settings.AUTH_MODE == "external":
        return external.verify(token, tenant, fhir_base(request))
    return context_from_claims(verify_access_token(token, tenant))


def context_from_claims(claims: dict) -> AuthContext:
    scopes = claims.get("scope", "").split()
    return AuthContext(
        user=claims["sub"],
        # `role` may name several, space-separated (e.g. "clinician break-glass").
        roles=frozenset(claims["role"].split()) if claims.get("role") else roles_from_scopes(scopes),
        scopes=frozenset(scopes),
        patient=claims.get("patient"),
        encounter=claims.get("encounter"),
        fhir_user=claims.get("fhirUser"),
        client_id=claims.get("client_id"),
        tenant=claims["tenant"],
    )


def _bearer(request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _refused(request, response):
    """A refused request of a known tenant is security-relevant: it joins the audit trail."""
    if settings.AUDIT_ENABLED:
        trail.record_refused(request, response)
    return response


def _unauthorized(error: str | None, message: str):
    response = outcome_response(401, "login", message)
    challenge = 'Bearer realm="fhir"' + (f', error="{error}"' if error else "")
    response["WWW-Authenticate"] = challenge
    return response
