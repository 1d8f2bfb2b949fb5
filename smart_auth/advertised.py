"""The authorization endpoints clients are told about (SMART discovery, the CapabilityStatement):
this server's own, or in AUTH_MODE=external the provider's, from its OpenID configuration."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest

from smart_auth import external
from smart_auth.tokens import InvalidToken
from smart_auth.urls_of import AUTH_PATHS, endpoints, fhir_base


def advertised(request: HttpRequest) -> dict[str, str]:
    """`issuer` and the endpoint URLs by their discovery names (absent ones left out)."""
    if settings.AUTH_MODE != "external":
        return {"issuer": fhir_base(request), **endpoints(request)}
    try:
        metadata = external.provider.metadata()
    except InvalidToken:
        return {}
    names = ["issuer", *AUTH_PATHS]
    return {name: metadata[name] for name in names if metadata.get(name)}
