"""Composite parameters, reference :identifier, `near` and full text, over real HTTP
(http://hl7.org/fhir/R4/search.html#composite, #reference, #special, #text)."""

from tests.support import MARK, make_marked
from tests.test_search import ids

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def quantity(value: float, code: str = "mm[Hg]") -> dict:
    return {"value": value, "unit": code, "system": UCUM, "code": code}


def concept(code: str, system: str = LOINC) -> dict:
    return {"coding": [{"system": system, "code": code}]}


def blood_pressure(systolic: float, diastolic: float) -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": concept("85354-9"),
        "component": [
            {"code": concept("8480-6"), "valueQuantity": quantity(systolic)},
            {"code": concept("8462-4"), "valueQuantity": quantity(diastolic)},
        ],
    }


def test_component_code_value_quantity_matches_within_one_component(fhir, marker):
    high = make_marked(fhir, marker, blood_pressure(150, 95))
    # Systolic 90 with a diastolic of 120 must not match "systolic > 100": same occurrence only.
    crossed = make_marked(fhir, marker, blood_pressure(90, 120))
    search = "component-code-value-quantity"
    assert ids(fhir, marker, "Observation", **{search: f"{LOINC}|8480-6$gt100"}) == {high["id"]}
    assert ids(fhir, marker, "Observation", **{search: f"8480-6$gt100|{UCUM}|mm[Hg]"}) == {high["id"]}
    assert ids(fhir, marker, "Observation", **{search: "8480-6$gt100|http://other|mm[Hg]"}) == set()
    assert ids(fhir, marker, "Observation", **{search: "8462-4$ge100"}) == {crossed["id"]}
    assert ids(fhir, marker, "Observation", **{search: "8462-4$ge100,8480-6$ge150"}) == {
        high["id"],
        crossed["id"],
    }
    # combo-: the Observation itself or any component; ANDed occurrences may be different ones.
    assert ids(fhir, marker, "Observation", **{"combo-code-value-quantity": "8480-6$lt100"}) == {
        crossed["id"]
    }
    anded = [("identifier", f"{MARK}|{marker}"), (search, "8480-6$gt100"), (search, "8462-4$gt90")]
    response = fhir.get("/Observation", params=anded)
    assert response.status_code == 200
    assert {e["resource"]["id"] for e in response.json().get("entry", [])} == {high["id"]}


def test_code_value_composites_of_each_value_type(fhir, marker):
    weight = make_marked(
        fhir,
        marker,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": concept("29463-7"),
            "valueQuantity": quantity(72, "kg"),
        },
    )
    smoker = make_marked(
        fhir,
        marker,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": concept("72166-2"),
            "valueCodeableConcept": concept("449868002", "http://snomed.info/sct"),
        },
    )
    dated = make_marked(
        fhir,
        marker,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": concept("21112-8"),
            "valueDateTime": "1970-05-04",
        },
    )
    note = make_marked(
        fhir,
        marker,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": concept("8251-1"),
            "valueString": "Feeling well",
        },
    )
    assert ids(fhir, marker, "Observation", **{"code-value-quantity": f"{LOINC}|29463-7$72|{UCUM}|kg"}) == {
        weight["id"]
    }
    assert ids(fhir, marker, "Observation", **{"code-value-quantity": "29463-7$gt80"}) == set()
    # combo-: the Observation's own value counts as much as a component's.
    assert ids(fhir, marker, "Observation", **{"combo-code-value-quantity": "29463-7$72"}) == {weight["id"]}
    assert ids(
        fhir, marker, "Observation", **{"code-value-concept": "72166-2$http://snomed.info/sct|449868002"}
    ) == {smoker["id"]}
    assert ids(fhir, marker, "Observation", **{"code-value-concept": "72166-2$8517006"}) == set()
    assert ids(fhir, marker, "Observation", **{"code-value-date": "21112-8$1970"}) == {dated["id"]}
    assert ids(fhir, marker, "Observation", **{"code-value-date": "21112-8$gt1971"}) == set()
    assert ids(fhir, marker, "Observation", **{"code-value-string": "8251-1$feeling"}) == {note["id"]}
    # A code without the value the composite pairs it with matches nothing.
    assert ids(fhir, marker, "Observation", **{"code-value-string": "29463-7$7"}) == set()


def test_composite_errors_and_escaping(fhir, marker):
    response = fhir.get("/Observation", params={"code-value-quantity": "8480-6"})
    assert response.status_code == 400
    assert "separated by $" in response.text
    response = fhir.get("/Observation", params={"code-value-quantity": "8480-6$abc"})
    assert response.status_code == 400
    # An escaped \$ belongs to the component: here a code containing "$", which nothing has.
    assert ids(fhir, marker, "Observation", **{"code-value-string": "a\\$b$x"}) == set()


