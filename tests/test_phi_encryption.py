"""Field-level encryption of PHI and its blind indexes (issue 6, items 1 and 2), over real HTTP.

The database is read as its owner, the way someone with a copy of it would: no plaintext name,
birth date, SSN or contact data in current rows, history or search indexes. Blind-index searches
are compared with the same searches on a tenant written with encryption off.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import secrets
import uuid
from pathlib import Path

import httpx
import pytest
from django.db import connection

from fhirserver.storage import keyring
from tests.conftest import DEVELOPMENT_AUTH
from tests.support import manage_command, start_server

SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthea" / "smart-synthea-2019"
SSN = "http://hl7.org/fhir/sid/us-ssn"


def crafted_patients() -> list[dict]:
    """Patients exercising accents, several names, coarse birth dates and every telecom kind."""
    return [
        {
            "resourceType": "Patient",
            "id": "crafted-sanchez",
            "name": [{"family": "Sánchez", "given": ["Ana", "María"]}, {"use": "maiden", "family": "Ortiz"}],
            "birthDate": "1970-03-15",
            "identifier": [{"system": SSN, "value": "999-12-3456"}, {"system": "urn:mrn", "value": "M1"}],
            "telecom": [
                {"system": "phone", "value": "555-0100"},
                {"system": "email", "value": "ana@example.org"},
            ],
            "address": [{"city": "Zaragoza", "postalCode": "50001"}],
        },
        {
            "resourceType": "Patient",
            "id": "crafted-sanders",
            "name": [{"family": "Sanders", "given": ["Bob"]}],
            "birthDate": "1970",
            "identifier": [{"system": "urn:mrn", "value": "M2"}],
            "telecom": [{"system": "phone", "value": "555-0199"}],
            "address": [{"city": "Boston", "postalCode": "02125"}],
        },
        {"resourceType": "Patient", "id": "crafted-nameless", "birthDate": "1970-03", "gender": "other"},
    ]


def synthea_patients() -> list[dict]:
    found = []
    for path in sorted(SYNTHEA.glob("*.json.gz")):
        bundle = json.loads(gzip.decompress(path.read_bytes()))
        found += [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    return found


def queries(patients: list[dict]) -> list[dict]:
    """Searches derived from the data, over every blind-indexed parameter and form."""
    found = [
        {"name": "san"},
        {"name": "SANCH"},
        {"name": "maria"},
        {"family:exact": "Sánchez"},
        {"family:exact": "sánchez"},
        {"birthdate": "1970"},
        {"birthdate": "1970-03"},
        {"birthdate": "1970-03-15"},
        {"identifier": f"{SSN}|"},
        {"identifier": "|M1"},
        {"identifier:not": "urn:mrn|M1"},
        {"telecom": "phone|555-0100"},
        {"email": "ana@example.org"},
        {"phone": "555-0199"},
        {"family:missing": "true"},
        {"address-city": "zar"},
    ]
    for patient in patients:
        name = patient.get("name", [{}])[0]
        family, given = name.get("family", ""), (name.get("given") or [""])[0]
        found += [{"family": family[:3]}, {"family": family}, {"given": given.lower()}]
        found += [{"name": f"{given[:2]},{family[:4]}"}, {"family": family[:4], "given": given[:1]}]
        if birth := patient.get("birthDate"):
            found += [{"birthdate": birth}, {"birthdate": birth[:7]}, {"birthdate": birth[:4]}]
        for identifier in patient.get("identifier", []):
            found += [{"identifier": f"{identifier.get('system', '')}|{identifier['value']}"}]
            found += [{"identifier": identifier["value"]}]
            for coding in identifier.get("type", {}).get("coding", []):
                of_type = f"{coding['system']}|{coding['code']}|{identifier['value']}"
                found.append({"identifier:of-type": of_type})
        for telecom in patient.get("telecom", []):
            found += [{"telecom": telecom["value"]}, {telecom["system"]: telecom["value"]}]
        for address in patient.get("address", []):
            if code := address.get("postalCode"):
                found += [{"address-postalcode": code}, {"address-postalcode": code[:3]}]
    return found


@pytest.fixture(scope="module")
def plain_server(django_db_setup, tmp_path_factory):
    """A server storing PHI unencrypted (PHI_ENCRYPTION_ENABLED=0): the reference for searches."""
    env = {**DEVELOPMENT_AUTH, "PHI_ENCRYPTION_ENABLED": "0"}
    running = start_server(tmp_path_factory.mktemp("plain") / "server.log", workers=1, env=env)
    yield running
    running.stop()


def new_tenant() -> str:
    slug = "phi" + uuid.uuid4().hex[:8]
    result = manage_command("create_tenant", slug)
    assert result.returncode == 0, result.stderr
    return slug


def put_all(client: httpx.Client, patients: list[dict]) -> None:
    for patient in patients:
        response = client.put(f"/Patient/{patient['id']}", json=patient)
        assert response.status_code in (200, 201), response.text


def matching(client: httpx.Client, params: dict, ids: list[str]) -> set[str]:
    response = client.get("/Patient", params={**params, "_id": ",".join(ids), "_count": "100"})
    assert response.status_code == 200, (params, response.text)
    return {entry["resource"]["id"] for entry in response.json().get("entry", [])}


def test_blind_index_searches_match_the_plaintext_searches(fhir_server, plain_server):
    patients = crafted_patients() + synthea_patients()
    ids = [patient["id"] for patient in patients]
    encrypted_tenant, plain_tenant = new_tenant(), new_tenant()
    with (
        httpx.Client(base_url=f"{fhir_server.url}/t/{encrypted_tenant}/fhir", timeout=60) as encrypted,
        httpx.Client(base_url=f"{plain_server.url}/t/{plain_tenant}/fhir", timeout=60) as plain,
    ):
        put_all(encrypted, patients)
        put_all(plain, patients)
        compared = 0
        for params in queries(patients):
            expected = matching(plain, params, ids)
            assert matching(encrypted, params, ids) == expected, params
            compared += bool(expected)
        assert compared > 40  # most queries find something: the comparison is not of empty sets
        for patient in patients[:3]:
            served = encrypted.get(f"/Patient/{patient['id']}").json()
            assert {k: v for k, v in served.items() if k not in ("meta", "text")} == {
                k: v for k, v in patient.items() if k not in ("meta", "text")
            }


def test_the_database_holds_no_plaintext_phi(fhir, owner_db):
    secret = uuid.uuid4().hex[:10]
    family, given, ssn, phone = f"Fam{secret}", f"Giv{secret}", f"999-{secret[:2]}-{secret[2:6]}", secret
    mrn = uuid.uuid4().hex
    patient = {
        "resourceType": "Patient",
        "gender": "female",
        "name": [{"family": family, "given": [given]}],
        "birthDate": "1961-07-29",
        "identifier": [{"system": SSN, "value": ssn}, {"system": "urn:mrn", "value": mrn}],
        "telecom": [{"system": "phone", "value": phone}],
        "address": [{"line": [f"1 {secret} Street"], "postalCode": "90210"}],
        "text": {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{family}</div>'},
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
                "valueString": secret,
            },
            {"url": "http://example.org/not-identifying", "valueString": "kept"},
        ],
    }
    created = fhir.post("/Patient", json=patient).json()
    pid = created["id"]
    updated = fhir.put(f"/Patient/{pid}", json={**created, "birthDate": "1961-07-30"})
    assert updated.status_code == 200

    rows = owner_db.execute(
        "SELECT content FROM alpha.fhir_resource WHERE resource_id = %s UNION ALL"
        " SELECT content FROM alpha.fhir_resource_version WHERE resource_id = %s",
        [pid, pid],
    ).fetchall()
    assert len(rows) == 3
    for (content,) in rows:
        for plaintext in (family, given, ssn, phone, "1961-07-29", "1961-07-30", secret, "90210"):
            assert plaintext not in content
        assert '"gender":"female"' in content and mrn in content  # not PHI by the policy
        assert '"valueString":"kept"' in content
    for table, column in (
        ("fhir_index_string", "original"),
        ("fhir_index_token", "code"),
        ("fhir_index_identifier_type", "value"),
    ):
        leaked = owner_db.execute(
            f"SELECT count(*) FROM alpha.{table} WHERE resource_id = %s AND {column} LIKE %s",
            [pid, f"%{secret}%"],
        ).fetchone()[0]
        assert leaked == 0, table
    birth_rows = owner_db.execute(
        "SELECT count(*) FROM alpha.fhir_index_date WHERE resource_id = %s AND param = 'birthdate'", [pid]
    ).fetchone()[0]
    assert birth_rows == 0
    assert (
        owner_db.execute(
            "SELECT count(*) FROM alpha.fhir_index_blind WHERE resource_id = %s", [pid]
        ).fetchone()[0]
        > 20
    )

    # Every read path serves the plaintext: read, vread, history, search, $everything.
    served = fhir.get(f"/Patient/{pid}").json()
    assert served["name"][0]["family"] == family
    assert served["extension"] == patient["extension"] and family in served["text"]["div"]
    assert fhir.get(f"/Patient/{pid}/_history/1").json()["birthDate"] == "1961-07-29"
    history = fhir.get(f"/Patient/{pid}/_history").json()
    assert [e["resource"]["birthDate"] for e in history["entry"]] == ["1961-07-30", "1961-07-29"]
    found = fhir.get("/Patient", params={"identifier": f"{SSN}|{ssn}"}).json()
    assert [e["resource"]["identifier"][0]["value"] for e in found["entry"]] == [ssn]
    everything = fhir.get(f"/Patient/{pid}/$everything").json()
    assert everything["entry"][0]["resource"]["telecom"][0]["value"] == phone


def test_a_ciphertext_moved_elsewhere_does_not_decrypt(fhir_server, owner_db):
    """Tampered rows live in tenants of their own: any search listing them fails (500), by design."""
    tenant, other = new_tenant(), new_tenant()
    with httpx.Client(base_url=f"{fhir_server.url}/t/{tenant}/fhir", timeout=30) as client:
        first = client.post(
            "/Patient", json={"resourceType": "Patient", "name": [{"family": "Moved"}]}
        ).json()
        second = client.post(
            "/Patient", json={"resourceType": "Patient", "name": [{"family": "Kept"}]}
        ).json()
        owner_db.execute(
            f"UPDATE {tenant}.fhir_resource SET content = jsonb_set(content::jsonb, '{{name}}',"
            f" (SELECT content::jsonb -> 'name' FROM {tenant}.fhir_resource"
            "  WHERE resource_type = 'Patient' AND resource_id = %s))::text"
            " WHERE resource_type = 'Patient' AND resource_id = %s",
            [first["id"], second["id"]],
        )
        response = client.get(f"/Patient/{second['id']}")
        assert response.status_code == 500
        assert response.json()["issue"][0]["diagnostics"] == "Stored data could not be decrypted"
        assert "Moved" not in response.text
        assert client.get(f"/Patient/{first['id']}").status_code == 200

    # The same resource id in another tenant: that tenant's key cannot open the ciphertext.
    with httpx.Client(base_url=f"{fhir_server.url}/t/{other}/fhir", timeout=30) as client:
        copy = {k: v for k, v in first.items() if k != "meta"}
        assert client.put(f"/Patient/{first['id']}", json=copy).status_code == 201
        owner_db.execute(
            f"UPDATE {other}.fhir_resource SET content = (SELECT content FROM {tenant}.fhir_resource"
            " WHERE resource_type = 'Patient' AND resource_id = %s)"
            " WHERE resource_type = 'Patient' AND resource_id = %s",
            [first["id"], first["id"]],
        )
        assert client.get(f"/Patient/{first['id']}").status_code == 500


def test_another_tenants_key_does_not_open_a_ciphertext():
    connection.set_schema("alpha")
    token = keyring.seal(b'"secret"', b"Patient/1/name")
    assert keyring.open_sealed(token, b"Patient/1/name") == b'"secret"'
    with pytest.raises(keyring.UndecryptableError):
        keyring.open_sealed(token, b"Patient/2/name")
    for mangled in (token[:-3], token.rsplit(":", 1)[0] + ":AAAA", token.rsplit(":", 1)[0] + ":not*b64"):
        with pytest.raises(keyring.UndecryptableError):
            keyring.open_sealed(mangled, b"Patient/1/name")
    connection.set_schema("beta")
    with pytest.raises(keyring.UndecryptableError):
        keyring.open_sealed(token, b"Patient/1/name")


def test_rotation_reencrypts_everything_and_resumes(fhir_server, plain_server, owner_db, tmp_path):
    tenant = new_tenant()
    old_key = keyring.current_key_id()
    with httpx.Client(base_url=f"{fhir_server.url}/t/{tenant}/fhir", timeout=30) as client:
        for n in range(5):
            created = client.post(
                "/Patient", json={"resourceType": "Patient", "name": [{"family": f"Rot{n}"}]}
            )
            client.put(f"/Patient/{created.json()['id']}", json={**created.json(), "birthDate": "2001-02-03"})
    with httpx.Client(base_url=f"{plain_server.url}/t/{tenant}/fhir", timeout=30) as client:
        plain = client.post(
            "/Patient", json={"resourceType": "Patient", "name": [{"family": "Plainwritten"}]}
        )
    assert (
        "Plainwritten"
        in owner_db.execute(f"SELECT string_agg(content, '') FROM {tenant}.fhir_resource").fetchone()[0]
    )

    new_master = base64.b64encode(secrets.token_bytes(32)).decode()
    rotating = {"PHI_MASTER_KEY": new_master, "PHI_RETIRED_MASTER_KEYS": os.environ["PHI_MASTER_KEY"]}
    partial = manage_command(
        "rotate_phi_key", "--tenant", tenant, "--batch-size", "3", "--max-batches", "2", env=rotating
    )
    assert partial.returncode == 0, partial.stderr
    assert _count_under(owner_db, tenant, old_key) > 0  # interrupted halfway
    finished = manage_command("rotate_phi_key", "--tenant", tenant, "--batch-size", "3", env=rotating)
    assert finished.returncode == 0, finished.stderr
    assert _count_under(owner_db, tenant, old_key) == 0
    contents = owner_db.execute(
        f"SELECT string_agg(content, '') FROM (SELECT content FROM {tenant}.fhir_resource"
        f" UNION ALL SELECT content FROM {tenant}.fhir_resource_version) c"
    ).fetchone()[0]
    assert "Plainwritten" not in contents and "Rot0" not in contents

    # A server with the new key alone reads everything, and finds the formerly plain patient.
    server = start_server(
        tmp_path / "rotated.log", workers=1, env={**DEVELOPMENT_AUTH, "PHI_MASTER_KEY": new_master}
    )
    try:
        with httpx.Client(base_url=f"{server.url}/t/{tenant}/fhir", timeout=30) as client:
            bundle = client.get("/Patient", params={"_count": "50"}).json()
            families = sorted(e["resource"]["name"][0]["family"] for e in bundle["entry"])
            assert families == ["Plainwritten", "Rot0", "Rot1", "Rot2", "Rot3", "Rot4"]
            found = client.get("/Patient", params={"family": "plainwr"}).json()
            assert [e["resource"]["id"] for e in found["entry"]] == [plain.json()["id"]]
            versions = client.get("/Patient/_history", params={"_count": "50"}).json()
            assert all("birthDate" in e["resource"] or e["resource"]["name"] for e in versions["entry"])
    finally:
        server.stop()


def _count_under(owner_db, tenant: str, kid: str) -> int:
    return owner_db.execute(
        f"SELECT (SELECT count(*) FROM {tenant}.fhir_resource WHERE content LIKE %s)"
        f" + (SELECT count(*) FROM {tenant}.fhir_resource_version WHERE content LIKE %s)",
        [f"%phi:1:{kid}:%", f"%phi:1:{kid}:%"],
    ).fetchone()[0]


def test_what_blind_indexes_cannot_answer_is_refused(fhir):
    for params in (
        {"name:contains": "an"},
        {"birthdate": "gt1970"},
        {"_sort": "family"},
        {"identifier:text": "x"},
    ):
        response = fhir.get("/Patient", params=params)
        assert response.status_code == 400, params
        assert response.json()["resourceType"] == "OperationOutcome"
    lookalike = {"resourceType": "Patient", "language": "phi:1:abcdefgh:AAAA"}
    refused = fhir.post("/Patient", json=lookalike)
    assert refused.status_code == 400 and "reserved" in refused.text


def test_related_person_and_person_are_encrypted_too(fhir, owner_db):
    family = "Rel" + uuid.uuid4().hex[:8]
    patient = fhir.post("/Patient", json={"resourceType": "Patient"}).json()
    related = fhir.post(
        "/RelatedPerson",
        json={
            "resourceType": "RelatedPerson",
            "patient": {"reference": f"Patient/{patient['id']}"},
            "name": [{"family": family}],
        },
    ).json()
    person = fhir.post("/Person", json={"resourceType": "Person", "name": [{"family": family}]}).json()
    stored = owner_db.execute(
        "SELECT string_agg(content, '') FROM alpha.fhir_resource WHERE resource_id = ANY(%s)",
        [[related["id"], person["id"]]],
    ).fetchone()[0]
    assert family not in stored
    for resource_type, created in (("RelatedPerson", related), ("Person", person)):
        found = fhir.get(f"/{resource_type}", params={"name": family.lower()}).json()
        assert [e["resource"]["id"] for e in found["entry"]] == [created["id"]]
