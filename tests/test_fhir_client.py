"""The API driven by a real FHIR client library from PyPI (fhirpy), against the live server."""

import uuid

from fhirpy import SyncFHIRClient


def test_fhirpy_create_read_update_search_delete(fhir_server):
    client = SyncFHIRClient(
        f"{fhir_server.url}/t/alpha/fhir", extra_headers={"Accept": "application/fhir+json"}
    )
    marker = uuid.uuid4().hex
    patient = client.resource(
        "Patient",
        name=[{"family": "Clientson", "given": ["Fhirpy"]}],
        identifier=[{"system": "urn:fhirpy", "value": marker}],
    )
    patient.save()
    assert patient.id
    assert patient["meta"]["versionId"] == "1"

    fetched = client.reference("Patient", patient.id).to_resource()
    assert fetched["name"][0]["family"] == "Clientson"

    fetched["gender"] = "female"
    fetched.save()
    assert fetched["meta"]["versionId"] == "2"

    found = client.resources("Patient").search(identifier=f"urn:fhirpy|{marker}").fetch_all()
    assert [p.id for p in found] == [patient.id]

    fetched.delete()
    assert client.resources("Patient").search(identifier=f"urn:fhirpy|{marker}").fetch_all() == []
