"""batch and transaction Bundles over real HTTP, and the Synthea data loading as-is."""

import base64
import gzip
import json
import uuid
from pathlib import Path

import pytest

from tests.support import manage_command

SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthea"


def transaction(entries: list[dict], kind: str = "transaction") -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def post_entry(resource: dict, full_url: str | None = None, **request) -> dict:
    entry = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"], **request}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def count(fhir, resource_type: str, **params) -> int:
    return fhir.get(f"/{resource_type}", params={"_summary": "count", **params}).json()["total"]


def test_transaction_resolves_urn_uuid_references_also_in_contained(fhir):
    patient_url = f"urn:uuid:{uuid.uuid4()}"
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight"},
        "subject": {"reference": patient_url},
        "contained": [
            {"resourceType": "Specimen", "id": "s1", "subject": {"reference": patient_url}},
        ],
        "specimen": {"reference": "#s1"},
    }
    bundle = transaction([post_entry(observation), post_entry({"resourceType": "Patient"}, patient_url)])
    response = fhir.post("", json=bundle)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "transaction-response"
    observation_entry, patient_entry = body["entry"]
    assert patient_entry["response"]["status"] == "201 Created"
    patient_id = patient_entry["resource"]["id"]
    stored = observation_entry["resource"]
    assert stored["subject"]["reference"] == f"Patient/{patient_id}"
    assert stored["contained"][0]["subject"]["reference"] == f"Patient/{patient_id}"
    assert stored["specimen"]["reference"] == "#s1"
    assert fhir.get(f"/Patient/{patient_id}").status_code == 200


def test_transaction_is_all_or_nothing(fhir):
    marker = uuid.uuid4().hex
    good = post_entry({"resourceType": "Patient", "identifier": [{"system": "urn:t", "value": marker}]})
    bad = post_entry({"resourceType": "Observation", "status": "final"})  # code is required
    response = fhir.post("", json=transaction([good, bad]))
    assert response.status_code == 422, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "Bundle.entry[1]" in outcome["issue"][0]["diagnostics"]
    assert count(fhir, "Patient", identifier=f"urn:t|{marker}") == 0


def test_transaction_conditional_create_and_conditional_reference(fhir):
    npi = uuid.uuid4().hex
    practitioner = {"resourceType": "Practitioner", "identifier": [{"system": "urn:npi", "value": npi}]}
    first = fhir.post(
        "", json=transaction([post_entry(practitioner, ifNoneExist=f"identifier=urn:npi|{npi}")])
    )
    assert first.json()["entry"][0]["response"]["status"] == "201 Created"
    again = fhir.post(
        "", json=transaction([post_entry(practitioner, ifNoneExist=f"identifier=urn:npi|{npi}")])
    )
    assert again.json()["entry"][0]["response"]["status"] == "200 OK"
    practitioner_id = first.json()["entry"][0]["resource"]["id"]
    encounter = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"code": "AMB"},
        "participant": [{"individual": {"reference": f"Practitioner?identifier=urn:npi|{npi}"}}],
    }
    created = fhir.post("", json=transaction([post_entry(encounter)])).json()
    assert created["entry"][0]["resource"]["participant"][0]["individual"]["reference"] == (
        f"Practitioner/{practitioner_id}"
    )
    missing = {
        **encounter,
        "participant": [{"individual": {"reference": "Practitioner?identifier=urn:npi|none"}}],
    }
    response = fhir.post("", json=transaction([post_entry(missing)]))
    assert response.status_code == 412


def test_transaction_processes_deletes_before_creates_and_updates(fhir):
    created = fhir.post("/Patient", json={"resourceType": "Patient"}).json()
    resource_id = "tx-" + uuid.uuid4().hex
    bundle = transaction(
        [
            {
                "resource": {"resourceType": "Patient", "id": resource_id},
                "request": {"method": "PUT", "url": f"Patient/{resource_id}"},
            },
            {"request": {"method": "DELETE", "url": f"Patient/{created['id']}"}},
            {"request": {"method": "GET", "url": f"Patient/{created['id']}/_history/1"}},
        ]
    )
    response = fhir.post("", json=bundle)
    assert response.status_code == 200, response.text
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses == ["201 Created", "204 No Content", "200 OK"]
    assert fhir.get(f"/Patient/{created['id']}").status_code == 410


