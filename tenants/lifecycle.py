"""Creating, suspending and deleting tenants. Runs as the owner role (config.database)."""

from __future__ import annotations

from django.db import DatabaseError, connection, transaction

from tenants.models import Tenant
from tenants.slugs import schema_name_for


class TenantError(Exception):
    """A tenant operation that cannot be done, with a message fit for an operator."""


def create_tenant(slug: str, name: str | None = None) -> Tenant:
    """Create the tenant row and its migrated, RLS-policed schema in one transaction.

    PostgreSQL DDL is transactional, so a failure anywhere (bad slug, duplicate, a failing
    migration) leaves neither a row nor a schema behind.
    """
    schema_name = schema_name_for(slug)  # raises InvalidSlug before anything is touched
    try:
        with transaction.atomic():
            if Tenant.objects.filter(slug=slug).exists():
                raise TenantError(f"tenant {slug!r} already exists")
            tenant = Tenant.objects.create(slug=slug, schema_name=schema_name, name=name or slug)
            tenant.create_schema(check_if_exists=False, verbosity=0)
    except DatabaseError as exc:
        raise TenantError(f"creating tenant {slug!r} failed, nothing was created: {exc}") from exc
    finally:
        connection.set_schema_to_public()
    return tenant


def get_tenant(slug: str) -> Tenant:
    try:
        return Tenant.objects.get(slug=slug)
    except Tenant.DoesNotExist:
        raise TenantError(f"no tenant {slug!r}") from None


def set_status(slug: str, status: Tenant.Status) -> Tenant:
    tenant = get_tenant(slug)
    tenant.status = status
    tenant.save(update_fields=["status"])
    return tenant


def delete_tenant(slug: str) -> None:
    """Drop the tenant's schema (all its data) and its rows, in one transaction."""
    with transaction.atomic():
        tenant = get_tenant(slug)
        connection.set_schema_to_public()
        tenant.delete(force_drop=True)
