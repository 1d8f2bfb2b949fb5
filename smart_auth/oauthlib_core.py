"""The toolkit's bridge to oauthlib, telling the validator which tenant and FHIR base a request
is for (oauthlib's request sees headers, not the Django request)."""

from __future__ import annotations

from django.http import HttpRequest
from oauth2_provider.oauth2_backends import OAuthLibCore

from smart_auth.urls_of import endpoints, fhir_base

# Not an HTTP header name a client could send: client headers arrive in META as HTTP_*.
FHIR_BASE_KEY = "Smart-Fhir-Base"
TENANT_KEY = "Smart-Tenant"
TOKEN_URL_KEY = "Smart-Token-Url"  # noqa: S105 (a header name)


class SmartOAuthLibCore(OAuthLibCore):
    def extract_headers(self, request: HttpRequest) -> dict:
        headers = super().extract_headers(request)
        headers[FHIR_BASE_KEY] = fhir_base(request)
        headers[TENANT_KEY] = request.tenant.slug
        headers[TOKEN_URL_KEY] = endpoints(request)["token_endpoint"]
        return headers
