"""SMART scopes enforced on FHIR interactions (fhirserver.api.authorization), over HTTP with
access tokens from `manage.py issue_token`, on tenant alpha of a server in standalone auth mode.

Two patients, A (the launch patient of patient-level tokens) and B, each with Observations; a
Practitioner who performed observations of both. Every test compares what a token sees with what
the administrator (system/*.*) sees of the same data.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import orjson
import pytest

from fhirserver.api.authorization import named
from tests.smart_support import run_manage

LAB = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
VITALS = "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"
MARK = "urn:test:scopes"


Client = httpx.Client
ClientFor = Callable[..., Client]


@dataclass
class World:
    client_for: ClientFor  # (scopes, patient=None, fhir_user=None) -> a client with such a token
    marker: str
    patient_a: str
    patient_b: str
    practitioner: str
    lab_a: str
    vitals_a: str
    lab_b: str
    encounter_a: str
    rare_code: str  # the code of lab_b only

    def as_patient_a(self, scopes: str) -> Client:
        return self.client_for(scopes, patient=self.patient_a)


def category(token: str) -> list[dict]:
    system, code = token.split("|")
    return [{"coding": [{"system": system, "code": code}]}]


def create(client: Client, resource: dict) -> str:
    response = client.post(f"/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def observation(world_marker: str, patient: str, token: str, code: str, practitioner: str) -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": MARK, "value": world_marker}],
        "category": category(token),
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "performer": [{"reference": f"Practitioner/{practitioner}"}],
    }


ADMIN = "system/*.*"  # what the development context grants


@pytest.fixture(scope="module")
def client_for(server):
    """Clients of tenant alpha's FHIR API, each with a token of the given scopes and context."""
    tokens: dict[tuple, str] = {}
    opened: list[Client] = []

    def make(scopes: str, patient: str | None = None, fhir_user: str | None = None) -> Client:
        key = (scopes, patient, fhir_user)
        if key not in tokens:
            context = [
                *(["--patient", patient] if patient else []),
                *(["--fhir-user", fhir_user] if fhir_user else []),
            ]
            tokens[key] = run_manage("issue_token", "--tenant", "alpha", "--scopes", scopes, *context)
        client = httpx.Client(
            base_url=f"{server.url}/t/alpha/fhir",
            headers={"Authorization": f"Bearer {tokens[key]}"},
            timeout=60,
        )
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()


@pytest.fixture
def admin(client_for) -> Client:
    return client_for(ADMIN)


@pytest.fixture(scope="module")
def world(client_for) -> World:
    admin = client_for(ADMIN)
    marker = uuid.uuid4().hex
    ident = [{"system": MARK, "value": marker}]
    patient_a = create(admin, {"resourceType": "Patient", "identifier": ident})
    patient_b = create(admin, {"resourceType": "Patient", "identifier": ident})
    practitioner = create(admin, {"resourceType": "Practitioner", "identifier": ident})
    rare = uuid.uuid4().hex[:12]
    return World(
        client_for=client_for,
        marker=marker,
        patient_a=patient_a,
        patient_b=patient_b,
        practitioner=practitioner,
        lab_a=create(admin, observation(marker, patient_a, LAB, "718-7", practitioner)),
        vitals_a=create(admin, observation(marker, patient_a, VITALS, "8867-4", practitioner)),
        lab_b=create(admin, observation(marker, patient_b, LAB, rare, practitioner)),
        encounter_a=create(
            admin,
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {"code": "AMB"},
                "identifier": ident,
                "subject": {"reference": f"Patient/{patient_a}"},
                "participant": [{"individual": {"reference": f"Practitioner/{practitioner}"}}],
            },
        ),
        rare_code=rare,
    )


def ids(bundle: dict, mode: str = "match") -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode", "match") == mode and "resource" in e
    }


def forbidden(response) -> bool:
    if response.status_code != 403:
        return False
    body = response.json()
    return body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == "forbidden"


