"""Where the database is, and which PostgreSQL role this process connects as.

Two roles (docs/operations.md, "Database roles"):

- the *owner* role is the one in DATABASE_URL. It creates schemas, runs migrations and owns the
  tables. Only the commands in OWNER_COMMANDS connect as it.
- the *runtime* role (APP_DB_USER, default `fhir_app`) is what the server, workers and every other
  command connect as. `setup_database` creates it NOSUPERUSER NOBYPASSRLS, so row-level security
  applies to every query it makes.

Without DATABASE_URL the database is an embedded PostgreSQL kept under `.data/postgres`
(see config.embedded_postgres), started on first use by whichever process needs it.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

from config.environment import data_dir, env_str

OWNER = "owner"
RUNTIME = "runtime"
DEFAULT_APP_DB_USER = "fhir_app"
EMBEDDED_DATABASE_NAME = "fhirserver"

# Management commands that change database structure, and therefore run as the owner role.
OWNER_COMMANDS = frozenset(
    {
        "setup_database",
        "migrate",
        "migrate_schemas",
        "create_tenant",
        "delete_tenant",
        "makemigrations",
        "sqlmigrate",
    }
)


def role_for_command(argv: list[str]) -> str:
    """The role a `manage.py` invocation connects as (DB_ROLE in the environment wins)."""
    command = argv[1] if len(argv) > 1 else ""
    return OWNER if command in OWNER_COMMANDS else RUNTIME


def owner_url() -> str:
    """DATABASE_URL, or the embedded server's URL (starting it if it is not running)."""
    url = env_str("DATABASE_URL")
    if url:
        return url
    from config import embedded_postgres

    return embedded_postgres.ensure_running(data_dir())


def runtime_url(owner: str) -> str:
    """APP_DATABASE_URL, or the owner's URL with the runtime role's name and password."""
    explicit = env_str("APP_DATABASE_URL")
    if explicit:
        return explicit
    return replace_credentials(owner, app_db_user(), env_str("APP_DB_PASSWORD", ""))


def app_db_user() -> str:
    explicit = env_str("APP_DATABASE_URL")
    if explicit:
        return unquote(urlsplit(explicit).username or "")
    return env_str("APP_DB_USER", DEFAULT_APP_DB_USER)


def current_role() -> str:
    role = env_str("DB_ROLE", RUNTIME)
    if role not in (OWNER, RUNTIME):
        raise ImproperlyConfigured(f"DB_ROLE must be '{OWNER}' or '{RUNTIME}', got {role!r}")
    return role


def replace_credentials(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = quote(user, safe="")
    if password:
        netloc += ":" + quote(password, safe="")
    netloc += "@" + host + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def replace_database_name(url: str, name: str) -> str:
    return urlsplit(url)._replace(path="/" + name).geturl()


def django_database(url: str, statement_timeout_seconds: int = 0) -> dict:
    """A Django DATABASES entry from a postgres:// URL (host may also be `?host=/socket/dir`).

    A statement timeout, when given, is set for the session at connect time (libpq `options`),
    so it costs no query per request and a runaway statement is cancelled by the server."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ImproperlyConfigured("DATABASE_URL must be a postgres:// or postgresql:// URL")
    options = dict(parse_qsl(parts.query))
    host = options.pop("host", None) or parts.hostname or ""
    if statement_timeout_seconds:
        timeout = f"-c statement_timeout={statement_timeout_seconds * 1000}"
        options["options"] = f"{options['options']} {timeout}" if options.get("options") else timeout
    return {
        "ENGINE": "tenants.postgresql_backend",
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": host,
        "PORT": str(parts.port or ""),
        "OPTIONS": {**options, "application_name": "fhirserver"},
        "CONN_MAX_AGE": int(os.environ.get("DB_CONN_MAX_AGE", "60")),
        # No health-check query before each request's first query: it would cost a round trip on
        # every FHIR read. A connection that died is replaced on the next request.
        "CONN_HEALTH_CHECKS": False,
    }
