"""Register an external FHIR API (a provider) in a tenant, from a `fhir://` connection string."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from sync import connections, secrets
from sync.models import Provider
from tenants.management.commands._tenant_command import in_tenant


class Command(BaseCommand):
    help = (
        "Add (or replace) a provider: add_provider --tenant T --name N --type generic 'fhir://host/path?..'"
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--type", choices=Provider.Kind.values, default=Provider.Kind.GENERIC)
        parser.add_argument("connection", help="fhir://host/path?client_id=..&token_url=..")
        parser.add_argument("--rpm", type=int, default=0, help="requests per minute at most (0: no limit)")
        parser.add_argument("--concurrency", type=int, default=0, help="parallel requests (default by type)")
        parser.add_argument(
            "--resync-hours", type=int, default=0, help="re-sync every linked patient this often"
        )

    def handle(
        self,
        *args,
        tenant: str,
        name: str,
        type: str,
        connection: str,
        rpm: int,
        concurrency: int,
        resync_hours: int,
        **o,
    ):
        try:
            parsed = connections.parse(connection)
        except connections.InvalidConnection as exc:
            raise CommandError(str(exc)) from None
        with in_tenant(tenant):
            provider = Provider.objects.filter(name=name).first() or Provider(name=name)
            provider.kind = type
            for attribute in ("base_url", "client_id", "token_url", "authorize_url", "key_id", "jwt_alg"):
                setattr(provider, attribute, getattr(parsed, attribute))
            provider.use_jwt_assertion = parsed.use_jwt_assertion
            provider.scope, provider.audience = parsed.scope, parsed.audience
            provider.requests_per_minute, provider.resync_hours = max(rpm, 0), max(resync_hours, 0)
            provider.concurrency = (
                concurrency if concurrency > 0 else (8 if type == Provider.Kind.CERNER else 4)
            )
            secrets.put(provider, "client_secret", parsed.client_secret)
            secrets.put(provider, "private_key", parsed.private_key)
            provider.save()
        self.stdout.write(f"provider {name} ({type}): {provider.id}")