# ----- reads --------------------------------------------------------------------------------------
def test_patient_token_reads_its_own_observation_not_another_patients(world, admin):
    client = world.as_patient_a("launch/patient patient/*.rs")
    assert client.get(f"/Observation/{world.lab_a}").status_code == 200
    assert admin.get(f"/Observation/{world.lab_b}").status_code == 200
    assert forbidden(client.get(f"/Observation/{world.lab_b}"))
    assert forbidden(client.get(f"/Observation/{world.lab_b}/_history/1"))
    assert forbidden(client.get(f"/Observation/{world.lab_b}/_history"))
    assert client.get("/Observation/does-not-exist").status_code == 404


def test_patient_resource_is_only_the_launch_patient(world):
    client = world.as_patient_a("patient/Patient.rs")
    assert client.get(f"/Patient/{world.patient_a}").status_code == 200
    assert forbidden(client.get(f"/Patient/{world.patient_b}"))
    found = client.get("/Patient", params={"identifier": f"{MARK}|{world.marker}"}).json()
    assert ids(found) == {f"Patient/{world.patient_a}"}


def test_types_outside_the_compartment_stay_readable_with_patient_scopes(world):
    client = world.as_patient_a("patient/Practitioner.rs")
    assert client.get(f"/Practitioner/{world.practitioner}").status_code == 200
    found = client.get("/Practitioner", params={"identifier": f"{MARK}|{world.marker}"}).json()
    assert ids(found) == {f"Practitioner/{world.practitioner}"}


def test_type_without_any_scope_is_refused(world):
    client = world.as_patient_a("patient/Observation.rs")
    assert forbidden(client.get(f"/Encounter/{world.encounter_a}"))
    assert forbidden(client.get("/Encounter", params={"patient": world.patient_a}))
    assert forbidden(client.get("/Encounter/_history"))
    assert forbidden(client.get("/", params={"_type": "Observation,Encounter"}))


def test_read_needs_r_and_search_needs_s(world):
    reader = world.as_patient_a("patient/Observation.r")
    assert reader.get(f"/Observation/{world.lab_a}").status_code == 200
    assert forbidden(reader.get("/Observation", params={"patient": world.patient_a}))
    searcher = world.as_patient_a("patient/Observation.s")
    assert forbidden(searcher.get(f"/Observation/{world.lab_a}"))
    assert searcher.get("/Observation", params={"patient": world.patient_a}).status_code == 200


def test_patient_scopes_without_a_patient_reach_no_compartment(world):
    client = world.client_for("patient/*.rs")
    assert forbidden(client.get(f"/Observation/{world.lab_a}"))
    assert client.get(f"/Practitioner/{world.practitioner}").status_code == 200


def test_fhir_user_scope_reads_the_users_own_resource(world, admin):
    other = create(admin, {"resourceType": "Practitioner"})
    user = f"Practitioner/{world.practitioner}"
    client = world.client_for(
        "openid fhirUser patient/Observation.rs", patient=world.patient_a, fhir_user=user
    )
    assert client.get(f"/{user}").status_code == 200
    assert forbidden(client.get(f"/Practitioner/{other}"))
    assert forbidden(client.get("/Practitioner", params={"_id": world.practitioner}))
    absolute = world.client_for("openid fhirUser", fhir_user=f"https://ehr.example.org/fhir/{user}")
    assert absolute.get(f"/{user}").status_code == 200
    without_scope = world.client_for("openid patient/Observation.rs", patient=world.patient_a, fhir_user=user)
    assert forbidden(without_scope.get(f"/{user}"))


def test_user_scopes_reach_every_patient(world):
    client = world.client_for("user/Observation.rs", fhir_user=f"Practitioner/{world.practitioner}")
    assert client.get(f"/Observation/{world.lab_b}").status_code == 200
    found = client.get("/Observation", params={"identifier": f"{MARK}|{world.marker}"}).json()
    assert len(ids(found)) == 3


# ----- searches -----------------------------------------------------------------------------------
def test_search_returns_only_the_compartment_and_pages_exactly(world, admin):
    query = {"identifier": f"{MARK}|{world.marker}", "_total": "accurate"}
    everyone = admin.get("/Observation", params=query).json()
    assert everyone["total"] == 3
    client = world.as_patient_a("patient/*.rs")
    own = client.get("/Observation", params=query).json()
    assert own["total"] == 2
    assert ids(own) == {f"Observation/{world.lab_a}", f"Observation/{world.vitals_a}"}
    first = client.get("/Observation", params={**query, "_count": "1"}).json()
    next_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    second = client.get(next_url).json()
    assert ids(first) | ids(second) == ids(own)
    assert not any(link["relation"] == "next" for link in second["link"])


