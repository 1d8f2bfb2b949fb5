"""Row-level security: the second wall behind per-tenant schemas.

Every table in a tenant schema gets a `tenant_key` column (defaulting to the session's tenant)
and a FORCEd policy that shows and accepts a row only when both the row's key and the session
setting `app.current_tenant` equal that schema's name. So a query that reaches the wrong schema
(a wrong search_path, a hard-coded schema name, a bug) sees no rows and cannot write any.
The runtime role is granted data access only: it owns nothing and cannot change policies.

Installed after every migration of a schema (post_migrate), so tables added by later
migrations are covered too. Everything here is idempotent.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import connections
from django_tenants.utils import get_public_schema_name
from psycopg import sql

from tenants.postgresql_backend.base import RLS_SETTING

logger = logging.getLogger(__name__)

TENANT_KEY_COLUMN = "tenant_key"
POLICY_NAME = "tenant_isolation"
# Bookkeeping tables the runtime role may read but that hold no tenant data.
UNPOLICED_TABLES = frozenset({"django_migrations"})
# The audit trail: the runtime role may add records and read them, never change or remove one.
APPEND_ONLY_TABLES = frozenset({"audit_record"})


def secure_migrated_schema(sender, using: str = "default", **kwargs) -> None:
    """post_migrate receiver: police the schema just migrated and grant the runtime role."""
    connection = connections[using]
    schema = connection.schema_name
    with connection.cursor() as cursor:
        if schema != get_public_schema_name():
            install_policies(cursor, schema)
            install_covering_indexes(cursor, schema)
        else:
            install_analyze_function(cursor)
        if runtime_role_exists(cursor):
            grant_runtime_access(cursor, schema)
        else:
            logger.warning("runtime role %s does not exist yet; run setup_database", settings.APP_DB_USER)


def tenant_tables(cursor, schema: str) -> list[str]:
    cursor.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = %s AND table_type = 'BASE TABLE' ORDER BY table_name",
        [schema],
    )
    return [name for (name,) in cursor.fetchall() if name not in UNPOLICED_TABLES]


def install_policies(cursor, schema: str) -> None:
    condition = sql.SQL("{column} = {key} AND current_setting({setting}, true) = {key}").format(
        column=sql.Identifier(TENANT_KEY_COLUMN),
        key=sql.Literal(schema),
        setting=sql.Literal(RLS_SETTING),
    )
    for table in tenant_tables(cursor, schema):
        target = sql.Identifier(schema, table)
        statements = [
            sql.SQL(
                "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {column} text NOT NULL "
                "DEFAULT current_setting({setting})"
            ),
            sql.SQL("ALTER TABLE {t} ENABLE ROW LEVEL SECURITY"),
            sql.SQL("ALTER TABLE {t} FORCE ROW LEVEL SECURITY"),
            sql.SQL("DROP POLICY IF EXISTS {policy} ON {t}"),
            sql.SQL("CREATE POLICY {policy} ON {t} USING ({cond}) WITH CHECK ({cond})"),
        ]
        for statement in statements:
            execute(
                cursor,
                statement.format(
                    t=target,
                    column=sql.Identifier(TENANT_KEY_COLUMN),
                    setting=sql.Literal(RLS_SETTING),
                    policy=sql.Identifier(POLICY_NAME),
                    cond=condition,
                ),
            )


ANALYZE_FUNCTION = """
CREATE OR REPLACE FUNCTION public.analyze_current_tenant() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    tenant text := current_setting('app.current_tenant', true);
    tbl record;
BEGIN
    IF tenant IS NULL OR tenant = '' OR tenant = 'public' THEN
        RETURN;
    END IF;
    FOR tbl IN SELECT tablename FROM pg_tables WHERE schemaname = tenant AND tablename LIKE 'fhir\\_%' LOOP
        EXECUTE format('ANALYZE %I.%I', tenant, tbl.tablename);
    END LOOP;
END
$$
"""


def install_analyze_function(cursor) -> None:
    """Let the runtime role refresh planner statistics of its own tenant after bulk loads.

    ANALYZE needs table ownership, which the runtime role must not have; this owner-defined
    function does only that, only for the tenant of the session. Statistics reveal no rows.
    """
    cursor.execute(ANALYZE_FUNCTION)
    cursor.execute("REVOKE ALL ON FUNCTION public.analyze_current_tenant() FROM PUBLIC")


# Search look-ups answered from the index alone. The policy checks `tenant_key` on every row, so
# under it an ordinary index match is always followed by a read of the table row; these twins of
# the hot look-up indexes hold what searches read (the ids) and are restricted to the schema's
# key, which implies the policy's row check, so the planner can skip the table (index-only
# scans once autovacuum has marked pages visible). docs/performance.md, "Search at scale".
COVERING_INDEXES = {
    "fhir_resource": ("resource_type", "resource_id", "deleted"),
    "fhir_index_token": ("resource_type", "param", "code", "system", "resource_id"),
    "fhir_index_reference": ("resource_type", "param", "target_id", "target_type", "resource_id"),
    "fhir_index_date": ("resource_type", "param", "start", "end", "resource_id"),
    "fhir_index_blind": ("resource_type", "param", "digest", "resource_id"),
}


def install_covering_indexes(cursor, schema: str) -> None:
    present = set(tenant_tables(cursor, schema))
    for table, columns in COVERING_INDEXES.items():
        if table not in present:
            continue
        execute(
            cursor,
            sql.SQL("CREATE INDEX IF NOT EXISTS {name} ON {t} ({columns}) WHERE {column} = {key}").format(
                name=sql.Identifier(f"{table}_tenant_covering"),
                t=sql.Identifier(schema, table),
                columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
                column=sql.Identifier(TENANT_KEY_COLUMN),
                key=sql.Literal(schema),
            ),
        )


def runtime_role_exists(cursor) -> bool:
    cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [settings.APP_DB_USER])
    return cursor.fetchone() is not None


def grant_runtime_access(cursor, schema: str) -> None:
    """Data access for the runtime role: read/write rows, never DDL, never migration records."""
    params = {"schema": sql.Identifier(schema), "role": sql.Identifier(settings.APP_DB_USER)}
    statements = [
        "GRANT USAGE ON SCHEMA {schema} TO {role}",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}",
        "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {schema} TO {role}",
    ]
    for statement in statements:
        execute(cursor, sql.SQL(statement).format(**params))
    execute(
        cursor,
        sql.SQL("REVOKE INSERT, UPDATE, DELETE ON TABLE {table} FROM {role}").format(
            table=sql.Identifier(schema, "django_migrations"), role=params["role"]
        ),
    )
    for table in APPEND_ONLY_TABLES.intersection(tenant_tables(cursor, schema)):
        execute(
            cursor,
            sql.SQL("REVOKE UPDATE, DELETE, TRUNCATE ON TABLE {table} FROM {role}").format(
                table=sql.Identifier(schema, table), role=params["role"]
            ),
        )
    if schema == get_public_schema_name():
        execute(
            cursor,
            sql.SQL("GRANT EXECUTE ON FUNCTION public.analyze_current_tenant() TO {role}").format(
                role=params["role"]
            ),
        )


def execute(cursor, statement: sql.Composable) -> None:
    """Run a composed statement on a Django cursor (rendered, since Django's wrapper wants str)."""
    cursor.execute(statement.as_string())
