"""Authentication of FHIR API requests (after the tenant middleware).

AUTH_MODE=development gives every request an administrator context (settings refuse it unless
DEBUG). The SMART token modes (standalone, external) verify bearer tokens; until that lands,
they refuse every FHIR request with 401 rather than serve patient data unauthenticated.
"""

from __future__ import annotations

from django.conf import settings

from fhirserver.operation_outcome import outcome_response
from smart_auth.context import development_context

FHIR_PREFIX = "/fhir"
# The CapabilityStatement is public: clients read it to learn how to authorize (SMART App Launch).
PUBLIC_PATHS = frozenset({"/fhir/metadata"})


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
        response = outcome_response(
            401,
            "login",
            "A bearer token is required; SMART authorization is not available on this server yet.",
        )
        response["WWW-Authenticate"] = 'Bearer realm="fhir"'
        return response