def test_compartment_search_of_another_patient_finds_nothing(world, admin):
    client = world.as_patient_a("patient/*.rs")
    assert ids(admin.get(f"/Patient/{world.patient_b}/Observation").json()) == {f"Observation/{world.lab_b}"}
    assert ids(client.get(f"/Patient/{world.patient_b}/Observation").json()) == set()
    assert len(ids(client.get(f"/Patient/{world.patient_a}/Observation").json())) == 2


def test_system_search_is_limited_per_type(world):
    client = world.as_patient_a("patient/Observation.rs patient/Patient.rs")
    found = client.get(
        "/", params={"_type": "Observation,Patient", "identifier": f"{MARK}|{world.marker}"}
    ).json()
    assert ids(found) == {
        f"Observation/{world.lab_a}",
        f"Observation/{world.vitals_a}",
        f"Patient/{world.patient_a}",
    }


def test_includes_outside_the_compartment_are_dropped(world, admin):
    query = {"identifier": f"{MARK}|{world.marker}", "_revinclude": "Observation:performer"}
    everyone = admin.get("/Practitioner", params=query).json()
    assert ids(everyone, "include") == {
        f"Observation/{world.lab_a}",
        f"Observation/{world.vitals_a}",
        f"Observation/{world.lab_b}",
    }
    client = world.as_patient_a("patient/*.rs")
    own = client.get("/Practitioner", params=query).json()
    assert ids(own) == {f"Practitioner/{world.practitioner}"}
    assert ids(own, "include") == {f"Observation/{world.lab_a}", f"Observation/{world.vitals_a}"}
    only_practitioners = world.as_patient_a("patient/Practitioner.rs")
    assert ids(only_practitioners.get("/Practitioner", params=query).json(), "include") == set()


def test_chained_criteria_only_look_at_what_the_token_reaches(world, admin):
    query = {"_has:Observation:performer:code": f"http://loinc.org|{world.rare_code}"}
    assert ids(admin.get("/Practitioner", params=query).json()) == {f"Practitioner/{world.practitioner}"}
    client = world.as_patient_a("patient/*.rs")
    assert ids(client.get("/Practitioner", params=query).json()) == set()
    no_observations = world.as_patient_a("patient/Practitioner.rs")
    assert forbidden(no_observations.get("/Practitioner", params=query))


def test_type_history_shows_only_the_compartment(world, admin):
    client = world.as_patient_a("patient/*.rs")
    history = client.get("/Observation/_history", params={"_count": "1000"}).json()
    seen = ids(history)
    assert f"Observation/{world.lab_a}" in seen
    assert f"Observation/{world.lab_b}" not in seen
    assert f"Observation/{world.lab_b}" in ids(
        admin.get("/Observation/_history", params={"_count": "1000"}).json()
    )
    system = client.get("/_history", params={"_count": "1000"}).json()
    assert f"Patient/{world.patient_a}" in ids(system)
    assert f"Patient/{world.patient_b}" not in ids(system)


# ----- v2 restrictions ----------------------------------------------------------------------------
def test_category_restriction_equals_the_unrestricted_search_filtered_by_category(world):
    query = {"patient": world.patient_a}
    unrestricted = world.as_patient_a("patient/Observation.rs")
    expected = ids(unrestricted.get("/Observation", params={**query, "category": LAB}).json())
    assert expected == {f"Observation/{world.lab_a}"}
    granular = world.as_patient_a(f"patient/Observation.rs?category={LAB}")
    assert ids(granular.get("/Observation", params=query).json()) == expected
    assert granular.get(f"/Observation/{world.lab_a}").status_code == 200
    assert forbidden(granular.get(f"/Observation/{world.vitals_a}"))
    two = world.as_patient_a(
        f"patient/Observation.rs?category={LAB} patient/Observation.rs?category={VITALS}"
    )
    assert ids(two.get("/Observation", params=query).json()) == ids(
        unrestricted.get("/Observation", params=query).json()
    )


