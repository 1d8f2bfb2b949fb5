"""What the tenant commands share: turning expected failures into clean command errors."""

from contextlib import contextmanager

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from tenants import lifecycle
from tenants.lifecycle import TenantError
from tenants.slugs import InvalidSlug


@contextmanager
def operator_errors():
    try:
        yield
    except (TenantError, InvalidSlug) as exc:
        raise CommandError(str(exc)) from None


@contextmanager
def in_tenant(slug: str):
    """Run the block in a tenant's schema (and its row-level security setting)."""
    with operator_errors():
        tenant = lifecycle.get_tenant(slug)
    connection.set_tenant(tenant)
    try:
        yield tenant
    finally:
        connection.set_schema_to_public()


class SetStatusCommand(BaseCommand):
    """Base of suspend_tenant / activate_tenant: set one tenant's status."""

    status: str

    def add_arguments(self, parser) -> None:
        parser.add_argument("slug")

    def handle(self, *args, slug: str, **options) -> None:
        with operator_errors():
            lifecycle.set_status(slug, self.status)
        self.stdout.write(self.style.SUCCESS(f"tenant {slug} is now {self.status}"))
