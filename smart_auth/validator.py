"""django-oauth-toolkit's request validator, extended for SMART App Launch: scope grammar, PKCE
for public clients, launch context carried from the code to every refreshed token, SMART fields
in the token response, and id tokens signed by our key ring."""

from __future__ import annotations

import hashlib
import json
import logging

from django.conf import settings
from django.db import transaction
from oauth2_provider.models import get_refresh_token_model
from oauth2_provider.oauth2_validators import OAuth2Validator

from smart_auth import assertions
from smart_auth import scopes as scopes_module
from smart_auth.keys import key_ring
from smart_auth.models import GrantedContext
from smart_auth.oauthlib_core import FHIR_BASE_KEY, TOKEN_URL_KEY
from smart_auth.tokens import LaunchContext

logger = logging.getLogger(__name__)


class SmartValidator(OAuth2Validator):
    # The OpenID claims each scope releases (OpenID Connect Core 5.4; SMART `fhirUser`).
    oidc_claim_scope = {"sub": "openid", "fhirUser": "fhirUser"}

    def client_authentication_required(self, request, *args, **kwargs) -> bool:
        if _assertion(request):
            return True
        return super().client_authentication_required(request, *args, **kwargs)

    def authenticate_client(self, request, *args, **kwargs) -> bool:
        """Also `private_key_jwt`: the client is the assertion's issuer, no client_id needed."""
        assertion = _assertion(request)
        if assertion is None:
            return super().authenticate_client(request, *args, **kwargs)
        try:
            client = assertions.authenticate(*assertion, request.headers[TOKEN_URL_KEY])
        except assertions.AssertionRefused as exc:
            logger.info("client assertion refused: %s", exc)
            return False
        request.client, request.client_id = client, client.client_id
        return True

    def validate_scopes(self, client_id, scopes, client, request, *args, **kwargs) -> bool:
        """Every scope well-formed (SMART v1 or v2 grammar); for client_credentials also
        system-level and within what the client may have (interactive grants are narrowed to
        that before consent instead, smart_auth.views.authorize)."""
        try:
            scopes_module.parse(" ".join(scopes))
        except scopes_module.InvalidScope as exc:
            logger.info("invalid scope requested: %s", exc)
            return False
        if request.grant_type == "client_credentials":
            return all(client.permits(scope) and scope.startswith("system/") for scope in scopes)
        return bool(scopes)

    def is_within_original_scope(self, request_scopes, refresh_token, request, *args, **kwargs) -> bool:
        """A refresh may narrow the granted scopes in any grammar, never widen them."""
        original = self.get_original_scopes(refresh_token, request)
        try:
            return scopes_module.is_subset(" ".join(request_scopes), original)
        except scopes_module.InvalidScope:
            return False

    def get_default_scopes(self, client_id, request, *args, **kwargs) -> list[str]:
        return []  # SMART apps always ask for scopes; none asked is invalid_scope

    def validate_bearer_token(self, token, scopes, request) -> bool:
        """The toolkit filters a token's scopes through its fixed scope list, which cannot
        hold SMART's open grammar: take them from the token itself (userinfo needs `openid`)."""
        if not super().validate_bearer_token(token, scopes, request):
            return False
        request.scopes = request.access_token.scope.split()
        return True

    def is_pkce_required(self, client_id, request) -> bool:
        """PKCE is required of public clients (SMART App Launch 2.x, "Considerations for PKCE");
        confidential clients may use it, and it is then checked."""
        client = request.client or self._load_application(client_id, request)
        return client is not None and client.client_type == client.CLIENT_PUBLIC

    def rotate_refresh_token(self, request) -> bool:
        return request.client.rotate_refresh_tokens

    def get_oidc_issuer_endpoint(self, request) -> str:
        return request.headers[FHIR_BASE_KEY]

    def validate_code(self, client_id, code, client, request, *args, **kwargs) -> bool:
        if not super().validate_code(client_id, code, client, request, *args, **kwargs):
            revoke_replayed_code(code)
            return False
        granted = GrantedContext.objects.filter(grant__code=code).first()
        _attach_context(request, granted)
        return True

    def validate_refresh_token(self, refresh_token, client, request, *args, **kwargs) -> bool:
        if not super().validate_refresh_token(refresh_token, client, request, *args, **kwargs):
            return False
        family = request.refresh_token_instance.token_family
        _attach_context(request, GrantedContext.objects.filter(token_family=family).first())
        return True

    def _create_authorization_code(self, request, code, expires=None):
        grant = super()._create_authorization_code(request, code, expires)
        context = getattr(request, "launch_context", None) or LaunchContext()
        GrantedContext.objects.create(
            grant=grant,
            code_checksum=_checksum(code["code"]),
            patient=context.patient,
            encounter=context.encounter,
            fhir_user=context.fhir_user,
            need_patient_banner=context.need_patient_banner,
        )
        return grant

    def _create_refresh_token(self, request, refresh_token_code, access_token, previous_refresh_token):
        refresh_token = super()._create_refresh_token(
            request, refresh_token_code, access_token, previous_refresh_token
        )
        granted = getattr(request, "granted_context", None)
        if granted is not None and granted.token_family is None:
            granted.token_family = refresh_token.token_family
            granted.save(update_fields=["token_family"])
        return refresh_token

    def _create_access_token(self, expires, request, token, source_refresh_token=None):
        access_token = super()._create_access_token(expires, request, token, source_refresh_token)
        granted = getattr(request, "granted_context", None)
        if granted is not None and granted.access_token_id is None:
            granted.access_token = access_token
            granted.save(update_fields=["access_token"])
        return access_token

    def save_bearer_token(self, token, request, *args, **kwargs):
        super().save_bearer_token(token, request, *args, **kwargs)
        context = getattr(request, "launch_context", None)
        token.update(_token_response_context(request, context))

    def get_additional_claims(self, request) -> dict:
        """`fhirUser`: from the launch context at token time, from the user's profile at the
        userinfo endpoint."""
        context = getattr(request, "launch_context", None)
        profile = getattr(request.user, "smart", None) if request.user else None
        fhir_user = (context.fhir_user if context else "") or (profile.fhir_user if profile else "")
        return {"fhirUser": fhir_user} if fhir_user else {}

    def finalize_id_token(self, id_token, token, token_handler, request) -> str:
        """Sign with the server's RS256 key ring (kid = SHA-256 of the modulus), not with the
        toolkit's per-client key, so the JWKS at jwks_uri verifies every id token."""
        claims, expiration_time = self.get_id_token_dictionary(token, token_handler, request)
        id_token.update(**claims)
        if "nonce" not in id_token and request.nonce:
            id_token["nonce"] = request.nonce
        signed = key_ring().sign(json.loads(json.dumps(id_token, default=str)), {"typ": "JWT"})
        with transaction.atomic():
            saved = self._save_id_token(id_token["jti"], request, expiration_time)
        request.access_token = saved
        request.id_token = saved
        return signed


