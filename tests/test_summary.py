"""_summary and _elements shaping (http://hl7.org/fhir/R4/search.html#summary, #elements)."""

import copy

import pytest

from fhirserver.formats.summary import SUBSETTED, select_elements, summarize

NARRATIVE = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Jane</div>'}

PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "meta": {"versionId": "2", "lastUpdated": "2024-01-01T00:00:00Z"},
    "text": NARRATIVE,
    "extension": [{"url": "http://example.org/eye-colour", "valueString": "blue"}],
    "identifier": [{"system": "http://example.org/mrn", "value": "123"}],
    "active": True,
    "name": [{"use": "official", "family": "Doe", "given": ["Jane"], "_given": [{"id": "g"}]}],
    "telecom": [{"system": "phone", "value": "555"}],
    "gender": "female",
    "birthDate": "1970-01-01",
    "_birthDate": {"extension": [{"url": "http://example.org/accuracy", "valueCode": "exact"}]},
    "maritalStatus": {"text": "married"},
    "photo": [{"contentType": "image/png", "data": "iVBORw0KGgo="}],
    "contact": [{"name": {"family": "Doe"}, "telecom": [{"system": "phone", "value": "556"}]}],
    "contained": [{"resourceType": "Organization", "id": "o1", "name": "Clinic"}],
    "managingOrganization": {"reference": "#o1", "display": "Clinic"},
}

OBSERVATION = {
    "resourceType": "Observation",
    "id": "o1",
    "text": NARRATIVE,
    "status": "final",
    "category": [{"text": "vital-signs"}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}], "text": "Heart rate"},
    "subject": {"reference": "Patient/p1"},
    "effectiveDateTime": "2024-01-01T10:00:00Z",
    "valueQuantity": {"value": 72, "unit": "beats/min", "extension": [{"url": "http://example.org/x"}]},
    "interpretation": [{"text": "normal"}],
    "note": [{"text": "resting"}],
    "referenceRange": [{"low": {"value": 60}}],
}


def tags(resource: dict) -> list[dict]:
    return resource.get("meta", {}).get("tag", [])


def test_true_keeps_summary_elements_of_patient():
    result = summarize(PATIENT, "true")
    assert set(result) == {
        "resourceType",
        "id",
        "meta",
        "identifier",
        "active",
        "name",
        "telecom",
        "gender",
        "birthDate",
        "_birthDate",
        "managingOrganization",
    }
    # HumanName's children are all summary, and the primitive companion follows its value.
    assert result["name"] == PATIENT["name"]
    assert result["meta"]["versionId"] == "2"


def test_true_cuts_inside_complex_types():
    result = summarize(OBSERVATION, "true")
    assert set(result) == {
        "resourceType",
        "id",
        "meta",
        "status",
        "code",
        "subject",
        "effectiveDateTime",
        "valueQuantity",
    }
    # Element.extension is not summary, so it goes from inside the Quantity.
    assert result["valueQuantity"] == {"value": 72, "unit": "beats/min"}


def test_true_keeps_mandatory_elements_that_are_not_marked_summary():
    event = {
        "resourceType": "AuditEvent",
        "type": {"code": "rest"},
        "recorded": "2024-01-01T00:00:00Z",
        "agent": [{"requestor": True, "who": {"reference": "Practitioner/1"}}],
        "source": {"observer": {"reference": "Device/1"}},
    }
    result = summarize(event, "true")
    assert result["agent"] == [{"requestor": True, "who": {"reference": "Practitioner/1"}}]
    assert result["source"] == {"observer": {"reference": "Device/1"}}


def test_true_keeps_modifier_extensions_whole():
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"modifierExtension": [{"url": "http://example.org/m", "valueBoolean": True}]}],
    }
    assert summarize(bundle, "true")["entry"] == bundle["entry"]


def test_true_on_bundle_keeps_entry_resources_whole():
    bundle = {
        "resourceType": "Bundle",
        "id": "b1",
        "type": "searchset",
        "total": 1,
        "entry": [
            {
                "id": "e1",
                "fullUrl": "http://example.org/Patient/p1",
                "resource": PATIENT,
                "search": {"mode": "match"},
            }
        ],
    }
    result = summarize(bundle, "true")
    # Bundle.entry.id is not summary; the resource inside is returned as it is.
    assert result["entry"] == [
        {"fullUrl": "http://example.org/Patient/p1", "resource": PATIENT, "search": {"mode": "match"}}
    ]
    assert tags(result) == [SUBSETTED]
    assert tags(result["entry"][0]["resource"]) == []


def test_text_keeps_text_id_meta_and_mandatory_elements():
    assert summarize(OBSERVATION, "text") == {
        "resourceType": "Observation",
        "id": "o1",
        "meta": {"tag": [SUBSETTED]},
        "text": NARRATIVE,
        "status": "final",
        "code": OBSERVATION["code"],
    }


def test_data_drops_only_text():
    result = summarize(PATIENT, "data")
    assert "text" not in result
    assert {key: value for key, value in result.items() if key != "meta"} == {
        key: value for key, value in PATIENT.items() if key not in ("text", "meta")
    }
    assert tags(result) == [SUBSETTED]


def test_false_returns_the_resource_untouched():
    assert summarize(PATIENT, "false") is PATIENT
    assert tags(PATIENT) == []


def test_nothing_removed_means_no_tag():
    patient = {key: value for key, value in PATIENT.items() if key != "text"}
    assert summarize(patient, "data") == patient
    assert "meta" not in summarize({"resourceType": "Patient", "gender": "male"}, "true")


@pytest.mark.parametrize("mode", ["count", "TRUE", ""])
def test_unknown_mode_is_an_error(mode):
    with pytest.raises(ValueError, match="_summary"):
        summarize(PATIENT, mode)


def test_elements_keeps_listed_and_mandatory_elements():
    result = select_elements(OBSERVATION, ["value", "note", "nonsense"])
    assert result == {
        "resourceType": "Observation",
        "id": "o1",
        "meta": {"tag": [SUBSETTED]},
        "status": "final",
        "code": OBSERVATION["code"],
        "valueQuantity": OBSERVATION["valueQuantity"],
        "note": OBSERVATION["note"],
    }


def test_elements_keeps_primitive_companions():
    result = select_elements(PATIENT, ["birthDate"])
    assert set(result) == {"resourceType", "id", "meta", "birthDate", "_birthDate"}


def test_subsetted_tag_is_added_once():
    tagged = summarize(PATIENT, "true")
    again = select_elements(tagged, ["name"])
    assert tags(again) == [SUBSETTED]
    already = {**PATIENT, "meta": {"tag": [{**SUBSETTED, "display": "subsetted"}, {"code": "other"}]}}
    assert tags(summarize(already, "data")) == already["meta"]["tag"]


def test_existing_tags_are_kept():
    patient = {**PATIENT, "meta": {"tag": [{"system": "http://example.org/tags", "code": "vip"}]}}
    assert tags(summarize(patient, "text")) == [
        {"system": "http://example.org/tags", "code": "vip"},
        SUBSETTED,
    ]


@pytest.mark.parametrize(
    "shape",
    [
        lambda r: summarize(r, "true"),
        lambda r: summarize(r, "text"),
        lambda r: summarize(r, "data"),
        lambda r: select_elements(r, ["name"]),
    ],
)
def test_input_is_not_mutated(shape):
    original = copy.deepcopy(PATIENT)
    result = shape(PATIENT)
    assert PATIENT == original
    assert result is not PATIENT
    assert result["meta"] is not PATIENT["meta"]
