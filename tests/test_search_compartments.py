"""Compartment search for every R4 compartment over real HTTP
(http://hl7.org/fhir/R4/compartmentdefinition.html#search: `Encounter/123/Observation`)."""

from tests.support import MARK, make_marked
from tests.test_search import observation


def found(fhir, path: str, marker: str, **params) -> set[str]:
    response = fhir.get(path, params={"identifier": f"{MARK}|{marker}", **params})
    assert response.status_code == 200, response.text
    return {e["resource"]["id"] for e in response.json().get("entry", []) if e["search"]["mode"] == "match"}


def test_encounter_practitioner_related_person_and_device_compartments(fhir, marker):
    encounter = make_marked(
        fhir, marker, {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}}
    )
    doctor = make_marked(fhir, marker, {"resourceType": "Practitioner", "name": [{"family": "Who"}]})
    device = make_marked(fhir, marker, {"resourceType": "Device"})
    patient = make_marked(fhir, marker, {"resourceType": "Patient"})
    mother = make_marked(
        fhir, marker, {"resourceType": "RelatedPerson", "patient": {"reference": f"Patient/{patient['id']}"}}
    )
    during = make_marked(
        fhir,
        marker,
        observation(
            "8310-5",
            encounter={"reference": f"Encounter/{encounter['id']}"},
            performer=[{"reference": f"Practitioner/{doctor['id']}"}],
            device={"reference": f"Device/{device['id']}"},
        ),
    )
    reported = make_marked(
        fhir, marker, observation("29463-7", performer=[{"reference": f"RelatedPerson/{mother['id']}"}])
    )
    assert found(fhir, f"/Encounter/{encounter['id']}/Observation", marker) == {during["id"]}
    assert found(fhir, f"/Encounter/{encounter['id']}/Observation", marker, code="29463-7") == set()
    assert found(fhir, f"/Encounter/{encounter['id']}/Encounter", marker) == {encounter["id"]}
    assert found(fhir, f"/Practitioner/{doctor['id']}/Observation", marker) == {during["id"]}
    assert found(fhir, f"/Practitioner/{doctor['id']}/Practitioner", marker) == {doctor["id"]}
    assert found(fhir, f"/Device/{device['id']}/Observation", marker) == {during["id"]}
    assert found(fhir, f"/RelatedPerson/{mother['id']}/Observation", marker) == {reported["id"]}
    assert found(fhir, f"/Patient/{patient['id']}/RelatedPerson", marker) == {mother["id"]}
    assert found(fhir, f"/Practitioner/{doctor['id']}/Observation", marker, _total="accurate") == {
        during["id"]
    }


def test_types_outside_a_compartment_and_unknown_compartments(fhir):
    assert fhir.get("/Encounter/x/Organization").status_code == 400
    unknown = fhir.get("/Location/x/Observation")
    assert unknown.status_code == 400 and "not a compartment" in unknown.text
