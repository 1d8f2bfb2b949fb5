"""Discovery documents of a tenant: SMART configuration, OpenID configuration, JWKS, style."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_safe

from smart_auth.advertised import advertised
from smart_auth.keys import ALGORITHM, key_ring
from smart_auth.urls_of import endpoints, fhir_base

# SMART App Launch 2.x capabilities this server implements ("Capability sets").
CAPABILITIES = [
    "launch-ehr",
    "launch-standalone",
    "authorize-post",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "sso-openid-connect",
    "context-banner",
    "context-style",
    "context-ehr-patient",
    "context-ehr-encounter",
    "context-standalone-patient",
    "permission-offline",
    "permission-online",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
]
SCOPES_SUPPORTED = [
    "openid",
    "fhirUser",
    "launch",
    "launch/patient",
    "launch/encounter",
    "offline_access",
    "online_access",
    "patient/*.rs",
    "user/*.cruds",
    "system/*.rs",
    "patient/*.read",
    "user/*.*",
    "system/*.read",
]
SMART_ENDPOINTS = [
    "issuer",
    "jwks_uri",
    "authorization_endpoint",
    "token_endpoint",
    "introspection_endpoint",
    "revocation_endpoint",
    "userinfo_endpoint",
]
AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]
SIGNING_ALGORITHMS = ["RS384", "ES384"]  # accepted for client assertions (private_key_jwt)


@require_safe
def smart_configuration(request: HttpRequest) -> JsonResponse:
    """<base>/.well-known/smart-configuration (SMART App Launch 2.x, "SMART on FHIR
    configuration"): every required and recommended field."""
    urls = advertised(request)
    if "authorization_endpoint" not in urls:  # AUTH_MODE=external and the provider unreachable
        unavailable = {
            "error": "temporarily_unavailable",
            "error_description": "identity provider unavailable",
        }
        return JsonResponse(unavailable, status=503)
    document = {
        **{name: urls[name] for name in SMART_ENDPOINTS if name in urls},
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "response_types_supported": ["code"],
        "scopes_supported": SCOPES_SUPPORTED,
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": SIGNING_ALGORITHMS,
        "capabilities": CAPABILITIES,
    }
    return _json(document)


@require_safe
def openid_configuration(request: HttpRequest) -> JsonResponse:
    """<issuer>/.well-known/openid-configuration (OpenID Connect Discovery 1.0, section 3);
    the issuer of our id tokens is the tenant's FHIR base."""
    urls = endpoints(request)
    document = {
        "issuer": fhir_base(request),
        "authorization_endpoint": urls["authorization_endpoint"],
        "token_endpoint": urls["token_endpoint"],
        "userinfo_endpoint": urls["userinfo_endpoint"],
        "jwks_uri": urls["jwks_uri"],
        "introspection_endpoint": urls["introspection_endpoint"],
        "revocation_endpoint": urls["revocation_endpoint"],
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ALGORITHM],
        "scopes_supported": ["openid", "fhirUser", "profile", "offline_access"],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "fhirUser"],
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
    }
    return _json(document)


@require_safe
def jwks(request: HttpRequest) -> JsonResponse:
    response = _json(key_ring().jwks())
    # Clients may cache the key set for an hour; retired keys stay published far longer.
    response["Cache-Control"] = "public, max-age=3600"
    return response


@require_safe
def smart_style(request: HttpRequest) -> JsonResponse:
    """The `smart_style_url` document (SMART App Launch 2.x, "Styling")."""
    return _json(
        {
            "color_background": "#f4f6f8",
            "color_error": "#b3261e",
            "color_highlight": "#1a5fb4",
            "color_modal_backdrop": "",
            "color_success": "#2e7d32",
            "color_text": "#1f2328",
            "dim_border_radius": "6px",
            "dim_font_size": "14px",
            "dim_spacing_size": "16px",
            "font_family_body": "system-ui, sans-serif",
            "font_family_heading": "system-ui, sans-serif",
        }
    )


def _json(document: dict) -> JsonResponse:
    return JsonResponse(document, json_dumps_params={"indent": 1})