def test_v1_and_v2_scopes_behave_the_same(world):
    requests = [
        ("/Observation", {"identifier": f"{MARK}|{world.marker}"}),
        (f"/Observation/{world.lab_a}", {}),
        (f"/Observation/{world.lab_b}", {}),
        (f"/Patient/{world.patient_a}/$everything", {}),
        (f"/Patient/{world.patient_b}/$everything", {}),
    ]
    for v1, v2 in [
        ("patient/*.read", "patient/*.rs"),
        ("patient/Observation.read", "patient/Observation.rs"),
    ]:
        old, new = world.as_patient_a(v1), world.as_patient_a(v2)
        for path, params in requests:
            before, after = old.get(path, params=params), new.get(path, params=params)
            assert before.status_code == after.status_code, (v1, path)
            if before.status_code == 200 and before.json()["resourceType"] == "Bundle":
                assert ids(before.json()) == ids(after.json())


# ----- operations ---------------------------------------------------------------------------------
def test_everything_of_another_patient_is_refused_and_own_stays_in_reach(world):
    client = world.as_patient_a("patient/*.rs")
    assert forbidden(client.get(f"/Patient/{world.patient_b}/$everything"))
    own = ids(client.get(f"/Patient/{world.patient_a}/$everything").json())
    assert {
        f"Patient/{world.patient_a}",
        f"Observation/{world.lab_a}",
        f"Encounter/{world.encounter_a}",
    } <= own
    assert f"Practitioner/{world.practitioner}" in own
    observations_only = world.as_patient_a("patient/Patient.rs patient/Observation.rs")
    limited = ids(observations_only.get(f"/Patient/{world.patient_a}/$everything").json())
    assert {t.split("/")[0] for t in limited} == {"Patient", "Observation"}


def test_everything_applies_restrictions_in_its_page_query(world):
    client = world.as_patient_a(f"patient/Patient.rs patient/Observation.rs?category={LAB}")
    everything = client.get(f"/Patient/{world.patient_a}/$everything", params={"_count": "1"})
    seen, response = set(), everything
    while True:
        bundle = response.json()
        seen |= ids(bundle)
        next_url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
        if next_url is None:
            break
        response = client.get(next_url)
    assert seen == {f"Patient/{world.patient_a}", f"Observation/{world.lab_a}"}


def test_positional_conditions_keep_literal_percent_signs_when_named():
    condition = ("a = %s AND b LIKE '%%' || %s", [1, "x"])
    assert named(condition, "p") == ("a = %(p_0)s AND b LIKE '%%' || %(p_1)s", {"p_0": 1, "p_1": "x"})


def test_meta_operations_follow_read_and_update(world):
    reader = world.as_patient_a("patient/*.rs")
    assert reader.get(f"/Observation/{world.lab_a}/$meta").status_code == 200
    assert forbidden(reader.get(f"/Observation/{world.lab_b}/$meta"))
    change = {
        "resourceType": "Parameters",
        "parameter": [{"name": "meta", "valueMeta": {"tag": [{"code": "x"}]}}],
    }
    assert forbidden(reader.post(f"/Observation/{world.lab_a}/$meta-add", json=change))


# ----- writes -------------------------------------------------------------------------------------
def test_write_with_a_read_only_scope_is_refused(world, admin):
    client = world.as_patient_a("patient/*.rs")
    marker = uuid.uuid4().hex
    assert forbidden(
        client.post("/Observation", json=observation(marker, world.patient_a, LAB, "1", world.practitioner))
    )
    current = admin.get(f"/Observation/{world.vitals_a}").json()
    assert forbidden(client.put(f"/Observation/{world.vitals_a}", json=current))
    assert forbidden(client.delete(f"/Observation/{world.vitals_a}"))
    assert admin.get("/Observation", params={"identifier": f"{MARK}|{marker}"}).json().get("entry") is None


