"""Chained and reverse-chained search over real HTTP
(http://hl7.org/fhir/R4/search.html#chaining, search.html#has).

Resources carry a unique marker (an identifier) and every search ANDs it in, as in test_search.
"""

import psycopg
import pytest

from tests.conftest import owner_url
from tests.support import MARK, make_marked

# What a search here reads. ANALYZEd before each search, as autovacuum would in production: the
# test database server may run without autovacuum, and chains are planned as nested semi-joins,
# which without statistics (every estimate 1 row) become nested loops that multiply per link.
TABLES = ("fhir_resource", "fhir_index_reference", "fhir_index_string", "fhir_index_token", "fhir_index_date")


def analyze() -> None:
    with psycopg.connect(owner_url(), autocommit=True) as conn:
        conn.execute(f"ANALYZE {', '.join('alpha.' + table for table in TABLES)}")


def search(fhir, marker: str, resource_type: str, params: list[tuple[str, str]]) -> set[str]:
    analyze()
    response = fhir.get(f"/{resource_type}", params=[("identifier", f"{MARK}|{marker}"), *params])
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert all(e["search"]["mode"] == "match" for e in bundle.get("entry", [])), "nothing may be ignored"
    return {e["resource"]["id"] for e in bundle.get("entry", [])}


def ids(fhir, marker: str, resource_type: str, **params) -> set[str]:
    return search(fhir, marker, resource_type, list(params.items()))


def ref(resource: dict) -> dict:
    return {"reference": f"{resource['resourceType']}/{resource['id']}"}


def patient(fhir, marker: str, given: str, family: str = "Smith", born: str = "1970-01-01") -> dict:
    return make_marked(
        fhir,
        marker,
        {"resourceType": "Patient", "name": [{"given": [given], "family": family}], "birthDate": born},
    )


def observation(fhir, marker: str, subject: dict, code: str = "1-1", **extra) -> dict:
    resource = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": ref(subject),
        **extra,
    }
    return make_marked(fhir, marker, resource)


@pytest.fixture
def people(fhir, marker) -> dict:
    """Peter Smith (1970) and Paul Jones (1990), one observation each."""
    peter = patient(fhir, marker, "Peter", born="1970-03-15")
    paul = patient(fhir, marker, "Paul", family="Jones", born="1990-07-01")
    return {
        "peter": peter,
        "paul": paul,
        "of_peter": observation(fhir, marker, peter, "2345-7"),
        "of_paul": observation(fhir, marker, paul, "29463-7"),
    }


def test_chain_with_explicit_and_inferred_type(fhir, marker, people):
    of_peter, of_paul = people["of_peter"]["id"], people["of_paul"]["id"]
    assert ids(fhir, marker, "Observation", **{"subject:Patient.name": "peter"}) == {of_peter}
    assert ids(fhir, marker, "Observation", **{"subject.name": "peter"}) == {of_peter}
    assert ids(fhir, marker, "Observation", **{"patient.name": "PAUL"}) == {of_paul}  # one target: Patient
    assert ids(fhir, marker, "Observation", **{"subject.name": "nobody"}) == set()


def test_chain_with_modifiers_and_prefixes(fhir, marker, people):
    of_peter, of_paul = people["of_peter"]["id"], people["of_paul"]["id"]
    assert ids(fhir, marker, "Observation", **{"subject:Patient.name:exact": "Peter"}) == {of_peter}
    assert ids(fhir, marker, "Observation", **{"subject:Patient.name:exact": "peter"}) == set()
    assert ids(fhir, marker, "Observation", **{"subject.birthdate": "1990"}) == {of_paul}
    assert ids(fhir, marker, "Observation", **{"subject.birthdate": "1970-03"}) == {of_peter}
    assert ids(fhir, marker, "Observation", **{"subject.family:missing": "false"}) == {of_peter, of_paul}
    assert ids(fhir, marker, "Observation", **{"subject._id": people["paul"]["id"]}) == {of_paul}