def test_composite_with_reference_component_and_capability_statement(fhir, marker):
    target = make_marked(
        fhir,
        marker,
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "content": [{"attachment": {"url": "http://x/a"}}],
        },
    )
    replacing = make_marked(
        fhir,
        marker,
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "content": [{"attachment": {"url": "http://x/b"}}],
            "relatesTo": [{"code": "replaces", "target": {"reference": f"DocumentReference/{target['id']}"}}],
        },
    )
    found = ids(fhir, marker, "DocumentReference", relationship=f"replaces$DocumentReference/{target['id']}")
    assert found == {replacing["id"]}
    assert (
        ids(fhir, marker, "DocumentReference", relationship=f"appends$DocumentReference/{target['id']}")
        == set()
    )
    statement = fhir.get("/metadata").json()
    observation = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Observation")
    listed = {p["name"]: p["type"] for p in observation["searchParam"]}
    assert listed["component-code-value-quantity"] == "composite"
    assert listed["code-value-concept"] == "composite"
    location = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Location")
    assert {"name": "near", "type": "special"}.items() <= {
        k: v for p in location["searchParam"] if p["name"] == "near" for k, v in p.items()
    }.items()


def test_reference_identifier_modifier(fhir, marker):
    logical = make_marked(
        fhir,
        marker,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": concept("1-1"),
            "subject": {"identifier": {"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345"}},
        },
    )
    make_marked(fhir, marker, {"resourceType": "Observation", "status": "final", "code": concept("1-1")})
    search = "subject:identifier"
    assert ids(fhir, marker, "Observation", **{search: "urn:oid:1.2.36.146.595.217.0.1|12345"}) == {
        logical["id"]
    }
    assert ids(fhir, marker, "Observation", **{search: "12345"}) == {logical["id"]}
    assert ids(fhir, marker, "Observation", **{search: "urn:other|12345"}) == set()
    assert ids(fhir, marker, "Observation", **{search: "12346"}) == set()


def location(name: str, latitude: float, longitude: float) -> dict:
    return {
        "resourceType": "Location",
        "name": name,
        "position": {"latitude": latitude, "longitude": longitude},
    }


def test_near_location(fhir, marker):
    amsterdam = make_marked(fhir, marker, location("Amsterdam", 52.3676, 4.9041))
    haarlem = make_marked(fhir, marker, location("Haarlem", 52.3874, 4.6462))  # ~17.6 km west
    make_marked(fhir, marker, location("Utrecht", 52.0907, 5.1214))  # ~35 km
    make_marked(fhir, marker, {"resourceType": "Location", "name": "Nowhere"})
    assert ids(fhir, marker, "Location", near="52.3676|4.9041|10|km") == {amsterdam["id"]}
    assert ids(fhir, marker, "Location", near="52.3676|4.9041|20|km") == {amsterdam["id"], haarlem["id"]}
    assert ids(fhir, marker, "Location", near="52.3676|4.9041|17000|m") == {amsterdam["id"]}
    assert ids(fhir, marker, "Location", near="52.3676|4.9041|12|[mi_i]") == {amsterdam["id"], haarlem["id"]}
    assert len(ids(fhir, marker, "Location", near="52.3676|4.9041|40")) == 3
    assert ids(fhir, marker, "Location", near="52.3676|4.9041") == {amsterdam["id"]}  # 10 km by default
    assert fhir.get("/Location", params={"near": "52|4|1|parsec"}).status_code == 400
    assert fhir.get("/Location", params={"near": "95|4"}).status_code == 400


def test_near_across_the_antimeridian_and_poles(fhir, marker):
    east = make_marked(fhir, marker, location("Taveuni", -16.85, 179.95))
    west = make_marked(fhir, marker, location("Across", -16.85, -179.95))
    pole = make_marked(fhir, marker, location("Pole", 89.99, 10))
    assert ids(fhir, marker, "Location", near="-16.85|179.99|20") == {east["id"], west["id"]}
    assert ids(fhir, marker, "Location", near="89.999|-170|5") == {pole["id"]}


def test_full_text_over_narrative_and_content(fhir, marker):
    narrative = '<div xmlns="http://www.w3.org/1999/xhtml">Patient reports <b>fever</b> &amp; chills</div>'
    feverish = make_marked(
        fhir,
        marker,
        {**observation_with("Body temperature"), "text": {"status": "generated", "div": narrative}},
    )
    other = make_marked(fhir, marker, observation_with("Heart rate"))
    assert ids(fhir, marker, "Observation", _text="fever") == {feverish["id"]}
    assert ids(fhir, marker, "Observation", _text="FEVER chills") == {feverish["id"]}
    assert ids(fhir, marker, "Observation", _text="fever -chills") == set()
    assert ids(fhir, marker, "Observation", _text="temperature") == set()  # not in the narrative
    assert ids(fhir, marker, "Observation", _content="temperature") == {feverish["id"]}
    assert ids(fhir, marker, "Observation", _content="heart or fever") == {feverish["id"], other["id"]}
    assert ids(fhir, marker, "Observation", _content="b") == set()  # markup is not content


def observation_with(display: str) -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "8310-5", "display": display}]},
    }


def test_full_text_is_refused_on_encrypted_types(fhir):
    for name in ("_text", "_content"):
        response = fhir.get("/Patient", params={name: "smith"})
        assert response.status_code == 400
        assert "encrypted" in response.text
    statement = fhir.get("/metadata").json()
    listed = {r["type"]: {p["name"] for p in r["searchParam"]} for r in statement["rest"][0]["resource"]}
    assert {"_text", "_content"} <= listed["Observation"]
    assert not {"_text", "_content"} & listed["Patient"]
