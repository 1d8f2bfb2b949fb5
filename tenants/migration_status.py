"""Whether the public schema and every tenant schema have all migrations on disk applied."""

from __future__ import annotations

from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django_tenants.utils import get_public_schema_name
from psycopg import sql

from tenants.models import Tenant


def unmigrated_schemas() -> list[str]:
    """Schemas missing at least one migration (Django records every migration in every schema,
    including the ones django-tenants' router skips there)."""
    expected = set(MigrationLoader(None, ignore_no_migrations=True).disk_migrations)
    schemas = [get_public_schema_name(), *Tenant.objects.values_list("schema_name", flat=True)]
    missing = []
    with connection.cursor() as cursor:
        for schema in schemas:
            query = sql.SQL("SELECT app, name FROM {}").format(sql.Identifier(schema, "django_migrations"))
            cursor.execute(query.as_string())
            if not expected <= set(cursor.fetchall()):
                missing.append(schema)
    return missing
