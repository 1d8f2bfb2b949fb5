from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from audit import chain
from tenants.management.commands._tenant_command import in_tenant


class Command(BaseCommand):
    help = (
        "Verify a tenant's audit trail: walk its hash chain in order and report how many records "
        "are intact and the first broken link (its sequence number and why). Exit status 1 on a break."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", required=True)

    def handle(self, *args, tenant: str, **options) -> None:
        with in_tenant(tenant):
            verdict = chain.verify()
        if verdict.broken_at is not None:
            raise CommandError(
                f"audit chain of {tenant} is broken at record {verdict.broken_at}: {verdict.reason}"
                f" ({verdict.count} records before it are intact)"
            )
        self.stdout.write(f"audit chain of {tenant}: {verdict.count} records, intact")
