"""Content-Security-Policy on HTML pages (the SMART login, patient picker and consent pages, the
admin): a script injected into one of them would run with the user's session and could approve
an authorization. Django's SecurityMiddleware and XFrameOptionsMiddleware set the other headers
(settings: HSTS, nosniff, Referrer-Policy, X-Frame-Options).

Neither our templates nor Django's admin (5.2) have inline scripts, inline styles or event
attributes, so the policy needs no nonce. `form-action` is left out on purpose: the consent form
posts here and is answered with a redirect to the app's redirect URI, and browsers apply
form-action to that redirect too. FHIR and OAuth JSON answers are not documents, so they carry
no policy (nosniff keeps browsers from rendering them as one).
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse

CSP_HEADER = "Content-Security-Policy"


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        content_type = response.get("Content-Type", "")
        if content_type.startswith("text/html") and CSP_HEADER not in response:
            response[CSP_HEADER] = settings.CONTENT_SECURITY_POLICY
        return response
