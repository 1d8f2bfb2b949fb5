"""OAuth clients, users' FHIR identities and SMART launch contexts. All tenant tables: a client,
user or token of one tenant does not exist in another (ARCHITECTURE.md, "Pitfalls")."""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from oauth2_provider.models import AbstractApplication

from smart_auth import scopes


class Client(AbstractApplication):
    """A registered SMART app (django-oauth-toolkit's application, swapped in by settings).

    `allowed_scopes` bounds what the app may ever be granted (space-separated SMART scopes or
    scope patterns; empty means any scope the server knows). Asymmetric clients
    (private_key_jwt, Backend Services) register a JWKS inline or by URL.
    """

    allowed_scopes = models.TextField(blank=True, help_text="Space-separated; empty allows every scope.")
    rotate_refresh_tokens = models.BooleanField(
        default=True, help_text="Issue a new refresh token on each refresh (else keep the original valid)."
    )
    launch_uri = models.URLField(blank=True, help_text="Where the EHR opens this app for an EHR launch.")
    jwks = models.JSONField(null=True, blank=True, help_text="Public keys for private_key_jwt (a JWK Set).")
    jwks_uri = models.URLField(blank=True, help_text="Where this client publishes its JWK Set.")

    class Meta(AbstractApplication.Meta):
        swappable = "OAUTH2_PROVIDER_APPLICATION_MODEL"

    def clean(self) -> None:
        super().clean()
        try:
            scopes.parse(self.allowed_scopes)
        except scopes.InvalidScope as exc:
            raise ValidationError({"allowed_scopes": str(exc)}) from None

    def permits(self, scope: str) -> bool:
        """Whether the client may be granted `scope`. Context scopes (openid, launch, ...)
        grant no data and are always permitted; resource scopes must lie within
        `allowed_scopes` (SMART scope equivalence, smart_auth.scopes.is_subset)."""
        parsed = scopes.parse_scope(scope)
        allowed = [
            text
            for text in self.allowed_scopes.split()
            if isinstance(scopes.parse_scope(text), scopes.ResourceScope)
        ]
        if isinstance(parsed, scopes.ContextScope) or not allowed:
            return True
        return scopes.is_subset(scope, " ".join(allowed))


class UserProfile(models.Model):
    """Who a login is in FHIR terms (the OpenID `fhirUser` claim) and an explicit role."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="smart")
    fhir_user = models.CharField(max_length=200, blank=True, help_text="e.g. Patient/123 or Practitioner/9")
    role = models.CharField(max_length=40, blank=True)
    organization = models.CharField(
        max_length=200, blank=True, help_text="e.g. Organization/7: the {organization} of access rules"
    )

    def __str__(self) -> str:
        return f"{self.user} ({self.fhir_user or 'no FHIR user'})"


def _launch_id() -> str:
    return secrets.token_urlsafe(24)


def _launch_expiry():
    return timezone.now() + timedelta(hours=1)


class EhrLaunch(models.Model):
    """An opaque `launch` value minted by the EHR, standing for the patient and encounter it has
    open (SMART App Launch 2.x, "EHR launch"). The app passes it back to /authorize."""

    launch_id = models.CharField(max_length=64, unique=True, default=_launch_id)
    patient = models.CharField(max_length=64, blank=True)
    encounter = models.CharField(max_length=64, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    expires = models.DateTimeField(default=_launch_expiry)

    def __str__(self) -> str:
        return f"launch {self.launch_id[:6]}…"

    def is_expired(self) -> bool:
        return timezone.now() >= self.expires


class GrantedContext(models.Model):
    """The launch context of one authorization: set when the user approves, carried from the
    authorization code to every token refreshed from it (linked by the refresh token family).

    It outlives the code (which the toolkit deletes once used), so that a replayed code is
    recognised and what it issued revoked (RFC 6749 4.1.2)."""

    grant = models.OneToOneField(
        "oauth2_provider.Grant", null=True, blank=True, on_delete=models.SET_NULL, related_name="smart"
    )
    code_checksum = models.CharField(max_length=64, db_index=True)
    access_token = models.ForeignKey(
        "oauth2_provider.AccessToken", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    token_family = models.UUIDField(null=True, blank=True, unique=True)
    patient = models.CharField(max_length=64, blank=True)
    encounter = models.CharField(max_length=64, blank=True)
    fhir_user = models.CharField(max_length=200, blank=True)
    need_patient_banner = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"granted context {self.pk}"


class UsedAssertion(models.Model):
    """`jti` values of client assertions already accepted, kept until they expire (replay)."""

    jti = models.CharField(max_length=300, unique=True)
    expires = models.BigIntegerField(help_text="Unix time")

    def __str__(self) -> str:
        return self.jti


class BreakGlassAccess(models.Model):
    """One request that used break-glass (X-Break-Glass), kept for review in the tenant admin."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.CharField(max_length=200, help_text="the token's subject")
    client_id = models.CharField(max_length=200, blank=True)
    reason = models.TextField()
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=2000, help_text="without the query string")
    request_id = models.CharField(max_length=128)
    reviewed = models.BooleanField(default=False)

    class Meta:
        ordering = ("-at",)
        verbose_name = "break-glass access"
        verbose_name_plural = "break-glass accesses"

    def __str__(self) -> str:
        return f"{self.user} {self.method} {self.path} at {self.at:%Y-%m-%d %H:%M}"
