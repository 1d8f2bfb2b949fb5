"""Break-glass over real HTTP: X-Break-Glass with a reason and the role widens access and is
recorded; no reason is 400, no role 403."""

from __future__ import annotations

import http.client
import uuid
from urllib.parse import urlsplit

import httpx
import pytest

from tests.smart_support import PASSWORD, run_manage, tenant_admin

HEADER = "X-Break-Glass"


@pytest.fixture(scope="module")
def ward(smart_server):
    """A patient-scoped token for one patient, and another patient it cannot reach."""
    base = f"{smart_server.url}/t/alpha/fhir"
    admin = {
        "Authorization": "Bearer " + run_manage("issue_token", "--tenant", "alpha", "--scopes", "system/*.*")
    }
    own, other = (
        httpx.post(f"{base}/Patient", json={"resourceType": "Patient"}, headers=admin).json()["id"]
        for _ in range(2)
    )

    def token(role: str) -> dict:
        username = f"bg{uuid.uuid4().hex[:8]}"
        run_manage("create_user", "--tenant", "alpha", "--username", username, "--password", PASSWORD,
                   "--fhir-user", "Practitioner/x", "--role", role)  # fmt: skip
        scopes = "patient/Patient.rs launch/patient"
        issued = run_manage("issue_token", "--tenant", "alpha", "--scopes", scopes,
                            "--patient", own, "--username", username)  # fmt: skip
        return {"Authorization": f"Bearer {issued}"}

    return {
        "base": base,
        "own": own,
        "other": other,
        "permitted": token("clinician break-glass"),
        "ordinary": token("clinician"),
    }


def _recorded(owner_db, request_id: str) -> list[tuple]:
    return owner_db.execute(
        "SELECT reason, method, path, client_id FROM alpha.smart_auth_breakglassaccess WHERE request_id = %s",
        [request_id],
    ).fetchall()


def test_break_glass_reaches_another_patient_and_is_recorded(ward, owner_db):
    url = f"{ward['base']}/Patient/{ward['other']}"
    assert httpx.get(url, headers=ward["permitted"]).status_code == 403  # normal access
    rid = uuid.uuid4().hex
    headers = {**ward["permitted"], HEADER: "unconscious in the emergency room", "X-Request-ID": rid}
    response = httpx.get(f"{url}?_elements=id", headers=headers)
    assert response.status_code == 200 and response.json()["id"] == ward["other"]
    (row,) = _recorded(owner_db, rid)
    assert row[:3] == ("unconscious in the emergency room", "GET", f"/t/alpha/fhir/Patient/{ward['other']}")
    assert row[3]  # the token's client


def test_break_glass_lifts_reach_but_adds_no_permission(ward):
    headers = {**ward["permitted"], HEADER: "emergency"}
    assert httpx.get(f"{ward['base']}/Observation", headers=headers).status_code == 403
    written = httpx.post(f"{ward['base']}/Patient", json={"resourceType": "Patient"}, headers=headers)
    assert written.status_code == 403


@pytest.mark.parametrize("reason", ["", "   "])
def test_break_glass_without_a_reason_is_400(ward, owner_db, reason):
    rid = uuid.uuid4().hex
    url = urlsplit(f"{ward['base']}/Patient/{ward['other']}")
    # http.client, because httpx refuses to send a value of only whitespace.
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    connection.request("GET", url.path, headers={**ward["permitted"], HEADER: reason, "X-Request-ID": rid})
    response = connection.getresponse()
    assert response.status == 400 and b"needs a reason" in response.read()
    connection.close()
    assert _recorded(owner_db, rid) == []


def test_break_glass_without_the_role_is_403(ward, owner_db):
    rid = uuid.uuid4().hex
    headers = {**ward["ordinary"], HEADER: "emergency", "X-Request-ID": rid}
    response = httpx.get(f"{ward['base']}/Patient/{ward['own']}", headers=headers)
    assert response.status_code == 403 and "break-glass role" in response.json()["issue"][0]["diagnostics"]
    assert _recorded(owner_db, rid) == []


def test_break_glass_accesses_are_listed_in_the_tenant_admin(ward, smart_server):
    reason = f"reviewable {uuid.uuid4().hex[:8]}"
    headers = {**ward["permitted"], HEADER: reason}
    assert httpx.get(f"{ward['base']}/Patient/{ward['other']}", headers=headers).status_code == 200
    name = f"reviewer{uuid.uuid4().hex[:8]}"
    create = (
        "from django.contrib.auth.models import User\n"
        "from django_tenants.utils import schema_context\n"
        f"with schema_context('alpha'): User.objects.create_superuser('{name}', password='{PASSWORD}')"
    )
    run_manage("shell", "-c", create)
    with tenant_admin(smart_server.url, name) as browser:
        listing = browser.get("/smart_auth/breakglassaccess/")
    assert listing.status_code == 200 and reason in listing.text
    assert "Content-Security-Policy" in listing.headers
