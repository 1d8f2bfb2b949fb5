from django.core.management.base import BaseCommand

from tenants import lifecycle
from tenants.management.commands._tenant_command import operator_errors
from tenants.models import Tenant


class Command(BaseCommand):
    help = "Create a tenant: its row, its schema (migrated) and its row-level-security policies."

    def add_arguments(self, parser) -> None:
        parser.add_argument("slug", help="lowercase letters, digits and hyphens; used in /t/<slug>/")
        parser.add_argument("--name", help="display name (defaults to the slug)")
        parser.add_argument(
            "--if-missing", action="store_true", help="succeed without change if the tenant exists"
        )

    def handle(self, *args, slug: str, name: str | None, if_missing: bool, **options) -> None:
        if if_missing and Tenant.objects.filter(slug=slug).exists():
            self.stdout.write(f"tenant {slug} already exists")
            return
        with operator_errors():
            tenant = lifecycle.create_tenant(slug, name)
        self.stdout.write(self.style.SUCCESS(f"created tenant {tenant.slug} (schema {tenant.schema_name})"))
