"""Patient $everything over real HTTP (http://hl7.org/fhir/R4/patient-operation-everything.html).

Each test builds its own patients, so the instance-level results are exactly known; the
all-patients form sees every test's data and is checked for inclusion and exclusion only.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import owner_url

SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthea" / "smart-synthea-2019"
EVERYTHING_DEFINITION = "http://hl7.org/fhir/OperationDefinition/Patient-everything"


def create(fhir, resource: dict) -> dict:
    response = fhir.post(f"/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    return response.json()


def ref(resource: dict) -> dict:
    return {"reference": f"{resource['resourceType']}/{resource['id']}"}


def key(resource: dict) -> tuple[str, str]:
    return resource["resourceType"], resource["id"]


def observation(patient: dict, code: str, **extra) -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": ref(patient),
        **extra,
    }


def encounter(patient: dict, practitioner: dict, organization: dict) -> dict:
    return {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": ref(patient),
        "participant": [{"individual": ref(practitioner)}],
        "serviceProvider": ref(organization),
    }


@pytest.fixture
def record(fhir) -> dict:
    """Peter's record, and Quinn's next to it that must never show in Peter's $everything.

    Peter: 3 observations (one performed by Alice), an encounter with Bob at Acme, a medication
    request for aspirin written by Bob. Quinn: an observation and an encounter with Carol at
    Other Org. One of Peter's observations names Quinn's encounter (another patient's data).
    Dave is referenced by no one.
    """
    made = {
        name: create(fhir, {"resourceType": "Practitioner"}) for name in ("alice", "bob", "carol", "dave")
    }
    made["acme"] = create(fhir, {"resourceType": "Organization", "name": "Acme"})
    made["other_org"] = create(fhir, {"resourceType": "Organization", "name": "Other Org"})
    made["aspirin"] = create(fhir, {"resourceType": "Medication", "code": {"text": "aspirin"}})
    made["peter"] = create(fhir, {"resourceType": "Patient", "name": [{"family": "Peter"}]})
    made["quinn"] = create(fhir, {"resourceType": "Patient", "name": [{"family": "Quinn"}]})
    made["quinn_encounter"] = create(fhir, encounter(made["quinn"], made["carol"], made["other_org"]))
    made["quinn_obs"] = create(fhir, observation(made["quinn"], "8867-4"))
    made["encounter"] = create(fhir, encounter(made["peter"], made["bob"], made["acme"]))
    made["obs1"] = create(fhir, observation(made["peter"], "8310-5", performer=[ref(made["alice"])]))
    made["obs2"] = create(fhir, observation(made["peter"], "8462-4", encounter=ref(made["encounter"])))
    made["obs3"] = create(fhir, observation(made["peter"], "8480-6", encounter=ref(made["quinn_encounter"])))
    made["request"] = create(
        fhir,
        {
            "resourceType": "MedicationRequest",
            "status": "active",
            "intent": "order",
            "subject": ref(made["peter"]),
            "medicationReference": ref(made["aspirin"]),
            "requester": ref(made["bob"]),
        },
    )
    return made


def peters_everything(record: dict) -> set[tuple[str, str]]:
    names = ("peter", "obs1", "obs2", "obs3", "encounter", "request", "alice", "bob", "acme", "aspirin")
    return {key(record[name]) for name in names}


def all_pages(fhir, path: str, params: dict | None = None) -> list[dict]:
    """Every match entry, following next links; checks each page is a well-formed searchset."""
    entries, url, pages = [], path, 0
    while url:
        response = fhir.get(url, params=params if url == path else None)
        assert response.status_code == 200, response.text
        bundle = response.json()
        assert bundle["type"] == "searchset"
        entries += [e for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
        pages += 1
        assert pages < 10_000
    return entries


def keys(entries: list[dict]) -> list[tuple[str, str]]:
    return [key(e["resource"]) for e in entries]


def everything(fhir, patient: dict, **params) -> set[tuple[str, str]]:
    found = keys(all_pages(fhir, f"/Patient/{patient['id']}/$everything", params))
    assert len(found) == len(set(found)), "each resource once"
    return set(found)


def test_patient_compartment_and_what_it_references(fhir, record):
    response = fhir.get(f"/Patient/{record['peter']['id']}/$everything")
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    found = keys(bundle["entry"])
    assert set(found) == peters_everything(record)
    assert found == sorted(found), "ordered by type and id"
    base = str(fhir.base_url).rstrip("/")
    assert all(e["fullUrl"] == f"{base}/{t}/{i}" for e, (t, i) in zip(bundle["entry"], found, strict=True))
    assert all(e["search"]["mode"] == "match" for e in bundle["entry"])


def test_another_patients_data_never_appears(fhir, record):
    found = everything(fhir, record["peter"])
    for name in ("quinn", "quinn_obs", "quinn_encounter", "carol", "other_org", "dave"):
        assert key(record[name]) not in found, name
    assert everything(fhir, record["quinn"]) == {
        key(record[name]) for name in ("quinn", "quinn_obs", "quinn_encounter", "carol", "other_org")
    }


def test_paging_with_count_2_collects_exactly_the_record(fhir, record):
    path = f"/Patient/{record['peter']['id']}/$everything"
    pages, url = [], path
    while url:
        bundle = fhir.get(url, params={"_count": 2} if url == path else None).json()
        pages.append(keys(bundle.get("entry", [])))
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    assert all(len(page) <= 2 for page in pages)
    collected = [k for page in pages for k in page]
    assert collected == sorted(collected)
    assert len(collected) == len(set(collected)) == len(peters_everything(record))
    assert set(collected) == peters_everything(record)


def test_count_0_returns_no_entries(fhir, record):
    bundle = fhir.get(f"/Patient/{record['peter']['id']}/$everything", params={"_count": 0}).json()
    assert bundle.get("entry", []) == []
    assert [link["relation"] for link in bundle["link"]] == ["self"]


def test_since_keeps_what_changed_at_or_after_it(fhir, record):
    time.sleep(0.01)  # lastUpdated has millisecond precision: the update must come strictly later
    changed = fhir.put(f"/Observation/{record['obs2']['id']}", json={**record["obs2"], "status": "amended"})
    assert changed.status_code == 200, changed.text
    since = changed.json()["meta"]["lastUpdated"]
    assert everything(fhir, record["peter"], _since=since) == {key(record["obs2"])}
    assert everything(fhir, record["peter"], _since="2000-01-01T00:00:00Z") == peters_everything(record)
    assert everything(fhir, record["peter"], _since="3000-01-01T00:00:00Z") == set()


def test_type_restricts_the_types_returned(fhir, record):
    peter = record["peter"]
    observations = {key(record[name]) for name in ("obs1", "obs2", "obs3")}
    assert everything(fhir, peter, _type="Observation") == observations
    assert everything(fhir, peter, _type="Observation,Practitioner") == observations | {
        key(record["alice"]),
        key(record["bob"]),
    }
    assert everything(fhir, peter, _type="Patient") == {key(peter)}
    assert everything(fhir, peter, _type="Medication,Organization") == {
        key(record["aspirin"]),
        key(record["acme"]),
    }


@pytest.mark.parametrize(
    "params",
    [{"_type": "Observation,NotAType"}, {"_type": ""}, {"_since": "yesterday"}, {"_count": "-1"}],
)
def test_bad_parameters_are_refused(fhir, record, params):
    response = fhir.get(f"/Patient/{record['peter']['id']}/$everything", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


def test_unknown_and_deleted_patients(fhir, record):
    unknown = fhir.get("/Patient/no-such-patient/$everything")
    assert unknown.status_code == 404
    assert unknown.json()["issue"][0]["code"] == "not-found"
    assert fhir.delete(f"/Patient/{record['quinn']['id']}").status_code in (200, 204)
    gone = fhir.get(f"/Patient/{record['quinn']['id']}/$everything")
    assert gone.status_code == 410
    assert gone.json()["resourceType"] == "OperationOutcome"


def test_deleted_resources_and_what_only_they_referenced_are_gone(fhir, record):
    assert fhir.delete(f"/Observation/{record['obs1']['id']}").status_code in (200, 204)
    assert everything(fhir, record["peter"]) == peters_everything(record) - {
        key(record["obs1"]),
        key(record["alice"]),  # only obs1 named her
    }


def test_only_patient_is_supported(fhir, record):
    response = fhir.get(f"/Observation/{record['obs1']['id']}/$everything")
    assert response.status_code == 400
    assert response.json()["issue"][0]["code"] == "not-supported"


def test_unknown_parameters_are_ignored_or_refused_when_strict(fhir, record):
    path = f"/Patient/{record['peter']['id']}/$everything"
    bundle = fhir.get(path, params={"frobnicate": "1", "start": "2020", "end": "2021"}).json()
    assert {
        key(e["resource"]) for e in bundle["entry"] if e["search"]["mode"] == "match"
    } == peters_everything(record)
    outcomes = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert len(outcomes) == 1 and "frobnicate" in outcomes[0]["issue"][0]["diagnostics"]
    strict = fhir.get(path, params={"frobnicate": "1"}, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400


def test_post_with_parameters_body_and_without_body(fhir, record):
    path = f"/Patient/{record['peter']['id']}/$everything"
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_type", "valueCode": "Observation,Patient"},
            {"name": "_count", "valueInteger": 2},
        ],
    }
    first = fhir.post(path, json=body, headers={"Content-Type": "application/fhir+json"})
    assert first.status_code == 200, first.text
    bundle = first.json()
    assert len(bundle["entry"]) == 2
    next_url = next(link["url"] for link in bundle["link"] if link["relation"] == "next")
    # The next page is a GET carrying the body's parameters.
    rest = all_pages(fhir, next_url)
    expected = {key(record[name]) for name in ("peter", "obs1", "obs2", "obs3")}
    assert set(keys(bundle["entry"])) | set(keys(rest)) == expected
    bare = fhir.post(path)
    assert bare.status_code == 200, bare.text
    assert set(keys(bare.json()["entry"])) == peters_everything(record)
    wrong = fhir.post(path, json={"resourceType": "Patient"})
    assert wrong.status_code == 400


def test_all_patients_form_pages_through_everyone(fhir, record):
    found = keys(all_pages(fhir, "/Patient/$everything", {"_count": 500}))
    assert len(found) == len(set(found)), "each resource once"
    assert found == sorted(found)
    everyone = peters_everything(record) | {
        key(record[name]) for name in ("quinn", "quinn_obs", "quinn_encounter", "carol", "other_org")
    }
    assert everyone <= set(found)
    assert key(record["dave"]) not in found, "referenced by no one"
    restricted = set(keys(all_pages(fhir, "/Patient/$everything", {"_type": "Practitioner", "_count": 2})))
    assert {key(record[n]) for n in ("alice", "bob", "carol")} <= restricted
    assert key(record["dave"]) not in restricted
    assert {t for t, _ in restricted} == {"Practitioner"}


def test_capability_statement_lists_patient_everything(fhir):
    statement = fhir.get("/metadata").json()
    operations = {op["name"]: op["definition"] for op in statement["rest"][0]["operation"]}
    assert operations["everything"] == EVERYTHING_DEFINITION
    assert operations["validate"] == "http://hl7.org/fhir/OperationDefinition/Resource-validate"


def analyze() -> None:
    """Statistics, as autovacuum would keep them (the test server may run without it)."""
    tables = ("fhir_resource", "fhir_index_reference")
    with psycopg.connect(owner_url(), autocommit=True) as conn:
        conn.execute(f"ANALYZE {', '.join('alpha.' + table for table in tables)}")


def test_synthea_patient_everything_returns_the_whole_bundle(fhir):
    path = sorted(SYNTHEA.glob("*.json.gz"))[0]
    bundle = json.loads(gzip.decompress(path.read_bytes()))
    response = fhir.post("", json=bundle)
    assert response.status_code == 200, response.text[:2000]
    # Every entry is this patient's data or an Organization/Practitioner it references.
    created = {tuple(e["response"]["location"].split("/")[:2]) for e in response.json()["entry"]}
    patient_id = next(i for t, i in created if t == "Patient")
    analyze()
    found = keys(all_pages(fhir, f"/Patient/{patient_id}/$everything", {"_count": 1000}))
    assert len(found) == len(set(found))
    assert set(found) == created
    assert len(created) > 500, "more than one batch of the streamed record (STREAM_BATCH)"

    # Without _count: the whole record in one streamed Bundle, the same entries in the same order.
    for encoding in ("identity", "gzip"):
        streamed = fhir.get(
            f"/Patient/{patient_id}/$everything", params={"bogus": "1"}, headers={"Accept-Encoding": encoding}
        )
        assert streamed.status_code == 200
        assert streamed.headers.get("Content-Length") is None, "streamed, not buffered"
        assert streamed.headers.get("Content-Encoding") == (None if encoding == "identity" else "gzip")
        bundle = streamed.json()
        assert [link["relation"] for link in bundle["link"]] == ["self"]
        assert keys([e for e in bundle["entry"] if e["search"]["mode"] == "match"]) == found
        assert bundle["entry"][-1]["search"]["mode"] == "outcome", "the ignored parameter, reported last"

    # Entries that must be shaped one by one are paged at the default page size instead.
    shaped = fhir.get(f"/Patient/{patient_id}/$everything", params={"_elements": "id"}).json()
    assert len(shaped["entry"]) == 50 and "next" in [link["relation"] for link in shaped["link"]]
