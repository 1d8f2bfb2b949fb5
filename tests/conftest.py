"""Shared fixtures: a fresh test database set up by the real commands, and a real HTTP server.

The database is created once per run and prepared by `manage.py setup_database` and
`manage.py create_tenant`, exactly as an operator would. Tests talk to it as the runtime role
(the Django connection and `runtime_db`), as the owner (`owner_db`), and over HTTP to a gunicorn
serving the project (`server`). Tests commit what they write and use unique ids, so they do not
depend on each other.
"""

from __future__ import annotations

import os
import uuid

import httpx
import psycopg
import pytest
from django.db import connection

from config.database import app_db_user, replace_credentials
from tests.database_plugin import TEST_DATABASE
from tests.smart_support import PASSWORD, REDIRECT_URI, SmartApp, run_manage
from tests.support import create_fresh_database, start_server

TENANTS = {"alpha": "Alpha Clinic", "beta": "Beta Hospital"}


def owner_url() -> str:
    return os.environ["DATABASE_URL"]


def runtime_url() -> str:
    return replace_credentials(owner_url(), app_db_user(), os.environ["APP_DB_PASSWORD"])


@pytest.fixture(scope="session")
def django_db_setup(django_db_blocker):
    create_fresh_database(TEST_DATABASE, TENANTS)


@pytest.fixture(autouse=True)
def _database_access(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        yield
        connection.set_schema_to_public()


@pytest.fixture
def owner_db():
    with psycopg.connect(owner_url(), autocommit=True) as conn:
        yield conn


@pytest.fixture
def runtime_db():
    with psycopg.connect(runtime_url(), autocommit=True) as conn:
        yield conn


@pytest.fixture
def marker() -> str:
    """A value no other test uses, for tests.support.make_marked."""
    return uuid.uuid4().hex


@pytest.fixture
def unique_slug() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def server(django_db_setup, tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("server") / "server.log")
    yield running
    running.stop()


# Until SMART authorization lands, the FHIR API is open only in AUTH_MODE=development.
DEVELOPMENT_AUTH = {"DEBUG": "1", "AUTH_MODE": "development"}


@pytest.fixture(scope="session")
def fhir_server(django_db_setup, tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("fhir-server") / "server.log", env=DEVELOPMENT_AUTH)
    yield running
    running.stop()


@pytest.fixture
def fhir(fhir_server):
    """An HTTP client on tenant alpha's FHIR base."""
    with httpx.Client(base_url=fhir_server.url + "/t/alpha/fhir", timeout=60) as client:
        yield client


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


# --- SMART: a server in standalone auth mode and a tenant world of users and apps ---------


@pytest.fixture(scope="session")
def smart_server(django_db_setup, tmp_path_factory):
    env = {"DEBUG": "1", "AUTH_MODE": "standalone"}
    running = start_server(tmp_path_factory.mktemp("smart-server") / "server.log", env=env)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def world(smart_server):
    """Tenant alpha with a patient, a patient login, a practitioner login and three apps."""
    suffix = uuid.uuid4().hex[:8]
    admin_token = run_manage("issue_token", "--tenant", "alpha", "--scopes", "system/*.*")
    base = f"{smart_server.url}/t/alpha/fhir"
    headers = {"Authorization": f"Bearer {admin_token}"}
    family = f"Smartpatient{suffix}"
    patient = httpx.post(
        f"{base}/Patient",
        json={"resourceType": "Patient", "name": [{"family": family, "given": ["Ada"]}]},
        headers=headers,
    ).json()
    encounter = httpx.post(
        f"{base}/Encounter",
        json={
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": {"reference": f"Patient/{patient['id']}"},
        },
        headers=headers,
    ).json()
    practitioner = httpx.post(
        f"{base}/Practitioner", json={"resourceType": "Practitioner"}, headers=headers
    ).json()
    run_manage(
        "create_user",
        "--tenant",
        "alpha",
        "--username",
        f"pat{suffix}",
        "--password",
        PASSWORD,
        "--fhir-user",
        f"Patient/{patient['id']}",
    )
    run_manage(
        "create_user",
        "--tenant",
        "alpha",
        "--username",
        f"doc{suffix}",
        "--password",
        PASSWORD,
        "--fhir-user",
        f"Practitioner/{practitioner['id']}",
    )
    secret = uuid.uuid4().hex
    run_manage(
        "register_client",
        "--tenant",
        "alpha",
        "--client-id",
        f"conf{suffix}",
        "--confidential",
        "--redirect-uri",
        REDIRECT_URI,
        "--secret",
        secret,
        "--launch-uri",
        "http://app.example/launch",
    )
    run_manage(
        "register_client",
        "--tenant",
        "alpha",
        "--client-id",
        f"pub{suffix}",
        "--public",
        "--redirect-uri",
        REDIRECT_URI,
    )
    run_manage(
        "register_client",
        "--tenant",
        "alpha",
        "--client-id",
        f"keep{suffix}",
        "--confidential",
        "--redirect-uri",
        REDIRECT_URI,
        "--secret",
        secret,
        "--keep-refresh-tokens",
    )
    return {
        "server": smart_server.url,
        "patient": patient["id"],
        "encounter": encounter["id"],
        "practitioner": practitioner["id"],
        "family": family,
        "patient_user": f"pat{suffix}",
        "doctor_user": f"doc{suffix}",
        "confidential": SmartApp(smart_server.url, "alpha", f"conf{suffix}", secret),
        "public": SmartApp(smart_server.url, "alpha", f"pub{suffix}"),
        "keeping": SmartApp(smart_server.url, "alpha", f"keep{suffix}", secret),
    }
