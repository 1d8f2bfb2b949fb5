"""Search semantics over real HTTP (http://hl7.org/fhir/R4/search.html).

Every test creates its own resources carrying a unique marker (an identifier), and searches
with that marker ANDed in, so tests never see each other's data.
"""

import pytest

from tests.support import MARK, make_marked


def ids(fhir, marker: str, resource_type: str, **params) -> set[str]:
    response = fhir.get(f"/{resource_type}", params={"identifier": f"{MARK}|{marker}", **params})
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["type"] == "searchset"
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}


def observation(code: str, value: float | None = None, **extra) -> dict:
    resource = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": f"Code {code}"}]},
        **extra,
    }
    if value is not None:
        resource["valueQuantity"] = {
            "value": value,
            "unit": "kg",
            "system": "http://unitsofmeasure.org",
            "code": "kg",
        }
    return resource


def test_string_starts_with_exact_contains_accents(fhir, marker):
    # Practitioner: Patient names are encrypted and searched through blind indexes (test_phi_encryption).
    sanchez = make_marked(
        fhir, marker, {"resourceType": "Practitioner", "name": [{"family": "Sánchez", "given": ["Ana"]}]}
    )
    other = make_marked(fhir, marker, {"resourceType": "Practitioner", "name": [{"family": "Sanders"}]})
    assert ids(fhir, marker, "Practitioner", family="sanch") == {sanchez["id"]}
    assert ids(fhir, marker, "Practitioner", family="SAN") == {sanchez["id"], other["id"]}
    assert ids(fhir, marker, "Practitioner", **{"family:exact": "Sánchez"}) == {sanchez["id"]}
    assert ids(fhir, marker, "Practitioner", **{"family:exact": "sánchez"}) == set()
    assert ids(fhir, marker, "Practitioner", **{"name:contains": "nche"}) == {sanchez["id"]}
    assert ids(fhir, marker, "Practitioner", name="ana") == {sanchez["id"]}


def test_token_forms_and_modifiers(fhir, marker):
    glucose = make_marked(fhir, marker, observation("2345-7"))
    weight = make_marked(fhir, marker, observation("29463-7"))
    assert ids(fhir, marker, "Observation", code="http://loinc.org|2345-7") == {glucose["id"]}
    assert ids(fhir, marker, "Observation", code="2345-7") == {glucose["id"]}
    assert ids(fhir, marker, "Observation", code="|2345-7") == set()
    assert ids(fhir, marker, "Observation", code="http://loinc.org|") == {glucose["id"], weight["id"]}
    assert ids(fhir, marker, "Observation", code="2345-7,29463-7") == {glucose["id"], weight["id"]}
    assert ids(fhir, marker, "Observation", **{"code:not": "2345-7"}) == {weight["id"]}
    assert ids(fhir, marker, "Observation", **{"code:text": "code 2345"}) == {glucose["id"]}


def test_identifier_of_type(fhir, marker):
    mrn = {
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
        "system": "urn:mrn",
        "value": "M-" + marker,
    }
    patient = make_marked(fhir, marker, {"resourceType": "Patient", "identifier": [mrn]})
    query = f"http://terminology.hl7.org/CodeSystem/v2-0203|MR|M-{marker}"
    assert ids(fhir, marker, "Patient", **{"identifier:of-type": query}) == {patient["id"]}


def test_date_prefixes_and_precision(fhir, marker):
    early = make_marked(fhir, marker, observation("1-1", effectiveDateTime="1970-03-15"))
    late = make_marked(fhir, marker, observation("1-1", effectiveDateTime="1990-07-01"))
    both = {early["id"], late["id"]}
    assert ids(fhir, marker, "Observation", date="1970") == {early["id"]}
    assert ids(fhir, marker, "Observation", date="1970-03") == {early["id"]}
    assert ids(fhir, marker, "Observation", date="eq1970-03-15") == {early["id"]}
    assert ids(fhir, marker, "Observation", date="ne1970-03-15") == {late["id"]}
    assert ids(fhir, marker, "Observation", date="gt1980") == {late["id"]}
    assert ids(fhir, marker, "Observation", date="lt1980") == {early["id"]}
    assert ids(fhir, marker, "Observation", date="ge1990-07-01") == {late["id"]}
    assert ids(fhir, marker, "Observation", date="le1970-03-15") == {early["id"]}
    assert ids(fhir, marker, "Observation", date="sa1980") == {late["id"]}
    assert ids(fhir, marker, "Observation", date="eb1980") == {early["id"]}
    assert ids(fhir, marker, "Observation", date="ap1970-03-16") == {early["id"]}
    # repeated parameter = AND: a range
    response = fhir.get(
        "/Observation",
        params=[("identifier", f"{MARK}|{marker}"), ("date", "ge1960"), ("date", "lt2000")],
    )
    assert {e["resource"]["id"] for e in response.json()["entry"]} == both


