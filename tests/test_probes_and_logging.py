"""/healthz, /readyz, request ids and structured logs, over real HTTP."""

import json
import os
import subprocess
import sys

from psycopg import sql

from config.environment import BASE_DIR
from tenants.migration_status import unmigrated_schemas
from tests.support import manage_command


def test_healthz_and_readyz(http):
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


def log_entries(server, request_id: str) -> list[dict]:
    entries = []
    for line in server.log_lines():
        entry = json.loads(line)  # every line is JSON, gunicorn's own included
        if entry.get("request_id") == request_id:
            entries.append(entry)
    return entries


def test_request_id_is_honoured_echoed_and_logged(http, server):
    response = http.get("/t/alpha/admin/login/", headers={"X-Request-ID": "trace-123.abc"})
    assert response.headers["x-request-id"] == "trace-123.abc"
    (entry,) = log_entries(server, "trace-123.abc")
    assert entry["tenant"] == "alpha"
    assert entry["status"] == 200
    assert entry["path"] == "/t/alpha/admin/login/"


def test_request_id_is_generated_when_missing_or_unsafe(http, server):
    generated = http.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32
    replaced = http.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"}).headers["x-request-id"]
    assert replaced != "bad id\twith spaces" and len(replaced) == 32
    assert log_entries(server, replaced)


def test_query_strings_are_never_logged(http, server):
    response = http.get("/t/alpha/fhir/Patient?name=Zyxwvutsrq&birthdate=1970-01-01")
    rid = response.headers["x-request-id"]
    assert log_entries(server, rid)
    assert "Zyxwvutsrq" not in server.log_path.read_text()


def test_a_schema_missing_a_migration_is_reported(owner_db, unique_slug):
    assert manage_command("create_tenant", unique_slug).returncode == 0
    assert unique_slug not in unmigrated_schemas()
    owner_db.execute(
        sql.SQL("DELETE FROM {} WHERE app = 'fhirserver'").format(
            sql.Identifier(unique_slug, "django_migrations")
        )
    )
    assert unmigrated_schemas() == [unique_slug]
    assert manage_command("delete_tenant", unique_slug, "--yes").returncode == 0


def test_docker_healthcheck_probes_over_http(server):
    port = server.url.rsplit(":", 1)[1]
    probe = subprocess.run(
        [sys.executable, str(BASE_DIR / "scripts" / "healthcheck.py")],
        env={**os.environ, "PORT": port},
        capture_output=True,
        timeout=30,
    )
    assert probe.returncode == 0, probe.stderr
