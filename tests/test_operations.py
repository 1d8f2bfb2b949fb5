"""$validate, $meta, $meta-add and $meta-delete over HTTP."""

TAG = {"system": "urn:test:tags", "code": "reviewed"}


def test_validate_reports_issues_and_stores_nothing(fhir):
    before = fhir.get("/Patient", params={"_summary": "count"}).json()["total"]
    ok = fhir.post("/Patient/$validate", json={"resourceType": "Patient", "gender": "female"})
    assert ok.status_code == 200
    assert ok.json()["issue"][0]["severity"] == "information"
    bad = fhir.post("/Patient/$validate", json={"resourceType": "Patient", "gender": "mal", "extra": 1})
    assert bad.status_code == 200
    expressions = {e for issue in bad.json()["issue"] for e in issue.get("expression", [])}
    assert {"Patient.gender", "Patient.extra"} <= expressions
    wrapped = {
        "resourceType": "Parameters",
        "parameter": [{"name": "resource", "resource": {"resourceType": "Patient", "active": "no"}}],
    }
    assert fhir.post("/Patient/$validate", json=wrapped).json()["issue"][0]["severity"] == "error"
    assert fhir.get("/Patient", params={"_summary": "count"}).json()["total"] == before


def test_instance_validate_checks_the_id(fhir):
    created = fhir.post("/Patient", json={"resourceType": "Patient"}).json()
    same = fhir.post(f"/Patient/{created['id']}/$validate", json=created)
    assert same.json()["issue"][0]["severity"] == "information"
    other = fhir.post(f"/Patient/{created['id']}/$validate", json={**created, "id": "other"})
    assert other.json()["issue"][0]["severity"] == "error"


def test_meta_add_and_delete_change_the_current_version_in_place(fhir):
    created = fhir.post("/Patient", json={"resourceType": "Patient"}).json()
    url = f"/Patient/{created['id']}"
    change = {"resourceType": "Parameters", "parameter": [{"name": "meta", "valueMeta": {"tag": [TAG]}}]}
    added = fhir.post(f"{url}/$meta-add", json=change)
    assert added.status_code == 200, added.text
    assert added.json()["parameter"][0]["valueMeta"]["tag"] == [TAG]
    fhir.post(f"{url}/$meta-add", json=change)  # tags are a set: no duplicate
    current = fhir.get(url).json()
    assert current["meta"]["tag"] == [TAG]
    assert current["meta"]["versionId"] == "1"
    read_meta = fhir.get(f"{url}/$meta").json()["parameter"][0]["valueMeta"]
    assert read_meta["tag"] == [TAG]
    assert TAG in fhir.get("/Patient/$meta").json()["parameter"][0]["valueMeta"]["tag"]
    removed = fhir.post(f"{url}/$meta-delete", json=change).json()["parameter"][0]["valueMeta"]
    assert "tag" not in removed
    assert "tag" not in fhir.get(url).json()["meta"]


def test_meta_add_refuses_bad_input(fhir):
    created = fhir.post("/Patient", json={"resourceType": "Patient"}).json()
    url = f"/Patient/{created['id']}/$meta-add"
    assert fhir.post(url, json={"resourceType": "Patient"}).status_code == 400
    assert (
        fhir.post(url, json={"resourceType": "Parameters", "parameter": [{"name": "x"}]}).status_code == 400
    )
    assert fhir.get(url).status_code == 405
    assert (
        fhir.post(
            "/Patient/nope/$meta-add",
            json={"resourceType": "Parameters", "parameter": [{"name": "meta", "valueMeta": {"tag": [TAG]}}]},
        ).status_code
        == 404
    )