def test_writes_must_land_inside_the_compartment(world, admin):
    client = world.as_patient_a("patient/Observation.cruds")
    marker = uuid.uuid4().hex
    assert forbidden(
        client.post("/Observation", json=observation(marker, world.patient_b, LAB, "2", world.practitioner))
    )
    assert admin.get("/Observation", params={"identifier": f"{MARK}|{marker}"}).json().get("entry") is None
    own = create(client, observation(marker, world.patient_a, LAB, "2", world.practitioner))
    moved = {
        **admin.get(f"/Observation/{own}").json(),
        "subject": {"reference": f"Patient/{world.patient_b}"},
    }
    assert forbidden(client.put(f"/Observation/{own}", json=moved))
    assert admin.get(f"/Observation/{own}").json()["subject"]["reference"] == f"Patient/{world.patient_a}"
    theirs = admin.get(f"/Observation/{world.lab_b}").json()
    assert forbidden(
        client.put(
            f"/Observation/{world.lab_b}",
            json={**theirs, "subject": {"reference": f"Patient/{world.patient_a}"}},
        )
    )
    assert forbidden(client.delete(f"/Observation/{world.lab_b}"))
    assert admin.get(f"/Observation/{world.lab_b}").status_code == 200
    assert client.delete(f"/Observation/{own}").status_code == 204


def test_conditional_delete_across_patients_is_refused_whole(world, admin):
    marker = uuid.uuid4().hex
    for patient in (world.patient_a, world.patient_b):
        create(admin, observation(marker, patient, LAB, "3", world.practitioner))
    client = world.as_patient_a("patient/Observation.cruds")
    assert forbidden(client.delete("/Observation", params={"identifier": f"{MARK}|{marker}"}))
    assert len(ids(admin.get("/Observation", params={"identifier": f"{MARK}|{marker}"}).json())) == 2


def test_patch_cannot_move_a_resource_out_of_the_compartment(world, admin):
    client = world.as_patient_a("patient/Observation.cruds")
    own = create(client, observation(uuid.uuid4().hex, world.patient_a, LAB, "4", world.practitioner))
    move = [{"op": "replace", "path": "/subject/reference", "value": f"Patient/{world.patient_b}"}]
    response = client.patch(
        f"/Observation/{own}",
        content=orjson.dumps(move),
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert forbidden(response)
    assert admin.get(f"/Observation/{own}").json()["meta"]["versionId"] == "1"


def test_transaction_with_an_entry_out_of_scope_stores_nothing(world, admin):
    marker = uuid.uuid4().hex
    client = world.as_patient_a("patient/Observation.cruds")

    def entry(patient: str) -> dict:
        resource = observation(marker, patient, LAB, "5", world.practitioner)
        return {"resource": resource, "request": {"method": "POST", "url": "Observation"}}

    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [entry(world.patient_a), entry(world.patient_b)],
    }
    response = client.post("/", json=bundle)
    assert forbidden(response)
    assert "Bundle.entry[1]" in response.json()["issue"][0]["diagnostics"]
    assert admin.get("/Observation", params={"identifier": f"{MARK}|{marker}"}).json().get("entry") is None
    other_type = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            entry(world.patient_a),
            {"request": {"method": "GET", "url": f"Encounter/{world.encounter_a}"}},
        ],
    }
    assert forbidden(client.post("/", json=other_type))
    assert admin.get("/Observation", params={"identifier": f"{MARK}|{marker}"}).json().get("entry") is None
    bundle["entry"] = [entry(world.patient_a)]
    assert client.post("/", json=bundle).status_code == 200


def test_batch_entries_are_refused_alone(world, admin):
    marker = uuid.uuid4().hex
    client = world.as_patient_a("patient/Observation.cruds")
    patch = [{"op": "replace", "path": "/status", "value": "amended"}]
    binary = {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(orjson.dumps(patch)).decode(),
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "resource": observation(marker, world.patient_a, LAB, "6", world.practitioner),
                "request": {"method": "POST", "url": "Observation"},
            },
            {"request": {"method": "GET", "url": f"Observation/{world.lab_b}"}},
            {"resource": binary, "request": {"method": "PATCH", "url": f"Observation/{world.lab_b}"}},
        ],
    }
    response = client.post("/", json=bundle)
    assert response.status_code == 200
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses == ["201 Created", "403 Forbidden", "403 Forbidden"]
    assert len(ids(admin.get("/Observation", params={"identifier": f"{MARK}|{marker}"}).json())) == 1
    assert admin.get(f"/Observation/{world.lab_b}").json()["status"] == "final"
