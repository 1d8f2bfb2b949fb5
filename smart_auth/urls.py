"""The authorization server of one tenant, mounted at <tenant>/auth/ (smart_auth.urls_of)."""

from django.contrib.auth import views as auth_views
from django.urls import path

from smart_auth.views import authorize, discovery, tokens

urlpatterns = [
    path("authorize", authorize.authorize, name="smart-authorize"),
    path("authorize/continue", authorize.authorize_continue, name="smart-authorize-continue"),
    path("authorize/patient", authorize.authorize_patient, name="smart-authorize-patient"),
    path("authorize/consent", authorize.authorize_consent, name="smart-authorize-consent"),
    path(
        "login",
        auth_views.LoginView.as_view(template_name="smart_auth/login.html"),
        name="smart-login",
    ),
    path("token", tokens.SmartTokenView.as_view(), name="smart-token"),
    path("introspect", tokens.introspect, name="smart-introspect"),
    path("revoke", tokens.SmartRevokeView.as_view(), name="smart-revoke"),
    path("userinfo", tokens.SmartUserInfoView.as_view(), name="smart-userinfo"),
    path("jwks", discovery.jwks, name="smart-jwks"),
    path("smart-style.json", discovery.smart_style, name="smart-style"),
]

# Served under the FHIR base: SMART discovery is <base>/.well-known/smart-configuration and the
# id token issuer (the FHIR base) serves <iss>/.well-known/openid-configuration.
well_known_patterns = [
    path("fhir/.well-known/smart-configuration", discovery.smart_configuration),
    path("fhir/.well-known/openid-configuration", discovery.openid_configuration),
]
