"""_include and _revinclude (http://hl7.org/fhir/R4/search.html#include) over HTTP."""

import uuid

MARK = "urn:test:include"


def make(fhir, resource: dict) -> dict:
    response = fhir.post(f"/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    return response.json()


def entries(bundle: dict, mode: str) -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == mode
    }


def test_include_revinclude_and_iterate(fhir):
    marker = uuid.uuid4().hex
    org = make(fhir, {"resourceType": "Organization", "name": "Clinic"})
    patient = make(
        fhir, {"resourceType": "Patient", "managingOrganization": {"reference": f"Organization/{org['id']}"}}
    )
    medication = make(fhir, {"resourceType": "Medication", "code": {"text": "aspirin"}})
    request = make(
        fhir,
        {
            "resourceType": "MedicationRequest",
            "status": "active",
            "intent": "order",
            "identifier": [{"system": MARK, "value": marker}],
            "medicationReference": {"reference": f"Medication/{medication['id']}"},
            "subject": {"reference": f"Patient/{patient['id']}"},
        },
    )
    provenance = make(
        fhir,
        {
            "resourceType": "Provenance",
            "recorded": "2020-01-01T00:00:00Z",
            "target": [{"reference": f"MedicationRequest/{request['id']}"}],
            "agent": [{"who": {"reference": f"Organization/{org['id']}"}}],
        },
    )
    query = {"identifier": f"{MARK}|{marker}"}

    bundle = fhir.get(
        "/MedicationRequest", params={**query, "_include": "MedicationRequest:medication"}
    ).json()
    assert entries(bundle, "match") == {f"MedicationRequest/{request['id']}"}
    assert entries(bundle, "include") == {f"Medication/{medication['id']}"}

    bundle = fhir.get("/MedicationRequest", params={**query, "_revinclude": "Provenance:target"}).json()
    assert entries(bundle, "include") == {f"Provenance/{provenance['id']}"}

    everything = fhir.get("/MedicationRequest", params={**query, "_include": "MedicationRequest:*"}).json()
    assert entries(everything, "include") == {f"Medication/{medication['id']}", f"Patient/{patient['id']}"}

    iterated = fhir.get(
        "/MedicationRequest",
        params=[
            ("identifier", f"{MARK}|{marker}"),
            ("_include", "MedicationRequest:subject"),
            ("_include:iterate", "Patient:organization"),
        ],
    ).json()
    assert entries(iterated, "include") == {f"Patient/{patient['id']}", f"Organization/{org['id']}"}

    typed = fhir.get(
        "/MedicationRequest", params={**query, "_include": "MedicationRequest:subject:Group"}
    ).json()
    assert entries(typed, "include") == set()


def test_bad_includes_are_400(fhir):
    for value in (
        "MedicationRequest",
        "Nope:subject",
        "MedicationRequest:status",
        "MedicationRequest:subject:Nope",
    ):
        response = fhir.get("/MedicationRequest", params={"_include": value})
        assert response.status_code == 400, value
