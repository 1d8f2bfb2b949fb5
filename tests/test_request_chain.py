"""The outer request chain over real HTTP: recovery, security headers, body limits, JSON depth,
request timeout."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest
from psycopg import sql

from tests.conftest import DEVELOPMENT_AUTH
from tests.smart_support import run_manage
from tests.support import manage_command, start_server

FHIR_JSON = {"Content-Type": "application/fhir+json"}


# --- Recovery: a real failure, inside and outside the FHIR views --------------------------------


@pytest.fixture
def broken_tenant(owner_db, unique_slug):
    """A tenant whose schema loses tables after it was set up (a botched manual repair)."""
    assert manage_command("create_tenant", unique_slug).returncode == 0
    token = run_manage("issue_token", "--tenant", unique_slug, "--scopes", "system/*.*")
    yield unique_slug, token
    assert manage_command("delete_tenant", unique_slug, "--yes").returncode == 0


def _drop(owner_db, schema: str, table: str) -> None:
    owner_db.execute(sql.SQL("DROP TABLE {} CASCADE").format(sql.Identifier(schema, table)))


def _assert_recovered(response: httpx.Response, server, rid: str) -> None:
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert response.headers["x-request-id"] == rid
    (issue,) = response.json()["issue"]
    assert issue["code"] == "exception" and rid in issue["diagnostics"]
    assert "Traceback" not in response.text and "relation" not in response.text
    assert response.headers["x-content-type-options"] == "nosniff"
    logged = [json.loads(line) for line in server.log_lines() if rid in line]
    errors = [entry for entry in logged if entry["level"] == "ERROR"]
    assert errors and "Traceback" in errors[0]["exception"] and "UndefinedTable" in errors[0]["exception"]
    assert all("secret-name" not in line for line in server.log_lines())


def test_a_failing_view_answers_500_with_the_request_id(server, owner_db, broken_tenant):
    slug, token = broken_tenant
    _drop(owner_db, slug, "fhir_resource_version")
    rid = f"recover-{uuid.uuid4().hex}"
    response = httpx.post(
        f"{server.url}/t/{slug}/fhir/Patient?name=secret-name",
        json={"resourceType": "Patient", "name": [{"family": "secret-name"}]},
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": rid},
    )
    _assert_recovered(response, server, rid)


def test_a_failing_middleware_answers_500_with_the_request_id(server, owner_db, broken_tenant):
    slug, token = broken_tenant
    _drop(owner_db, slug, "oauth2_provider_accesstoken")  # read by auth, before any view
    rid = f"recover-{uuid.uuid4().hex}"
    response = httpx.get(
        f"{server.url}/t/{slug}/fhir/Patient?name=secret-name",
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": rid},
    )
    _assert_recovered(response, server, rid)


# --- Security headers --------------------------------------------------------------------------

CSP = "Content-Security-Policy"


def test_every_answer_has_nosniff_frame_and_referrer_headers(http):
    for response in (
        http.get("/t/alpha/fhir/metadata"),
        http.get("/t/alpha/fhir/Patient"),  # 401 from the auth middleware
        http.get("/t/no-such-tenant/fhir/metadata"),  # 404 from the tenant middleware
        http.get("/healthz"),
    ):
        assert response.headers["x-content-type-options"] == "nosniff", response.url
        assert response.headers["x-frame-options"] == "DENY", response.url
        assert response.headers["referrer-policy"] == "same-origin", response.url
        assert "strict-transport-security" not in response.headers  # plain HTTP (RFC 6797 7.2)
        assert CSP not in response.headers  # not HTML


def test_html_pages_get_a_strict_content_security_policy(http):
    for path in ("/t/alpha/auth/login", "/t/alpha/admin/login/", "/admin/login/"):
        response = http.get(path)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        policy = response.headers[CSP]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy
        assert "'unsafe-inline'" not in policy and "frame-ancestors 'none'" in policy
        # The policy forbids inline code, so the pages must not have any.
        assert "<script>" not in response.text and " style=" not in response.text
        assert " onclick=" not in response.text.lower()


def test_forwarded_https_from_an_untrusted_peer_gets_no_hsts(http):
    response = http.get("/healthz", headers={"X-Forwarded-Proto": "https"})
    assert "strict-transport-security" not in response.headers


# --- Body limits and JSON nesting --------------------------------------------------------------


def test_a_body_over_1_mb_is_413_on_ordinary_endpoints(fhir):
    padding = "x" * (2 * 1024 * 1024)
    body = {"resourceType": "Patient", "name": [{"family": "Big", "given": [padding]}]}
    response = fhir.post("/Patient", content=json.dumps(body), headers=FHIR_JSON)
    assert response.status_code == 413
    assert response.json()["issue"][0]["code"] == "too-costly"
    assert "1 MB" in response.json()["issue"][0]["diagnostics"]


def test_a_large_transaction_bundle_is_accepted(fhir, marker):
    note = "n" * 1000
    entries = [
        {
            "fullUrl": f"urn:uuid:{uuid.uuid4()}",
            "resource": {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": note},
                "identifier": [{"system": "urn:test:marker", "value": marker}],
            },
            "request": {"method": "POST", "url": "Observation"},
        }
        for _ in range(2500)
    ]
    body = json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert len(body) > 2 * 1024 * 1024
    response = fhir.post("", content=body, headers=FHIR_JSON)
    assert response.status_code == 200, response.text[:500]
    assert len(response.json()["entry"]) == 2500


def test_json_nested_deeper_than_100_levels_is_400(fhir):
    nested: dict = {"url": "http://example.org/leaf", "valueString": "x"}
    for _ in range(100):
        nested = {"url": "http://example.org/n", "extension": [nested]}
    response = fhir.post("/Patient", json={"resourceType": "Patient", "extension": [nested]})
    assert response.status_code == 400
    assert "deeper than 100" in response.json()["issue"][0]["diagnostics"]


# --- Request timeout: a statement stuck behind a lock is cancelled -----------------------------


@pytest.fixture(scope="module")
def impatient_server(django_db_setup, tmp_path_factory):
    env = {**DEVELOPMENT_AUTH, "FHIR_REQUEST_TIMEOUT_SECONDS": "1"}
    running = start_server(tmp_path_factory.mktemp("impatient") / "server.log", env=env)
    yield running
    running.stop()


def test_a_statement_over_the_timeout_answers_503(impatient_server, owner_db):
    base = f"{impatient_server.url}/t/alpha/fhir"
    patient = httpx.post(f"{base}/Patient", json={"resourceType": "Patient"}).json()
    # A maintenance session holds the row (as a stuck transaction would): the update waits on it.
    with owner_db.transaction():
        owner_db.execute(
            "SELECT 1 FROM alpha.fhir_resource"
            " WHERE resource_type = 'Patient' AND resource_id = %s FOR UPDATE",
            [patient["id"]],
        )
        started = time.monotonic()
        response = httpx.put(f"{base}/Patient/{patient['id']}", json=patient, timeout=30)
        waited = time.monotonic() - started
    assert response.status_code == 503, response.text
    assert response.json()["issue"][0]["code"] == "timeout"
    assert 1 <= waited < 10
    assert httpx.put(f"{base}/Patient/{patient['id']}", json=patient).status_code == 200


def test_management_commands_have_no_request_timeout():
    """The request timeout is for web requests; a command's long batch statements run to the end."""
    show = (
        "from django.db import connection; c = connection.cursor(); c.execute('SHOW statement_timeout'); "
        "print(c.fetchone()[0])"
    )
    result = manage_command("shell", "--no-imports", "-c", show)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"
    limited = manage_command("shell", "--no-imports", "-c", show, env={"FHIR_REQUEST_TIMEOUT_SECONDS": "7"})
    assert limited.stdout.strip() == "7s"
