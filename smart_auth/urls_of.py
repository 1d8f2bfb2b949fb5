"""Absolute URLs of a tenant's FHIR base and authorization endpoints, as the request reached us
(scheme and host follow the request, so they are right behind a trusted proxy too)."""

from __future__ import annotations

from django.http import HttpRequest
from django.urls import get_script_prefix

AUTH_PATHS = {
    "authorization_endpoint": "auth/authorize",
    "token_endpoint": "auth/token",
    "introspection_endpoint": "auth/introspect",
    "revocation_endpoint": "auth/revoke",
    "userinfo_endpoint": "auth/userinfo",
    "jwks_uri": "auth/jwks",
}


def tenant_url(request: HttpRequest, path: str) -> str:
    return request.build_absolute_uri(get_script_prefix() + path)


def fhir_base(request: HttpRequest) -> str:
    """The tenant's FHIR base: the `aud` of its tokens and the `iss` of its id tokens."""
    return tenant_url(request, "fhir")


def endpoints(request: HttpRequest) -> dict[str, str]:
    return {name: tenant_url(request, path) for name, path in AUTH_PATHS.items()}
