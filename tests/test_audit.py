"""The audit trail (audit/): one AuditEvent per FHIR request, chained by hashes per tenant,
served read-only to administrators. Over HTTP against a standalone-auth server with tokens from
`manage.py issue_token`; records are inspected as the owner, tampered with as the owner."""

from __future__ import annotations

import base64
import threading
import uuid

import httpx
import orjson
import pytest

from tests.smart_support import run_manage
from tests.support import manage_command

ADMIN = "system/*.*"
CLIENT = "operator"  # issue_token's client


@pytest.fixture(scope="module")
def tokens():
    cache: dict[tuple, str] = {}

    def token(scopes: str, patient: str | None = None, tenant: str = "alpha") -> str:
        key = (scopes, patient, tenant)
        if key not in cache:
            extra = ["--patient", patient] if patient else []
            cache[key] = run_manage("issue_token", "--tenant", tenant, "--scopes", scopes, *extra)
        return cache[key]

    return token


@pytest.fixture
def admin(server, tokens):
    headers = {"Authorization": f"Bearer {tokens(ADMIN)}"}
    with httpx.Client(base_url=f"{server.url}/t/alpha/fhir", headers=headers, timeout=60) as client:
        yield client


def events_of(owner_db, request_id: str, schema: str = "alpha") -> list[dict]:
    """The AuditEvents of one request, found by its X-Request-ID entity."""
    probe = orjson.dumps([{"what": {"identifier": {"value": request_id}}}]).decode()
    rows = owner_db.execute(
        f"SELECT event FROM {schema}.audit_record WHERE event::jsonb -> 'entity' @> %s::jsonb ORDER BY seq",
        [probe],
    ).fetchall()
    return [orjson.loads(row[0]) for row in rows]


def one_event(owner_db, request_id: str) -> dict:
    found = events_of(owner_db, request_id)
    assert len(found) == 1, found
    return found[0]


def call(client: httpx.Client, method: str, url: str, **kwargs) -> tuple[httpx.Response, str]:
    rid = uuid.uuid4().hex
    headers = {**kwargs.pop("headers", {}), "X-Request-ID": rid}
    return client.request(method, url, headers=headers, **kwargs), rid


def patients_named(event: dict) -> set[str]:
    return {
        e["what"]["reference"].split("/")[1] for e in event["entity"] if e.get("role", {}).get("code") == "1"
    }


def references(event: dict) -> list[str]:
    return [e["what"]["reference"] for e in event["entity"] if e.get("role", {}).get("code") == "4"]


def client_of(event: dict) -> str:
    return next(a["who"]["identifier"]["value"] for a in event["agent"] if not a["requestor"])


def new_patient(admin: httpx.Client) -> str:
    response = admin.post("/Patient", json={"resourceType": "Patient", "gender": "female"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def new_observation(admin: httpx.Client, patient: str) -> dict:
    body = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "audit"},
        "subject": {"reference": f"Patient/{patient}"},
    }
    response = admin.post("/Observation", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_each_interaction_is_one_event_naming_patient_client_and_outcome(admin, owner_db):
    patient = new_patient(admin)
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "audit"},
        "subject": {"reference": f"Patient/{patient}"},
    }
    response, rid = call(admin, "POST", "/Observation", json=observation)
    assert response.status_code == 201
    obs = response.json()
    url = f"/Observation/{obs['id']}"
    interactions = [
        ("create", "C", rid, [f"Observation/{obs['id']}/_history/1"]),
        ("read", "R", *_done(call(admin, "GET", url)), [f"Observation/{obs['id']}"]),
        (
            "vread",
            "R",
            *_done(call(admin, "GET", f"{url}/_history/1")),
            [f"Observation/{obs['id']}/_history/1"],
        ),
        ("update", "U", *_done(call(admin, "PUT", url, json={**obs, "status": "amended"})), None),
        (
            "patch",
            "U",
            *_done(
                call(
                    admin,
                    "PATCH",
                    url,
                    content=b'[{"op": "replace", "path": "/status", "value": "final"}]',
                    headers={"Content-Type": "application/json-patch+json"},
                )
            ),
            None,
        ),
        ("history-instance", "R", *_done(call(admin, "GET", f"{url}/_history")), None),
        ("search-type", "E", *_done(call(admin, "GET", f"/Observation?subject=Patient/{patient}")), []),
        ("operation", "E", *_done(call(admin, "GET", f"/Patient/{patient}/$everything")), None),
        ("delete", "D", *_done(call(admin, "DELETE", url), 204), [f"Observation/{obs['id']}"]),
    ]
    for subtype, action, request_id, expected_references in interactions:
        event = one_event(owner_db, request_id)
        assert event["subtype"][0]["code"] == subtype
        assert event["action"] == action
        assert event["outcome"] == "0"
        assert patient in patients_named(event), subtype
        assert client_of(event) == CLIENT
        if expected_references is not None:
            assert references(event) == expected_references, subtype


