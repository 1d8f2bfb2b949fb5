"""CRUD, versions, history and conditional interactions over real HTTP (http.html of R4)."""

import uuid

import pytest

FHIR_JSON = "application/fhir+json"


def patient(**extra) -> dict:
    return {"resourceType": "Patient", "name": [{"family": "Testperson", "given": ["Ada"]}], **extra}


def create(fhir, resource: dict, **headers):
    response = fhir.post(f"/{resource['resourceType']}", json=resource, headers=headers)
    assert response.status_code in (200, 201), response.text
    return response


def assert_outcome(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    if code:
        assert body["issue"][0]["code"] == code, body
    return body


def test_create_assigns_id_version_and_headers(fhir):
    response = fhir.post("/Patient", json=patient(id="client-chosen"))
    assert response.status_code == 201
    body = response.json()
    assert body["id"] != "client-chosen"  # http.html#create: the server SHALL ignore a given id
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["location"].endswith(f"/t/alpha/fhir/Patient/{body['id']}/_history/1")
    assert "last-modified" in response.headers


def test_read_returns_the_stored_json_and_supports_conditional_read(fhir):
    created = create(fhir, patient()).json()
    response = fhir.get(f"/Patient/{created['id']}")
    assert response.status_code == 200
    assert response.json() == created
    assert response.headers["etag"] == 'W/"1"'
    assert fhir.get(f"/Patient/{created['id']}", headers={"If-None-Match": 'W/"1"'}).status_code == 304
    assert fhir.get(f"/Patient/{created['id']}", headers={"If-None-Match": 'W/"7"'}).status_code == 200
    later = "Fri, 01 Jan 2100 00:00:00 GMT"
    assert fhir.get(f"/Patient/{created['id']}", headers={"If-Modified-Since": later}).status_code == 304
    earlier = "Thu, 01 Jan 1970 00:00:00 GMT"
    assert fhir.get(f"/Patient/{created['id']}", headers={"If-Modified-Since": earlier}).status_code == 200


def test_update_versions_and_if_match(fhir):
    created = create(fhir, patient()).json()
    url = f"/Patient/{created['id']}"
    changed = {**created, "gender": "female"}
    stale = fhir.put(url, json=changed, headers={"If-Match": 'W/"9"'})
    assert_outcome(stale, 412, "conflict")
    response = fhir.put(url, json=changed, headers={"If-Match": 'W/"1"'})
    assert response.status_code == 200
    assert response.json()["meta"]["versionId"] == "2"
    assert response.headers["location"].endswith(f"{url}/_history/2")
    assert fhir.get(url).json()["gender"] == "female"
    assert fhir.get(f"{url}/_history/1").json()["meta"]["versionId"] == "1"


def test_update_creates_with_client_id(fhir):
    resource_id = "client-" + uuid.uuid4().hex
    response = fhir.put(f"/Patient/{resource_id}", json=patient(id=resource_id))
    assert response.status_code == 201
    assert response.json()["id"] == resource_id


def test_delete_is_soft_and_versioned(fhir):
    created = create(fhir, patient()).json()
    url = f"/Patient/{created['id']}"
    assert fhir.delete(url).status_code == 204
    assert_outcome(fhir.get(url), 410, "deleted")
    assert fhir.delete(url).status_code == 204  # deleting again changes nothing
    history = fhir.get(f"{url}/_history").json()
    assert history["type"] == "history"
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert fhir.get(f"{url}/_history/1").status_code == 200
    assert_outcome(fhir.get(f"{url}/_history/2"), 410)
    restored = fhir.put(url, json={k: v for k, v in created.items() if k != "meta"})
    assert restored.status_code == 201
    assert restored.json()["meta"]["versionId"] == "3"


def test_patch_with_json_patch(fhir):
    created = create(fhir, patient()).json()
    url = f"/Patient/{created['id']}"
    ops = [{"op": "add", "path": "/birthDate", "value": "1970-01-02"}]
    headers = {"Content-Type": "application/json-patch+json"}
    response = fhir.patch(url, json=ops, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["birthDate"] == "1970-01-02"
    assert response.json()["meta"]["versionId"] == "2"
    assert fhir.get(f"{url}/_history").json()["entry"][0]["request"]["method"] == "PATCH"
    bad_value = [{"op": "replace", "path": "/birthDate", "value": "not a date"}]
    assert_outcome(fhir.patch(url, json=bad_value, headers=headers), 400)
    assert_outcome(fhir.patch(url, json=[{"op": "remove", "path": "/nothing"}], headers=headers), 422)
    assert_outcome(fhir.patch(url, json={"op": "x"}, headers=headers), 400)
    assert_outcome(fhir.patch(url, json=ops), 415)
    assert_outcome(fhir.patch(url, json=ops, headers={**headers, "If-Match": 'W/"1"'}), 412)
    assert fhir.get(url).json()["meta"]["versionId"] == "2"


@pytest.mark.parametrize(
    ("body", "status", "expression"),
    [
        ({"resourceType": "Patient", "unknownThing": 1}, 400, "Patient.unknownThing"),
        ({"resourceType": "Patient", "active": "yes"}, 400, "Patient.active"),
        ({"resourceType": "Patient", "name": {"family": "x"}}, 400, "Patient.name"),
        ({"resourceType": "Patient", "gender": "mal"}, 422, "Patient.gender"),
        ({"resourceType": "Observation", "status": "final"}, 422, "Observation.code"),
    ],
)
def test_invalid_resources_are_refused_naming_the_element(fhir, body, status, expression):
    before = fhir.get(f"/{body['resourceType']}", params={"_summary": "count"}).json()["total"]
    response = fhir.post(f"/{body['resourceType']}", json=body)
    outcome = assert_outcome(response, status)
    assert any(expression in e for issue in outcome["issue"] for e in issue.get("expression", [])), outcome
    assert fhir.get(f"/{body['resourceType']}", params={"_summary": "count"}).json()["total"] == before


def test_malformed_and_mismatched_bodies(fhir):
    headers = {"Content-Type": FHIR_JSON}
    assert_outcome(fhir.post("/Patient", content=b'{"resourceType": "Pat', headers=headers), 400, "structure")
    assert_outcome(fhir.post("/Patient", content=b"[1, 2]", headers=headers), 400)
    assert_outcome(fhir.post("/Patient", json={"resourceType": "Observation"}), 400)
    assert_outcome(fhir.put("/Patient/abc", json=patient(id="xyz")), 400)
    assert_outcome(fhir.post("/Patient", content=b"a=b", headers={"Content-Type": "text/csv"}), 415)
    assert_outcome(fhir.get("/NotAType/1"), 404, "not-found")
    assert_outcome(fhir.get("/Patient/does-not-exist"), 404, "not-found")
    assert_outcome(fhir.post("/Patient/abc", json=patient()), 405)


def test_conditional_create(fhir):
    identifier = {"system": "urn:test:mrn", "value": uuid.uuid4().hex}
    condition = {"If-None-Exist": f"identifier={identifier['system']}|{identifier['value']}"}
    first = create(fhir, patient(identifier=[identifier]), **condition)
    assert first.status_code == 201
    second = create(fhir, patient(identifier=[identifier]), **condition)
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    create(fhir, patient(identifier=[identifier]))  # a duplicate, made without the condition
    assert_outcome(fhir.post("/Patient", json=patient(), headers=condition), 412)
    assert_outcome(fhir.post("/Patient", json=patient(), headers={"If-None-Exist": "nonsense=x"}), 400)


def test_conditional_update_and_delete(fhir):
    value = uuid.uuid4().hex
    query = {"identifier": f"urn:test:mrn|{value}"}
    body = patient(identifier=[{"system": "urn:test:mrn", "value": value}])
    created = fhir.put("/Patient", params=query, json=body)
    assert created.status_code == 201
    updated = fhir.put("/Patient", params=query, json={**body, "gender": "other"})
    assert updated.status_code == 200
    assert updated.json()["id"] == created.json()["id"]
    assert updated.json()["meta"]["versionId"] == "2"
    assert fhir.delete("/Patient", params=query).status_code == 204
    assert fhir.get(f"/Patient/{created.json()['id']}").status_code == 410


def test_prefer_return(fhir):
    minimal = fhir.post("/Patient", json=patient(), headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201
    assert minimal.content == b""
    assert minimal.headers["location"]
    outcome = fhir.post("/Patient", json=patient(), headers={"Prefer": "return=OperationOutcome"})
    assert outcome.json()["resourceType"] == "OperationOutcome"


def test_history_paging_since_and_at(fhir):
    created = create(fhir, patient()).json()
    url = f"/Patient/{created['id']}"
    for gender in ("male", "female", "other"):
        fhir.put(url, json={**created, "gender": gender})
    first = fhir.get(f"{url}/_history", params={"_count": 2}).json()
    assert [e["response"]["etag"] for e in first["entry"]] == ['W/"4"', 'W/"3"']
    next_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    second = fhir.get(next_url).json()
    assert [e["response"]["etag"] for e in second["entry"]] == ['W/"2"', 'W/"1"']
    assert not any(link["relation"] == "next" for link in second["link"])
    since = fhir.get(f"{url}/_history/3").json()["meta"]["lastUpdated"]
    recent = fhir.get(f"{url}/_history", params={"_since": since}).json()
    assert [e["response"]["etag"] for e in recent["entry"]] == ['W/"4"', 'W/"3"']
    at = fhir.get(f"{url}/_history", params={"_at": since}).json()
    assert [e["response"]["etag"] for e in at["entry"]] == ['W/"3"']
    assert_outcome(fhir.get(f"{url}/_history", params={"_since": "yesterday"}), 400)
    type_history = fhir.get("/Patient/_history", params={"_count": 1}).json()
    assert len(type_history["entry"]) == 1
    system_history = fhir.get("/_history", params={"_count": 3}).json()
    assert len(system_history["entry"]) == 3


def test_capability_statement_lists_every_r4_type(fhir):
    response = fhir.get("/metadata")
    assert response.status_code == 200
    statement = response.json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    types = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert len(types) == 146
    assert {"Patient", "Observation", "MedicinalProduct", "Bundle"} <= set(types)
    assert {i["code"] for i in types["Patient"]["interaction"]} >= {
        "read",
        "vread",
        "update",
        "patch",
        "delete",
    }
    assert {"name": "identifier"}.items() <= types["Patient"]["searchParam"][0].items() or any(
        p["name"] == "identifier" for p in types["Patient"]["searchParam"]
    )


def test_gzip_when_accepted(fhir):
    response = fhir.get("/metadata", headers={"Accept-Encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.json()["resourceType"] == "CapabilityStatement"


def test_summary_and_elements_on_read(fhir):
    created = create(
        fhir,
        patient(
            gender="female",
            text={"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'},
        ),
    ).json()
    url = f"/Patient/{created['id']}"
    summary = fhir.get(url, params={"_summary": "true"}).json()
    assert "text" not in summary and summary["gender"] == "female"
    assert summary["meta"]["tag"][0]["code"] == "SUBSETTED"
    elements = fhir.get(url, params={"_elements": "gender"}).json()
    assert "name" not in elements and elements["gender"] == "female"
    pretty = fhir.get(url, params={"_pretty": "true"})
    assert b"\n" in pretty.content
    assert_outcome(fhir.get(url, params={"_summary": "maybe"}), 400)


def test_fhir_api_refuses_requests_without_development_auth(http):
    assert http.get("/t/alpha/fhir/metadata").status_code == 200
    response = http.get("/t/alpha/fhir/Patient")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["resourceType"] == "OperationOutcome"
