"""Linking a patient through a SMART standalone launch at the provider (authorization code + PKCE).

Pages under the tenant, at `<tenant>/sync/link...`, for a tenant administrator logged in with the
tenant's session login (the admin's or the SMART login's): a staff user with the permission to add
linked patients (superusers have it). Anyone else is sent to the admin login (anonymous, except
at the callback) or refused with 403.

- `GET  sync/link[?provider=<name>]` lists the providers with an authorize URL, a form per
  provider (the named one first). Nothing is stored.
- `POST sync/link/start` (the form, CSRF-protected: a start changes the session, and a forged one
  could link whatever patient the provider remembers for the administrator) creates the state
  (256 random bits) and the PKCE verifier, keeps them in the session for ten minutes, and
  redirects to the provider's authorize URL (response_type=code, client_id, redirect_uri = our
  callback, absolute from the request, scope, state, aud = the provider's FHIR base,
  code_challenge with S256).
- `GET  sync/link/callback?code&state` (or `?error&error_description&state`) takes the state out
  of the session (single use, so a replay or a callback in another browser is refused with 400),
  exchanges the code with the verifier and the provider's client authentication
  (`sync.auth.request_token`), reads `patient` from the token response, creates or updates the
  LinkedPatient with the refresh and access tokens sealed (sync.secrets, as `link_patient`), queues
  its first snapshot, and redirects to `sync/link/<link id>`, so the code leaves the address bar.
- `GET  sync/link/<link id>` shows the link and the status of its latest snapshot.

Tokens, codes and patient ids are never logged and never put into a URL we generate (the link
id is a random UUID); error pages show the provider's error code and description, escaped.
"""

from __future__ import annotations

import functools
import logging
import re
import secrets
import time
import uuid
from datetime import timedelta
from urllib.parse import urlencode, urlsplit

import httpx
from django.contrib.auth.views import redirect_to_login
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from smart_auth.urls_of import tenant_url
from sync import secrets as sealed
from sync.auth import AuthFailed, pkce_challenge, request_token
from sync.client import TIMEOUT
from sync.models import LinkedPatient, Provider, Snapshot
from sync.runner import enqueue

logger = logging.getLogger(__name__)
PENDING = "sync_link_pending"  # session key: {state: {provider, verifier, expires}}
STATE_SECONDS = 600
MAX_PENDING = 5  # starts kept per session; older ones are dropped
DEFAULT_SCOPE = "launch/patient openid fhirUser offline_access patient/*.read"
PERMISSION = "sync.add_linkedpatient"
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def may_link(user) -> bool:
    return bool(user.is_authenticated and user.is_active and user.is_staff and user.has_perm(PERMISSION))


def administrator(view=None, *, login: bool = True):
    """Tenant administrators only: the admin login for anonymous users (403 without `login`: the
    callback's URL carries the code, which must not travel on in `next`), 403 for the others."""

    def decorate(view):
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not request.user.is_authenticated and login:
                return redirect_to_login(request.get_full_path(), reverse("tenant_admin:login"))
            if not may_link(request.user):
                return _error(request, "Linking patients needs a tenant administrator, signed in.", 403)
            return view(request, *args, **kwargs)

        return wrapper

    return decorate(view) if view is not None else decorate


def linkable() -> list[Provider]:
    return list(
        Provider.objects.exclude(authorize_url="")
        .exclude(token_url="")
        .exclude(client_id="")
        .order_by("name")
    )


@require_GET
@administrator
def providers(request: HttpRequest) -> HttpResponse:
    found = linkable()
    chosen = request.GET.get("provider", "")
    found.sort(key=lambda provider: provider.name != chosen)
    return render(request, "sync/link.html", {"providers": found, "chosen": chosen})