def _done(result: tuple[httpx.Response, str], status: int = 200) -> tuple[str]:
    response, rid = result
    assert response.status_code == status, response.text
    return (rid,)


def test_search_records_its_query(admin, owner_db):
    response, rid = call(admin, "GET", "/Patient?family=Auditquery&_count=3")
    assert response.status_code == 200
    query = next(e for e in one_event(owner_db, rid)["entity"] if e["role"]["code"] == "24")
    assert base64.b64decode(query["query"]).decode() == "family=Auditquery&_count=3"


def test_transaction_is_one_event_with_an_entity_per_entry(admin, owner_db):
    patient_url = f"urn:uuid:{uuid.uuid4()}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient_url,
                "resource": {"resourceType": "Patient"},
                "request": {"method": "POST", "url": "Patient"},
            },
            *[
                {
                    "resource": {
                        "resourceType": "Observation",
                        "status": "final",
                        "code": {"text": f"entry {n}"},
                        "subject": {"reference": patient_url},
                    },
                    "request": {"method": "POST", "url": "Observation"},
                }
                for n in range(3)
            ],
        ],
    }
    response, rid = call(admin, "POST", "", json=bundle)
    assert response.status_code == 200, response.text
    event = one_event(owner_db, rid)
    assert event["subtype"][0]["code"] == "transaction"
    assert len(references(event)) == 4
    patient = response.json()["entry"][0]["response"]["location"].split("/")[1]
    assert patients_named(event) == {patient}


def test_refusals_are_audited_as_minor_failures(server, admin, tokens, owner_db):
    mine, other = new_patient(admin), new_patient(admin)
    headers = {"Authorization": f"Bearer {tokens('patient/*.rs', mine)}"}
    with httpx.Client(base_url=f"{server.url}/t/alpha/fhir", headers=headers) as patient_app:
        response, rid = call(patient_app, "GET", f"/Patient/{other}")
    assert response.status_code == 403
    event = one_event(owner_db, rid)
    assert event["outcome"] == "4"
    assert other in patients_named(event)
    with httpx.Client(base_url=f"{server.url}/t/alpha/fhir") as anonymous:
        response, rid = call(
            anonymous, "GET", f"/Patient/{other}", headers={"Authorization": "Bearer nonsense"}
        )
    assert response.status_code == 401
    event = one_event(owner_db, rid)
    assert (event["type"]["code"], event["outcome"]) == ("110114", "4")


def test_break_glass_reason_is_recorded(admin, owner_db):
    patient = new_patient(admin)
    response, rid = call(admin, "GET", f"/Patient/{patient}", headers={"X-Break-Glass": "unconscious in ER"})
    assert response.status_code == 200
    purpose = one_event(owner_db, rid)["purposeOfEvent"][0]
    assert purpose["coding"][0]["code"] == "BTG"
    assert purpose["text"] == "unconscious in ER"


