from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from oauth2_provider.models import AccessToken, set_token_value

from smart_auth.keys import key_ring
from smart_auth.models import Client
from smart_auth.scopes import InvalidScope, parse
from smart_auth.tokens import LaunchContext, access_token_claims
from tenants.management.commands._tenant_command import in_tenant

OPERATOR_CLIENT = "operator"


class Command(BaseCommand):
    help = (
        "Issue an access token for operators and scripted tests: the same RS256 token, stored the "
        "same way, as the authorization flow issues. Prints the token."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--scopes", required=True, help='e.g. "patient/*.rs" or "system/*.*"')
        parser.add_argument("--patient", default="")
        parser.add_argument("--encounter", default="")
        parser.add_argument("--fhir-user", default="", help="default: the --username's fhirUser")
        parser.add_argument("--username", help="the token's user (default: none, like a backend client)")
        parser.add_argument("--client-id", default=OPERATOR_CLIENT)
        parser.add_argument("--fhir-base", help="the token's aud and iss (default: local development URL)")

    def handle(self, *args, tenant: str, scopes: str, **options) -> None:
        try:
            parse(scopes)
        except InvalidScope as exc:
            raise CommandError(str(exc)) from None
        fhir_base = options["fhir_base"] or f"http://127.0.0.1:8000/t/{tenant}/fhir"
        with in_tenant(tenant):
            client = _client(options["client_id"])
            user = _user(options["username"])
            # As in the authorization flow, a user's token names the user's fhirUser.
            profile = getattr(user, "smart", None) if user else None
            fhir_user = options["fhir_user"] or (profile.fhir_user if profile else "")
            context = LaunchContext(options["patient"], options["encounter"], fhir_user)
            claims = access_token_claims(
                fhir_base=fhir_base,
                tenant=tenant,
                client_id=client.client_id,
                subject=str(user.pk) if user else client.client_id,
                scope=" ".join(scopes.split()),
                context=context,
                role=user.smart.role if user and hasattr(user, "smart") else "",
            )
            token = key_ring().sign(claims, {"typ": "at+jwt"})
            stored = AccessToken(
                user=user,
                application=client,
                scope=claims["scope"],
                expires=timezone.now() + timedelta(seconds=settings.SMART_ACCESS_TOKEN_SECONDS),
            )
            set_token_value(stored, token)
            stored.save()
        self.stdout.write(token)


def _client(client_id: str) -> Client:
    if client_id == OPERATOR_CLIENT:
        client, _ = Client.objects.get_or_create(
            client_id=OPERATOR_CLIENT,
            defaults={
                "name": "Operator tokens (manage.py issue_token)",
                "client_type": Client.CLIENT_CONFIDENTIAL,
                "authorization_grant_type": Client.GRANT_CLIENT_CREDENTIALS,
            },
        )
        return client
    client = Client.objects.filter(client_id=client_id).first()
    if client is None:
        raise CommandError(f"no client {client_id}")
    return client


def _user(username: str | None) -> User | None:
    if not username:
        return None
    user = User.objects.filter(username=username).first()
    if user is None:
        raise CommandError(f"no user {username}")
    return user
