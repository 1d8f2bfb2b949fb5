"""The authorization endpoint and the pages behind it: login, patient picker, consent.

/auth/authorize (GET, or form POST for `authorize-post`) validates the request with oauthlib and
the SMART rules (aud, launch, PKCE S256), keeps it in the session and continues at
/auth/authorize/continue, which sends the browser through login, the patient picker and the
consent screen as needed, then back to the app with a code (RFC 6749 4.1.2) or an error
(4.1.2.1). Errors about the client or redirect URI are shown here, never redirected."""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods
from oauth2_provider.exceptions import FatalClientError, OAuthToolkitError
from oauth2_provider.http import OAuth2ResponseRedirect
from oauth2_provider.oauth2_backends import get_oauthlib_core
from oauth2_provider.settings import oauth2_settings
from oauthlib.oauth2.rfc6749 import errors as oauth_errors

from smart_auth import consent
from smart_auth.launch_context import LaunchContextError, establish_context, is_patient, patient_choices
from smart_auth.models import Client
from smart_auth.tokens import LaunchContext
from smart_auth.urls_of import fhir_base

logger = logging.getLogger(__name__)
PENDING = "smart_pending_authorization"
# What oauthlib needs again to issue the code (the validated request, without its objects).
CREDENTIAL_KEYS = (
    "client_id",
    "redirect_uri",
    "response_type",
    "state",
    "code_challenge",
    "code_challenge_method",
    "nonce",
    "claims",
)


@csrf_exempt  # the request comes from the app's page (authorize-post), not from ours
@require_http_methods(["GET", "POST"])
def authorize(request: HttpRequest) -> HttpResponse:
    core = get_oauthlib_core()
    try:
        scopes, credentials = core.validate_authorization_request(request)
    except FatalClientError as exc:
        return _error_page(request, exc.oauthlib_error.description, 400)
    except OAuthToolkitError as exc:
        return _redirect_error(exc.oauthlib_error.redirect_uri, exc.oauthlib_error)
    params = request.POST if request.method == "POST" else request.GET
    redirect_uri, state = credentials["redirect_uri"], credentials.get("state")
    scopes = _offered_scopes(credentials["client_id"], scopes)
    if not scopes:
        refused = oauth_errors.InvalidScopeError(description="none of the scopes may be granted", state=state)
        return _redirect_error(redirect_uri, refused)
    problem = _smart_problem(request, params, scopes, credentials)
    if problem:
        logger.info("authorization refused: %s", problem)
        return _redirect_error(
            redirect_uri, oauth_errors.InvalidRequestError(description=problem, state=state)
        )
    try:
        context = establish_context(params.get("launch"), scopes)
    except LaunchContextError as exc:
        return _redirect_error(
            redirect_uri, oauth_errors.InvalidRequestError(description=str(exc), state=state)
        )
    request.session[PENDING] = {
        "scopes": scopes,
        "credentials": {key: credentials.get(key) for key in CREDENTIAL_KEYS},
        "context": asdict(context),
    }
    return redirect("smart-authorize-continue")


def _offered_scopes(client_id: str, requested: list[str]) -> list[str]:
    """What the consent screen may offer: the requested scopes this client may have, without
    `system/` scopes, which belong to Backend Services, never to a user's authorization."""
    client = Client.objects.get(client_id=client_id)
    return [scope for scope in requested if not scope.startswith("system/") and client.permits(scope)]


def _smart_problem(request: HttpRequest, params, scopes: list[str], credentials: dict) -> str | None:
    """SMART App Launch 2.x rules oauthlib does not know."""
    aud = (params.get("aud") or "").rstrip("/")
    if aud != fhir_base(request):
        return "aud must be this server's FHIR base URL"
    if credentials.get("code_challenge") and credentials.get("code_challenge_method") != "S256":
        return "code_challenge_method must be S256"
    if "launch" in scopes and not params.get("launch"):
        return "scope 'launch' needs the launch parameter of an EHR launch"
    return None


def _pending_authorization(view):
    """The pages after /authorize: logged in, with the authorization they continue."""

    @login_required(login_url="smart-login")
    @functools.wraps(view)
    def wrapper(request: HttpRequest) -> HttpResponse:
        pending = request.session.get(PENDING)
        if pending is None:
            return _error_page(request, "No authorization is in progress. Start again from the app.", 400)
        return view(request, pending)

    return wrapper


@_pending_authorization
def authorize_continue(request: HttpRequest, pending: dict) -> HttpResponse:
    context = LaunchContext(**pending["context"])
    if not context.fhir_user:
        context = _with_user(request, pending, context)
    if "launch/patient" in pending["scopes"] and not context.patient:
        return redirect("smart-authorize-patient")
    return redirect("smart-authorize-consent")


def _with_user(request: HttpRequest, pending: dict, context: LaunchContext) -> LaunchContext:
    """The logged-in user's FHIR identity; a patient user is their own patient context."""
    profile = getattr(request.user, "smart", None)
    fhir_user = profile.fhir_user if profile else ""
    patient = context.patient
    if not patient and fhir_user.startswith("Patient/"):
        patient = fhir_user.removeprefix("Patient/")
    updated = LaunchContext(patient, context.encounter, fhir_user, context.need_patient_banner)
    pending["context"] = asdict(updated)
    request.session.modified = True
    return updated


@require_http_methods(["GET", "POST"])
@_pending_authorization
def authorize_patient(request: HttpRequest, pending: dict) -> HttpResponse:
    """The patient picker of user-level standalone launches (`launch/patient`)."""
    if request.method == "POST":
        chosen = request.POST.get("patient", "")
        if is_patient(chosen):
            pending["context"]["patient"] = chosen
            request.session.modified = True
            return redirect("smart-authorize-consent")
    name = request.GET.get("name", "")
    return render(
        request,
        "smart_auth/patient_picker.html",
        {"name": name, "patients": patient_choices(name), "client": _client(pending)},
    )


@require_http_methods(["GET", "POST"])
@_pending_authorization
def authorize_consent(request: HttpRequest, pending: dict) -> HttpResponse:
    if request.method == "GET":
        return render(
            request,
            "smart_auth/consent.html",
            {
                "client": _client(pending),
                "choices": consent.choices(pending["scopes"]),
                "context": pending["context"],
            },
        )
    del request.session[PENDING]
    credentials = dict(pending["credentials"], launch_context=LaunchContext(**pending["context"]))
    allow = request.POST.get("decision") == "allow"
    scopes = consent.granted(pending["scopes"], request.POST.getlist("scope"))
    try:
        uri, _headers, _body, _status = get_oauthlib_core().create_authorization_response(
            request, scopes, credentials, allow and bool(scopes)
        )
    except OAuthToolkitError as exc:
        return _redirect_error(exc.oauthlib_error.redirect_uri, exc.oauthlib_error)
    return OAuth2ResponseRedirect(uri, oauth2_settings.ALLOWED_REDIRECT_URI_SCHEMES)


def _client(pending: dict) -> Client | None:
    return Client.objects.filter(client_id=pending["credentials"]["client_id"]).first()


def _redirect_error(redirect_uri: str, error: oauth_errors.OAuth2Error) -> HttpResponse:
    return OAuth2ResponseRedirect(error.in_uri(redirect_uri), oauth2_settings.ALLOWED_REDIRECT_URI_SCHEMES)


def _error_page(request: HttpRequest, message: str, status: int) -> HttpResponse:
    return render(request, "smart_auth/error.html", {"message": message}, status=status)