def test_date_on_periods_and_datetimes(fhir, marker):
    at = make_marked(fhir, marker, observation("1-1", effectiveDateTime="2020-05-05T10:00:00+02:00"))
    span = make_marked(
        fhir, marker, observation("1-2", effectivePeriod={"start": "2020-05-01", "end": "2020-05-31"})
    )
    assert ids(fhir, marker, "Observation", date="2020-05-05") == {at["id"]}
    assert ids(fhir, marker, "Observation", date="2020-05") == {at["id"], span["id"]}
    assert ids(fhir, marker, "Observation", date="gt2020-05-10") == {span["id"]}


def test_quantity_and_number(fhir, marker):
    light = make_marked(fhir, marker, observation("29463-7", 60.5))
    heavy = make_marked(fhir, marker, observation("29463-7", 99))
    assert ids(fhir, marker, "Observation", **{"value-quantity": "60.5"}) == {light["id"]}
    assert ids(fhir, marker, "Observation", **{"value-quantity": "60"}) == set()  # precision: [59.5, 60.5)
    assert ids(fhir, marker, "Observation", **{"value-quantity": "61"}) == {light["id"]}  # [60.5, 61.5)
    assert ids(fhir, marker, "Observation", **{"value-quantity": "gt70"}) == {heavy["id"]}
    assert ids(fhir, marker, "Observation", **{"value-quantity": "le60.5|http://unitsofmeasure.org|kg"}) == {
        light["id"]
    }
    assert ids(fhir, marker, "Observation", **{"value-quantity": "99||kg"}) == {heavy["id"]}
    assert ids(fhir, marker, "Observation", **{"value-quantity": "99||g"}) == set()
    assert ids(fhir, marker, "Observation", **{"value-quantity": "ap100"}) == {heavy["id"]}


def test_reference_forms(fhir, marker):
    patient = make_marked(fhir, marker, {"resourceType": "Patient"})
    group = make_marked(fhir, marker, {"resourceType": "Group", "type": "person", "actual": True})
    of_patient = make_marked(
        fhir, marker, observation("3-1", subject={"reference": f"Patient/{patient['id']}"})
    )
    of_group = make_marked(fhir, marker, observation("3-2", subject={"reference": f"Group/{group['id']}"}))
    assert ids(fhir, marker, "Observation", subject=f"Patient/{patient['id']}") == {of_patient["id"]}
    assert ids(fhir, marker, "Observation", subject=patient["id"]) == {of_patient["id"]}
    assert ids(fhir, marker, "Observation", patient=patient["id"]) == {of_patient["id"]}
    assert ids(fhir, marker, "Observation", **{"subject:Group": group["id"]}) == {of_group["id"]}
    assert ids(fhir, marker, "Observation", patient=f"Group/{group['id']}") == set()
    absolute = f"{fhir.base_url}/Patient/{patient['id']}"
    assert ids(fhir, marker, "Observation", subject=absolute) == {of_patient["id"]}


def test_uri_below_and_above(fhir, marker):
    vs = make_marked(
        fhir, marker, {"resourceType": "ValueSet", "status": "active", "url": "http://example.org/fhir/vs/a"}
    )
    assert ids(fhir, marker, "ValueSet", url="http://example.org/fhir/vs/a") == {vs["id"]}
    assert ids(fhir, marker, "ValueSet", **{"url:below": "http://example.org/fhir"}) == {vs["id"]}
    assert ids(fhir, marker, "ValueSet", **{"url:above": "http://example.org/fhir/vs/a/b"}) == {vs["id"]}
    assert ids(fhir, marker, "ValueSet", url="http://example.org/fhir") == set()


