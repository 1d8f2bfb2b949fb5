"""Planner statistics after bulk writes.

Search plans depend on PostgreSQL knowing how many rows each index value matches; right after a
large load those statistics are stale until autovacuum catches up, and a plan chosen on stale
statistics can be orders of magnitude slower. Large loads therefore refresh them at once.
"""

from django.db import connection

BULK = 1000  # entries in one bundle from which statistics are refreshed right away


def refresh_tenant_statistics() -> None:
    """ANALYZE the current tenant's FHIR tables (through the owner's function, tenants.rls)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT public.analyze_current_tenant()")