def test_or_within_a_chain_and_and_of_chains(fhir, marker, people):
    of_peter, of_paul = people["of_peter"]["id"], people["of_paul"]["id"]
    assert ids(fhir, marker, "Observation", **{"subject.name": "peter,paul"}) == {of_peter, of_paul}
    assert ids(fhir, marker, "Observation", **{"subject.birthdate": "1970,1990-07-01"}) == {of_peter, of_paul}
    both = [("subject.name", "peter,paul"), ("subject.birthdate", "1970-03")]
    assert search(fhir, marker, "Observation", both) == {of_peter}
    repeated = [("subject.name", "smith"), ("subject.name", "peter")]
    assert search(fhir, marker, "Observation", repeated) == {of_peter}
    mixed = [("subject.name", "peter,paul"), ("code", "29463-7")]
    assert search(fhir, marker, "Observation", mixed) == {of_paul}


def test_type_modifier_on_a_multi_target_reference(fhir, marker):
    shared = {"system": "urn:test:shared", "value": marker}
    person = make_marked(fhir, marker, {"resourceType": "Patient", "identifier": [shared]})
    group = make_marked(
        fhir, marker, {"resourceType": "Group", "type": "person", "actual": True, "identifier": [shared]}
    )
    of_person = observation(fhir, marker, person)["id"]
    of_group = observation(fhir, marker, group)["id"]
    token = f"urn:test:shared|{marker}"
    assert ids(fhir, marker, "Observation", **{"subject:Patient.identifier": token}) == {of_person}
    assert ids(fhir, marker, "Observation", **{"subject:Group.identifier": token}) == {of_group}
    # without :Type every target type with the parameter is searched
    assert ids(fhir, marker, "Observation", **{"subject.identifier": token}) == {of_person, of_group}


def test_multi_level_chain(fhir, marker):
    grandparent = make_marked(fhir, marker, {"resourceType": "Organization", "name": "Holding"})
    parent = make_marked(
        fhir, marker, {"resourceType": "Organization", "name": f"Parent {marker}", "partOf": ref(grandparent)}
    )
    clinic = make_marked(
        fhir, marker, {"resourceType": "Organization", "name": "Clinic", "partOf": ref(parent)}
    )
    other = make_marked(fhir, marker, {"resourceType": "Organization", "name": "Elsewhere"})
    person = patient(fhir, marker, "Ann")
    encounters = {
        org["name"]: make_marked(
            fhir,
            marker,
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": ref(person),
                "serviceProvider": ref(org),
            },
        )
        for org in (clinic, other)
    }
    at_clinic = observation(fhir, marker, person, encounter=ref(encounters["Clinic"]))["id"]
    observation(fhir, marker, person, encounter=ref(encounters["Elsewhere"]))
    assert ids(fhir, marker, "Observation", **{"encounter.service-provider.name": "clinic"}) == {at_clinic}
    three_links = {"encounter:Encounter.service-provider.partof.name": f"parent {marker}"}
    assert ids(fhir, marker, "Observation", **three_links) == {at_clinic}
    four_links = {"encounter.service-provider.partof.partof._id": grandparent["id"]}
    assert ids(fhir, marker, "Observation", **four_links) == {at_clinic}


def test_deleted_targets_do_not_match(fhir, marker, people):
    assert fhir.delete(f"/Patient/{people['peter']['id']}").status_code in (200, 204)
    assert ids(fhir, marker, "Observation", **{"subject.name": "peter,paul"}) == {people["of_paul"]["id"]}
    not_found = ids(fhir, marker, "Observation", **{"subject.name:missing": "true"})
    assert not_found == set()  # a dangling reference has no target to lack a name


def test_reverse_chain(fhir, marker, people):
    peter, paul = people["peter"]["id"], people["paul"]["id"]
    assert ids(fhir, marker, "Patient", **{"_has:Observation:patient:code": "2345-7"}) == {peter}
    assert ids(fhir, marker, "Patient", **{"_has:Observation:subject:code": "2345-7,29463-7"}) == {
        peter,
        paul,
    }
    assert ids(fhir, marker, "Patient", **{"_has:Observation:patient:code": "0000-0"}) == set()
    assert ids(fhir, marker, "Patient", **{"_has:Observation:patient:code:not": "2345-7"}) == {paul}
    both = [("_has:Observation:patient:code", "2345-7,29463-7"), ("birthdate", "1970")]
    assert search(fhir, marker, "Patient", both) == {peter}
    # a reverse chain ending in a chain
    assert ids(fhir, marker, "Patient", **{"_has:Observation:patient:subject.name": "paul"}) == {paul}