def test_missing(fhir, marker):
    born = make_marked(fhir, marker, {"resourceType": "Patient", "birthDate": "2001-01-01"})
    unborn = make_marked(fhir, marker, {"resourceType": "Patient"})
    assert ids(fhir, marker, "Patient", **{"birthdate:missing": "true"}) == {unborn["id"]}
    assert ids(fhir, marker, "Patient", **{"birthdate:missing": "false"}) == {born["id"]}


def test_common_parameters(fhir, marker):
    tagged = make_marked(
        fhir,
        marker,
        {
            "resourceType": "Patient",
            "meta": {
                "tag": [{"system": "urn:tags", "code": "vip"}],
                "profile": ["http://example.org/StructureDefinition/p"],
            },
        },
    )
    plain = make_marked(fhir, marker, {"resourceType": "Patient"})
    assert ids(fhir, marker, "Patient", _tag="urn:tags|vip") == {tagged["id"]}
    assert ids(fhir, marker, "Patient", _profile="http://example.org/StructureDefinition/p") == {tagged["id"]}
    assert ids(fhir, marker, "Patient", _id=plain["id"]) == {plain["id"]}
    assert ids(fhir, marker, "Patient", _lastUpdated=f"ge{tagged['meta']['lastUpdated']}") >= {tagged["id"]}


def test_sort_and_keyset_paging(fhir, marker):
    made = [
        make_marked(fhir, marker, observation("1-1", effectiveDateTime=f"19{n}0-01-01")) for n in range(5, 10)
    ]
    page = fhir.get(
        "/Observation", params={"identifier": f"{MARK}|{marker}", "_sort": "-date", "_count": 2}
    ).json()
    seen = [e["resource"]["effectiveDateTime"] for e in page["entry"]]
    while next_links := [link["url"] for link in page["link"] if link["relation"] == "next"]:
        # a resource written meanwhile must not shift the pages
        make_marked(fhir, marker, observation("1-1", effectiveDateTime="2000-01-01")) if len(
            seen
        ) == 2 else None
        page = fhir.get(next_links[0]).json()
        seen += [e["resource"]["effectiveDateTime"] for e in page.get("entry", [])]
    assert seen[:5] == sorted((m["effectiveDateTime"] for m in made), reverse=True)
    assert "2000-01-01" not in seen[:5]


def test_total_and_summary_count(fhir, marker):
    for _ in range(3):
        make_marked(fhir, marker, {"resourceType": "Patient"})
    counted = fhir.get("/Patient", params={"identifier": f"{MARK}|{marker}", "_summary": "count"}).json()
    assert counted["total"] == 3 and "entry" not in counted
    accurate = fhir.get("/Patient", params={"identifier": f"{MARK}|{marker}", "_total": "accurate"}).json()
    assert accurate["total"] == 3


def test_total_estimate_is_the_planners(fhir, marker):
    for _ in range(3):
        make_marked(fhir, marker, observation("8310-5"))
    estimate = fhir.get(
        "/Observation", params={"identifier": f"{MARK}|{marker}", "_total": "estimate"}
    ).json()
    assert isinstance(estimate["total"], int) and estimate["total"] >= 1  # the planner never says 0
    assert len(estimate["entry"]) == 3
    everything = fhir.get("/Observation", params={"_total": "estimate", "_summary": "count"}).json()
    assert everything["total"] >= 1 and "entry" not in everything


