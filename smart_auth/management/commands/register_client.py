from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from smart_auth.models import Client
from smart_auth.scopes import InvalidScope, parse
from tenants.management.commands._tenant_command import in_tenant


class Command(BaseCommand):
    help = (
        "Register a SMART app (OAuth client) in a tenant. Confidential clients get a generated "
        "secret, printed once; --jwks-file/--jwks-url register keys for private_key_jwt."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--client-id", required=True)
        parser.add_argument("--name", default="")
        parser.add_argument("--redirect-uri", action="append", default=[], help="repeat for several")
        kind = parser.add_mutually_exclusive_group(required=True)
        kind.add_argument("--public", action="store_true", help="browser or native app, no secret (PKCE)")
        kind.add_argument("--confidential", action="store_true", help="client_secret_basic/_post")
        kind.add_argument(
            "--backend", action="store_true", help="SMART Backend Services (client_credentials)"
        )
        parser.add_argument("--scopes", default="", help="space-separated scopes the app may be granted")
        parser.add_argument("--launch-uri", default="")
        parser.add_argument("--jwks-file")
        parser.add_argument("--jwks-url", default="")
        parser.add_argument("--secret", help="use this secret instead of a generated one (tests)")
        parser.add_argument("--keep-refresh-tokens", action="store_true", help="do not rotate refresh tokens")

    def handle(self, *args, tenant: str, client_id: str, **options) -> None:
        if not options["redirect_uri"] and not options["backend"]:
            raise CommandError("--redirect-uri is required for apps that use the authorization code flow")
        try:
            parse(options["scopes"])
        except InvalidScope as exc:
            raise CommandError(str(exc)) from None
        jwks = _read_jwks(options["jwks_file"])
        if options["backend"] and not (jwks or options["jwks_url"]):
            raise CommandError("a backend client needs --jwks-file or --jwks-url")
        with in_tenant(tenant):
            if Client.objects.filter(client_id=client_id).exists():
                raise CommandError(f"client {client_id} already exists in tenant {tenant}")
            secret = options["secret"] or (None if options["public"] else Client().client_secret)
            client = Client(
                client_id=client_id,
                name=options["name"] or client_id,
                client_type=Client.CLIENT_PUBLIC if options["public"] else Client.CLIENT_CONFIDENTIAL,
                authorization_grant_type=(
                    Client.GRANT_CLIENT_CREDENTIALS if options["backend"] else Client.GRANT_AUTHORIZATION_CODE
                ),
                redirect_uris=" ".join(options["redirect_uri"]),
                allowed_scopes=options["scopes"],
                launch_uri=options["launch_uri"],
                jwks=jwks,
                jwks_uri=options["jwks_url"],
                rotate_refresh_tokens=not options["keep_refresh_tokens"],
                algorithm=Client.RS256_ALGORITHM,
                client_secret=secret or "",
            )
            client.save()
        self.stdout.write(self.style.SUCCESS(f"client {client_id} registered in tenant {tenant}"))
        if secret and not options["secret"]:
            self.stdout.write(f"client secret (shown once): {secret}")


def _read_jwks(path: str | None) -> dict | None:
    if not path:
        return None
    try:
        jwks = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot read the JWKS file: {exc}") from None
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise CommandError("the JWKS file must hold a JWK Set ({'keys': [...]})")
    return jwks