def _assertion(request) -> tuple[str, str] | None:
    assertion_type = getattr(request, "client_assertion_type", None)
    assertion = getattr(request, "client_assertion", None)
    return (assertion_type or "", assertion or "") if assertion_type or assertion else None


def revoke_replayed_code(code: str) -> None:
    """A code presented again after it was exchanged: revoke every token it issued (RFC 6749
    4.1.2: the server "SHOULD revoke (when possible) all tokens previously issued based on that
    authorization code")."""
    used = GrantedContext.objects.filter(code_checksum=_checksum(code), grant__isnull=True).first()
    if used is None:
        return
    logger.warning("authorization code replayed: revoking the tokens it issued")
    if used.access_token is not None:
        used.access_token.revoke()
    if used.token_family is not None:
        get_refresh_token_model().revoke_family(used.token_family)


def _checksum(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _attach_context(request, granted: GrantedContext | None) -> None:
    request.granted_context = granted
    if granted is not None:
        request.launch_context = LaunchContext(
            patient=granted.patient,
            encounter=granted.encounter,
            fhir_user=granted.fhir_user,
            need_patient_banner=granted.need_patient_banner,
        )


def _token_response_context(request, context: LaunchContext | None) -> dict:
    """The SMART launch-context fields of a token response (SMART App Launch 2.x,
    "Response to a successful access token request")."""
    fields: dict = {}
    if context is not None:
        if context.patient:
            fields["patient"] = context.patient
        if context.encounter:
            fields["encounter"] = context.encounter
        fields["need_patient_banner"] = context.need_patient_banner
        base = request.headers[FHIR_BASE_KEY]
        fields["smart_style_url"] = base.removesuffix("fhir") + settings.SMART_STYLE_URL_PATH
    return fields