def test_unknown_parameters_are_reported_or_refused(fhir, marker):
    make_marked(fhir, marker, {"resourceType": "Patient"})
    lenient = fhir.get("/Patient", params={"identifier": f"{MARK}|{marker}", "nonsense": "1"}).json()
    outcome = [e for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
    assert "nonsense" in outcome[0]["resource"]["issue"][0]["diagnostics"]
    strict = fhir.get("/Patient", params={"nonsense": "1"}, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400


@pytest.mark.parametrize(
    "params",
    [
        {"birthdate": "notadate"},
        {"birthdate": "xx2020"},
        {"birthdate": "2020-13-01"},
        {"_count": "-1"},
        {"_sort": "nonsense"},
        {"_total": "maybe"},
        {"birthdate:missing": "perhaps"},
        {"value-quantity": "abc"},
    ],
)
def test_malformed_values_are_400(fhir, params):
    resource_type = "Observation" if "value-quantity" in params else "Patient"
    response = fhir.get(f"/{resource_type}", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


def test_post_search_and_compartment(fhir, marker):
    patient = make_marked(fhir, marker, {"resourceType": "Patient", "gender": "female"})
    obs = make_marked(fhir, marker, observation("4-1", subject={"reference": f"Patient/{patient['id']}"}))
    response = fhir.post("/Patient/_search", data={"identifier": f"{MARK}|{marker}", "gender": "female"})
    assert response.status_code == 200, response.text
    assert [e["resource"]["id"] for e in response.json()["entry"]] == [patient["id"]]
    compartment = fhir.get(f"/Patient/{patient['id']}/Observation").json()
    assert [e["resource"]["id"] for e in compartment["entry"]] == [obs["id"]]
    assert fhir.get(f"/Patient/{patient['id']}/Organization").status_code == 400


def test_system_search_with_type(fhir, marker):
    patient = make_marked(fhir, marker, {"resourceType": "Patient"})
    obs = make_marked(fhir, marker, observation("5-1"))
    response = fhir.get(
        "", params={"_type": "Patient,Observation", "identifier": f"{MARK}|{marker}", "_count": 1}
    )
    assert response.status_code == 200, response.text
    first = response.json()
    seen = [e["resource"]["id"] for e in first["entry"]]
    next_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    seen += [e["resource"]["id"] for e in fhir.get(next_url).json()["entry"]]
    assert seen == [obs["id"], patient["id"]]  # ordered by type, then id
    assert fhir.get("", params={"identifier": "x"}).status_code == 400


def test_summary_and_elements_shape_search_matches(fhir, marker):
    make_marked(
        fhir,
        marker,
        {
            "resourceType": "Patient",
            "gender": "male",
            "birthDate": "1999-09-09",
            "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'},
        },
    )
    bundle = fhir.get("/Patient", params={"identifier": f"{MARK}|{marker}", "_elements": "gender"}).json()
    (resource,) = [e["resource"] for e in bundle["entry"]]
    assert resource["gender"] == "male" and "birthDate" not in resource
    assert resource["meta"]["tag"][0]["code"] == "SUBSETTED"
    summary = fhir.get("/Patient", params={"identifier": f"{MARK}|{marker}", "_summary": "true"}).json()
    assert "text" not in summary["entry"][0]["resource"]


def test_count_zero_returns_no_entries_and_no_next_page(fhir, marker):
    make_marked(fhir, marker, {"resourceType": "Patient"})
    bundle = fhir.get("/Patient", params={"identifier": f"{MARK}|{marker}", "_count": 0}).json()
    assert "entry" not in bundle
    assert not any(link["relation"] == "next" for link in bundle["link"])
    assert fhir.get("/Patient/_history", params={"_count": 0}).status_code == 200


def test_previous_links_walk_back_the_same_pages(fhir, marker):
    for n in range(5):
        make_marked(fhir, marker, observation("1-1", effectiveDateTime=f"198{n}-01-01"))
    params = {"identifier": f"{MARK}|{marker}", "_sort": "date", "_count": 2}

    def dates(bundle: dict) -> list[str]:
        return [e["resource"]["effectiveDateTime"] for e in bundle.get("entry", [])]

    def link(bundle: dict, relation: str) -> str | None:
        return next((x["url"] for x in bundle["link"] if x["relation"] == relation), None)

    pages = [fhir.get("/Observation", params=params).json()]
    assert link(pages[0], "previous") is None
    while link(pages[-1], "next"):
        pages.append(fhir.get(link(pages[-1], "next")).json())
    assert [dates(p) for p in pages] == [
        ["1980-01-01", "1981-01-01"],
        ["1982-01-01", "1983-01-01"],
        ["1984-01-01"],
    ]
    back = fhir.get(link(pages[-1], "previous")).json()
    assert dates(back) == ["1982-01-01", "1983-01-01"]
    first = fhir.get(link(back, "previous")).json()
    assert dates(first) == ["1980-01-01", "1981-01-01"]
    assert link(first, "previous") is None
    assert dates(fhir.get(link(first, "next")).json()) == ["1982-01-01", "1983-01-01"]


def test_unsupported_token_modifiers_are_reported_not_guessed(fhir, marker):
    make_marked(fhir, marker, observation("6-1"))
    bundle = fhir.get(
        "/Observation", params={"identifier": f"{MARK}|{marker}", "code:in": "http://example.org/vs"}
    ).json()
    outcome = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert "code:in" in outcome[0]["resource"]["issue"][0]["diagnostics"]
    strict = fhir.get("/Observation", params={"code:below": "6"}, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
