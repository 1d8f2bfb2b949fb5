"""CORS, so that SMART apps running in a browser can call the FHIR API and the token endpoint.

The CORS protocol is the Fetch standard's (https://fetch.spec.whatwg.org/#http-cors-protocol):
a browser sends a preflight (OPTIONS with Origin and Access-Control-Request-Method) before a
request that carries e.g. Authorization, and lets the script read a response only when it names
the script's origin (or `*`) in Access-Control-Allow-Origin.

This runs before the tenant middleware and authentication: a preflight carries no token and must
never be answered 401, and error responses (401, 404) need the headers too, or the app cannot
read why it failed. Paths are classified without a database look-up: the tenant prefix
/t/<slug> is stripped textually, and host-addressed tenants have none.

No Access-Control-Allow-Credentials: the API authenticates with bearer tokens the app sends
itself, never with cookies, so browsers need not (and must not) attach credentials.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_vary_headers

from config.environment import ANY_ORIGIN
from tenants.resolution import without_path_prefix

# Tenant-relative paths. The FHIR API answers the origins in CORS_ALLOWED_ORIGINS.
FHIR_BASE = "/fhir"
# Discovery and the token-side OAuth endpoints answer every origin: public clients run in
# browsers anywhere, and none of these reveals anything without a client's own credentials.
# (SMART v1 apps discover the OAuth endpoints in the CapabilityStatement, hence /metadata.)
ANY_ORIGIN_PATHS = frozenset(
    {
        "/fhir/metadata",
        "/fhir/.well-known/smart-configuration",
        "/fhir/.well-known/openid-configuration",
        "/auth/token",
        "/auth/introspect",
        "/auth/revoke",
        "/auth/userinfo",
        "/auth/jwks",
        "/auth/register",
    }
)
# /auth/authorize and /auth/login are page navigations, never script requests: no CORS there.

ALLOWED_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE"
# Authorization is never covered by a `*` wildcard (Fetch), so every header is listed.
ALLOWED_HEADERS = (
    "Authorization, Content-Type, Accept, Prefer, If-Match, If-None-Match, If-Modified-Since, "
    "If-None-Exist, X-Request-Id, X-Break-Glass"
)
# Beyond the CORS-safelisted response headers (Content-Type, Cache-Control, ...).
EXPOSED_HEADERS = (
    "Location, ETag, Last-Modified, Content-Location, X-Request-Id, WWW-Authenticate, X-Progress, Retry-After"
)
MAX_AGE_SECONDS = 7200  # Chromium caches a preflight for two hours at most


def is_preflight(request: HttpRequest) -> bool:
    return (
        request.method == "OPTIONS"
        and "Origin" in request.headers
        and "Access-Control-Request-Method" in request.headers
    )


def allowed_origins(path: str) -> tuple[str, ...] | None:
    """The origins `path` (tenant-relative) answers, or None when it takes no part in CORS."""
    if path in ANY_ORIGIN_PATHS:
        return (ANY_ORIGIN,)
    if path == FHIR_BASE or path.startswith(FHIR_BASE + "/"):
        return settings.CORS_ALLOWED_ORIGINS
    return None


def allow_origin_value(origins: tuple[str, ...], origin: str | None) -> str | None:
    """The Access-Control-Allow-Origin value for a request from `origin`, or None to refuse."""
    if origin is None:
        return None
    if ANY_ORIGIN in origins:
        return ANY_ORIGIN
    return origin if origin in origins else None


def preflight_response(allow_origin: str | None) -> HttpResponse:
    response = HttpResponse(status=204)
    if allow_origin is not None:
        response["Access-Control-Allow-Origin"] = allow_origin
        response["Access-Control-Allow-Methods"] = ALLOWED_METHODS
        response["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
        response["Access-Control-Max-Age"] = str(MAX_AGE_SECONDS)
    return response


class CorsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        origins = allowed_origins(without_path_prefix(request.path_info))
        if origins is None:
            return self.get_response(request)
        allow_origin = allow_origin_value(origins, request.headers.get("Origin"))
        if is_preflight(request):
            response = preflight_response(allow_origin)
        else:
            response = self.get_response(request)
            if allow_origin is not None:
                response["Access-Control-Allow-Origin"] = allow_origin
                response["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        # The headers depend on Origin: shared caches must not serve one origin's answer to another.
        patch_vary_headers(response, ("Origin",))
        return response