def test_reverse_chain_ignores_deleted_sources(fhir, marker, people):
    assert fhir.delete(f"/Observation/{people['of_peter']['id']}").status_code in (200, 204)
    assert ids(fhir, marker, "Patient", **{"_has:Observation:patient:code": "2345-7"}) == set()


def test_nested_reverse_chain(fhir, marker, people):
    make_marked(
        fhir,
        marker,
        {
            "resourceType": "DiagnosticReport",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "58410-2"}]},
            "result": [ref(people["of_paul"])],
        },
    )
    nested = {"_has:Observation:patient:_has:DiagnosticReport:result:code": "58410-2"}
    assert ids(fhir, marker, "Patient", **nested) == {people["paul"]["id"]}
    nested_miss = {"_has:Observation:patient:_has:DiagnosticReport:result:code": "0000-0"}
    assert ids(fhir, marker, "Patient", **nested_miss) == set()


def test_chains_in_conditional_criteria(fhir, marker, people):
    body = {"resourceType": "Observation", "status": "final", "code": {"text": "unused"}}
    criteria = f"identifier={MARK}|{marker}&subject.name=peter"
    analyze()
    response = fhir.post("/Observation", json=body, headers={"If-None-Exist": criteria})
    assert response.status_code == 200, response.text  # found: not created
    assert response.json()["id"] == people["of_peter"]["id"]


@pytest.mark.parametrize(
    ("resource_type", "name", "mentions"),
    [
        ("Observation", "subject.nonsense", "nonsense"),  # unknown final parameter
        ("Observation", "nonsense.name", "nonsense"),  # unknown reference parameter
        ("Observation", "code.name", "code"),  # chaining through a token
        ("Observation", "subject:Nonsense.name", "Nonsense"),  # unknown type
        ("Observation", "subject:Organization.name", "Organization"),  # not a target of subject
        ("Observation", "subject:missing.name", "missing"),
        ("Observation", "subject.name:nonsense", "name:nonsense"),  # unknown modifier at the end
        ("Observation", "subject.near", "near"),  # a special parameter cannot end a chain
        ("Observation", "encounter.service-provider.partof.partof.partof.name", "4"),  # too deep
        ("Patient", "_has", "_has:Type:reference:parameter"),
        ("Patient", "_has:Observation:patient", "_has:Type:reference:parameter"),
        ("Patient", "_has:Nonsense:patient:code", "Nonsense"),
        ("Patient", "_has:Observation:nonsense:code", "nonsense"),
        ("Patient", "_has:Observation:code:code", "code"),  # not a reference
        ("Patient", "_has:Observation:encounter:code", "encounter"),  # cannot point at a Patient
        ("Patient", "_has:Observation:patient:nonsense", "nonsense"),
    ],
)
def test_malformed_chains_are_400(fhir, resource_type, name, mentions):
    response = fhir.get(f"/{resource_type}", params={name: "x"})
    assert response.status_code == 400, response.text
    diagnostics = response.json()["issue"][0]["diagnostics"]
    assert name in diagnostics and mentions in diagnostics


def test_strict_handling_still_refuses_unknown_plain_parameters(fhir, marker, people):
    params = {"identifier": f"{MARK}|{marker}", "subject.name": "peter", "nonsense": "1"}
    analyze()
    strict = fhir.get("/Observation", params=params, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    assert "nonsense" in strict.json()["issue"][0]["diagnostics"]
    lenient = fhir.get("/Observation", params=params).json()
    assert [e["resource"]["id"] for e in lenient["entry"] if e["search"]["mode"] == "match"] == [
        people["of_peter"]["id"]
    ]
    outcome = [e for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
    assert "nonsense" in outcome[0]["resource"]["issue"][0]["diagnostics"]
