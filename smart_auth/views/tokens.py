"""The token endpoint and the endpoints about tokens: introspection (RFC 7662), revocation
(RFC 7009), userinfo (OpenID Connect Core 5.3)."""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from oauth2_provider.oauth2_backends import get_oauthlib_core
from oauth2_provider.views import RevokeTokenView, TokenView, UserInfoView

from smart_auth.tokens import InvalidToken, verify_access_token

logger = logging.getLogger(__name__)
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@method_decorator(csrf_exempt, name="dispatch")
class SmartTokenView(TokenView):
    """Token responses, successful or not, are never cached (RFC 6749 5.1, SMART 2.x)."""

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        response = super().post(request, *args, **kwargs)
        if response.status_code != 200:
            logger.info("token request refused with %s", response.status_code)
        return _no_store(response)


@method_decorator(csrf_exempt, name="dispatch")
class SmartRevokeView(RevokeTokenView):
    pass


@method_decorator(csrf_exempt, name="dispatch")
class SmartUserInfoView(UserInfoView):
    pass


@csrf_exempt
@require_POST
def introspect(request: HttpRequest) -> JsonResponse:
    """RFC 7662 with the SMART fields. The caller authenticates as a registered client
    (Basic or form credentials, as at the token endpoint) or with a bearer token of this tenant,
    so that tokens cannot be probed anonymously. Any token that is not live answers exactly
    {"active": false} (RFC 7662 2.2)."""
    if not _caller_allowed(request):
        response = JsonResponse({"error": "invalid_client"}, status=401)
        response["WWW-Authenticate"] = 'Basic realm="introspection"'
        return response
    try:
        claims = verify_access_token(request.POST.get("token", ""), request.tenant.slug)
    except InvalidToken:
        return _no_store(JsonResponse({"active": False}))
    answer = {"active": True, "token_type": "Bearer"}
    for name in ("scope", "client_id", "exp", "iat", "iss", "sub", "aud", "patient", "encounter", "fhirUser"):
        if name in claims:
            answer[name] = claims[name]
    return _no_store(JsonResponse(answer))


def _caller_allowed(request: HttpRequest) -> bool:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        try:
            verify_access_token(header[7:].strip(), request.tenant.slug)
        except InvalidToken:
            return False
        return True
    return get_oauthlib_core().authenticate_client(request)


def _no_store(response: HttpResponse) -> HttpResponse:
    for name, value in NO_STORE.items():
        response[name] = value
    return response