def test_batch_entries_succeed_or_fail_on_their_own(fhir):
    marker = uuid.uuid4().hex
    good = post_entry({"resourceType": "Patient", "identifier": [{"system": "urn:b", "value": marker}]})
    bad = post_entry({"resourceType": "Patient", "birthDate": "yesterday"})
    response = fhir.post("", json=transaction([bad, good], kind="batch"))
    assert response.status_code == 200
    first, second = response.json()["entry"]
    assert first["response"]["status"].startswith("400")
    assert first["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert second["response"]["status"] == "201 Created"
    assert count(fhir, "Patient", identifier=f"urn:b|{marker}") == 1


@pytest.mark.parametrize(
    "body",
    [
        {"resourceType": "Bundle", "type": "collection"},
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"resource": {"resourceType": "Patient"}}],
        },
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"request": {"method": "POST", "url": "Patient"}}],
        },
        {"resourceType": "Patient"},
    ],
)
def test_malformed_bundles_are_refused(fhir, body):
    response = fhir.post("", json=body)
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


def read_bundle(path: Path) -> dict:
    return json.loads(gzip.decompress(path.read_bytes()))


def test_synthea_bundles_post_as_is_over_http(fhir):
    folder = SYNTHEA / "smart-synthea-2019"
    path = sorted(folder.glob("*.json.gz"))[0]
    bundle = read_bundle(path)
    response = fhir.post("", content=json.dumps(bundle), headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == 200, response.text[:2000]
    entries = response.json()["entry"]
    assert len(entries) == len(bundle["entry"])
    assert all(e["response"]["status"] == "201 Created" for e in entries)


def test_whole_synthea_set_loads_with_matching_counts(owner_db, unique_slug):
    """All 52 files, the 60 MB transaction included, in the order the data README gives."""
    assert manage_command("create_tenant", unique_slug).returncode == 0
    blaze = sorted((SYNTHEA / "blaze-synthea-2021").glob("*.json.gz"))
    big = SYNTHEA / "blaze-big-tx"
    ordered = [*blaze, *sorted(big.glob("0-missing-targets-*.json.gz")), *sorted(big.glob("ff*.json.gz"))]
    ordered += sorted((SYNTHEA / "smart-synthea-2019").glob("*.json.gz"))
    result = manage_command("load_bundles", "--tenant", unique_slug, *map(str, ordered))
    assert result.returncode == 0, result.stderr[-3000:]
    expected: dict[str, int] = {}
    for item in json.loads((SYNTHEA / "MANIFEST.json").read_text()):
        for resource_type, n in item["resource_counts"].items():
            expected[resource_type] = expected.get(resource_type, 0) + n
    for path in big.glob("0-missing-targets-*.json.gz"):  # not in the manifest: written for this data set
        for entry in read_bundle(path)["entry"]:
            resource_type = entry["resource"]["resourceType"]
            expected[resource_type] = expected.get(resource_type, 0) + 1
    rows = owner_db.execute(
        f'SELECT resource_type, count(*) FROM "{unique_slug}".fhir_resource GROUP BY resource_type'
    ).fetchall()
    assert dict(rows) == expected
    assert sum(expected.values()) == 62718 + 3
    manage_command("delete_tenant", unique_slug, "--yes")


def test_transaction_patch_entry_with_json_patch_binary(fhir):
    created = fhir.post("/Patient", json={"resourceType": "Patient"}).json()
    ops = json.dumps([{"op": "add", "path": "/gender", "value": "unknown"}]).encode()
    binary = {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(ops).decode(),
    }
    entry = {
        "resource": binary,
        "request": {"method": "PATCH", "url": f"Patient/{created['id']}", "ifMatch": 'W/"1"'},
    }
    response = fhir.post("", json=transaction([entry]))
    assert response.status_code == 200, response.text
    assert response.json()["entry"][0]["response"]["status"] == "200 OK"
    assert fhir.get(f"/Patient/{created['id']}").json()["gender"] == "unknown"
    stale = fhir.post("", json=transaction([entry]))
    assert stale.status_code == 412
