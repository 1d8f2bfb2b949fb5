"""The runtime database role: the one the server and workers connect as.

Created by `setup_database` when the owner may create roles (the embedded database, CI, a
development server). On a managed database, create it yourself the same way and set
APP_DATABASE_URL (docs/operations.md).
"""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from psycopg import sql

from tenants.rls import execute

# What makes row-level security binding on this role: no superuser, no BYPASSRLS, and no
# privilege that would let it grant itself either.
RUNTIME_ROLE_ATTRIBUTES = "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION"


def ensure_runtime_role() -> None:
    role = sql.Identifier(settings.APP_DB_USER)
    password = settings.APP_DB_PASSWORD or None
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [settings.APP_DB_USER])
        verb = "ALTER" if cursor.fetchone() else "CREATE"
        statement = sql.SQL(f"{verb} ROLE {{role}} {RUNTIME_ROLE_ATTRIBUTES} PASSWORD {{password}}")
        execute(cursor, statement.format(role=role, password=sql.Literal(password)))
        execute(
            cursor,
            sql.SQL("GRANT CONNECT ON DATABASE {db} TO {role}").format(
                db=sql.Identifier(connection.settings_dict["NAME"]), role=role
            ),
        )