def test_audit_events_are_read_only_and_for_administrators(server, admin, tokens):
    patient = new_patient(admin)
    admin.get(f"/Patient/{patient}")
    found = admin.get(f"/AuditEvent?patient={patient}&subtype=read")
    assert found.status_code == 200, found.text
    entries = found.json()["entry"]
    assert entries and all(patient in patients_named(e["resource"]) for e in entries)
    event_id = entries[0]["resource"]["id"]
    assert admin.get(f"/AuditEvent/{event_id}").json() == entries[0]["resource"]
    forged = {**entries[0]["resource"], "outcome": "0"}
    assert admin.post("/AuditEvent", json=forged).status_code == 405
    assert admin.put(f"/AuditEvent/{event_id}", json=forged).status_code == 405
    assert admin.delete(f"/AuditEvent/{event_id}").status_code == 405
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": forged, "request": {"method": "PUT", "url": f"AuditEvent/{event_id}"}}],
    }
    assert admin.post("", json=bundle).status_code == 405
    headers = {"Authorization": f"Bearer {tokens('patient/*.rs', patient)}"}
    with httpx.Client(base_url=f"{server.url}/t/alpha/fhir", headers=headers) as patient_app:
        assert patient_app.get("/AuditEvent").status_code == 403
        assert patient_app.get(f"/AuditEvent/{event_id}").status_code == 403


def test_concurrent_requests_keep_one_unbroken_chain(admin, server, tokens):
    patient = new_patient(admin)
    failures = []

    def work() -> None:
        headers = {"Authorization": f"Bearer {tokens(ADMIN)}"}
        with httpx.Client(base_url=f"{server.url}/t/alpha/fhir", headers=headers, timeout=60) as client:
            for _ in range(8):
                created = client.post("/Observation", json=_observation(patient))
                read = client.get(f"/Patient/{patient}")
                if created.status_code != 201 or read.status_code != 200:
                    failures.append((created.status_code, read.status_code))

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    result = manage_command("verify_audit", "--tenant", "alpha")
    assert result.returncode == 0, result.stderr
    assert "intact" in result.stdout


def _observation(patient: str) -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "concurrent"},
        "subject": {"reference": f"Patient/{patient}"},
    }


def test_verify_audit_names_the_first_tampered_record(server, tokens, owner_db, unique_slug):
    run_manage("create_tenant", unique_slug)
    headers = {"Authorization": f"Bearer {tokens(ADMIN, tenant=unique_slug)}"}
    with httpx.Client(base_url=f"{server.url}/t/{unique_slug}/fhir", headers=headers) as client:
        patient = client.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
        for _ in range(4):
            assert client.get(f"/Patient/{patient}").status_code == 200
    schema = unique_slug
    assert manage_command("verify_audit", "--tenant", unique_slug).returncode == 0
    owner_db.execute(
        f'UPDATE {schema}.audit_record SET event = replace(event, \'"outcome":"0"\', \'"outcome":"4"\')'
        " WHERE seq = 3"
    )
    result = manage_command("verify_audit", "--tenant", unique_slug)
    assert result.returncode == 1
    assert "broken at record 3" in result.stderr
    owner_db.execute(f"DELETE FROM {schema}.audit_record WHERE seq >= 3")
    result = manage_command("verify_audit", "--tenant", unique_slug)
    assert result.returncode == 1
    assert "broken at record 3" in result.stderr


def test_runtime_role_cannot_rewrite_the_trail(runtime_db):
    runtime_db.execute("SELECT set_config('app.current_tenant', 'alpha', false)")
    with pytest.raises(Exception, match="permission denied"):
        runtime_db.execute("UPDATE alpha.audit_record SET outcome = 0")


def test_search_query_never_reaches_the_application_log(admin, server):
    secret = f"Secretfamily{uuid.uuid4().hex[:8]}"
    assert admin.get(f"/Patient?family={secret}").status_code == 200
    assert not any(secret in line for line in server.log_lines())


def test_development_mode_audits_as_development(fhir, owner_db):
    response, rid = call(fhir, "POST", "/Patient", json={"resourceType": "Patient"})
    assert response.status_code == 201
    user = next(a for a in one_event(owner_db, rid)["agent"] if a["requestor"])
    assert user["altId"] == "development"