@require_POST
@administrator
def start(request: HttpRequest) -> HttpResponse:
    provider = next((p for p in linkable() if p.name == request.POST.get("provider")), None)
    if provider is None:
        return _error(request, "No provider of that name can link patients (it needs an authorize URL).", 400)
    state, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(48)
    now = time.time()
    pending = {key: kept for key, kept in request.session.get(PENDING, {}).items() if kept["expires"] > now}
    while len(pending) >= MAX_PENDING:
        del pending[min(pending, key=lambda key: pending[key]["expires"])]
    pending[state] = {
        "provider": str(provider.id),
        "verifier": verifier,
        "expires": now + STATE_SECONDS,
    }
    request.session[PENDING] = pending
    parameters = {
        "response_type": "code",
        "client_id": provider.client_id,
        "redirect_uri": callback_url(request),
        "scope": provider.scope or DEFAULT_SCOPE,
        "state": state,
        "aud": provider.base_url,
        "code_challenge": pkce_challenge(verifier),
        "code_challenge_method": "S256",
    }
    separator = "&" if urlsplit(provider.authorize_url).query else "?"
    return redirect(provider.authorize_url + separator + urlencode(parameters))


def callback_url(request: HttpRequest) -> str:
    return tenant_url(request, "sync/link/callback")


@require_GET
@administrator(login=False)
def callback(request: HttpRequest) -> HttpResponse:
    pending = request.session.get(PENDING, {})
    started = pending.pop(request.GET.get("state", ""), None)  # single use, whatever follows
    request.session[PENDING] = pending
    if started is None or started["expires"] < time.time():
        return _error(request, "This link request is unknown, used or expired. Start again.", 400)
    provider = Provider.objects.filter(id=started["provider"]).first()
    if provider is None:
        return _error(request, "The provider of this link request no longer exists.", 400)
    if "error" in request.GET:
        code = request.GET["error"][:64]
        description = request.GET.get("error_description", "")[:300]
        return _error(
            request, f"{provider.name} did not authorize the link: {code}", 400, description=description
        )
    code = request.GET.get("code", "")
    if not code:
        return _error(request, f"{provider.name} answered without an authorization code.", 400)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": callback_url(request),
        "code_verifier": started["verifier"],
    }
    try:
        with httpx.Client(timeout=TIMEOUT, follow_redirects=False) as http:
            answer = request_token(
                provider,
                http,
                form,
                sealed.get(provider, "client_secret"),
                sealed.get(provider, "private_key"),
            )
    except AuthFailed as failure:
        logger.warning("patient link failed: %s", failure)
        return _error(request, str(failure), 502)
    patient = answer.get("patient")
    if not isinstance(patient, str) or not FHIR_ID.fullmatch(patient):
        return _error(request, f"{provider.name} named no patient (a FHIR id) in its token response.", 502)
    link = _store(provider, patient, answer)
    logger.info("patient linked: link %s at provider %s", link.id, provider.name)
    return redirect("sync-link-done", link_id=link.id)


def _store(provider: Provider, patient: str, answer: dict) -> LinkedPatient:
    """Create or update the link with the tokens sealed, and queue its first snapshot."""
    with transaction.atomic():
        link = LinkedPatient.objects.select_for_update().filter(
            provider=provider, provider_patient_id=patient
        ).first() or LinkedPatient(provider=provider, provider_patient_id=patient)
        refresh = answer.get("refresh_token")
        if isinstance(refresh, str) and refresh:  # none issued: an earlier one stays
            sealed.put(link, "refresh_token", refresh)
        sealed.put(link, "access_token", answer["access_token"])
        try:
            lifetime = float(answer.get("expires_in", 300))
        except (TypeError, ValueError):
            lifetime = 300.0
        link.access_token_expires = timezone.now() + timedelta(seconds=lifetime)
        link.save()
        enqueue(link)
    return link


@require_GET
@administrator
def done(request: HttpRequest, link_id: uuid.UUID) -> HttpResponse:
    link = LinkedPatient.objects.select_related("provider").filter(id=link_id).first()
    if link is None:
        return _error(request, "No such link.", 404)
    latest = Snapshot.objects.filter(patient=link).order_by("-created").first()
    return render(
        request,
        "sync/link_done.html",
        {"link": link, "snapshot": latest, "has_refresh_token": bool(link.refresh_token)},
    )


def _error(request: HttpRequest, message: str, status: int, description: str = "") -> HttpResponse:
    return render(
        request, "sync/link_error.html", {"message": message, "description": description}, status=status
    )
