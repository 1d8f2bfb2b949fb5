"""manage.py reindex rebuilds the search index from the stored resources."""

import uuid

from tests.support import manage_command


def test_reindex_restores_a_lost_index(fhir, owner_db):
    marker = uuid.uuid4().hex
    created = fhir.post(
        "/Patient",
        json={
            "resourceType": "Patient",
            "identifier": [{"system": "urn:r", "value": marker}],
            "name": [{"family": "Reindexson"}],
        },
    ).json()
    query = {"identifier": f"urn:r|{marker}", "family": "reindexson"}
    assert [e["resource"]["id"] for e in fhir.get("/Patient", params=query).json()["entry"]] == [
        created["id"]
    ]
    # Patient names and identifiers are in the blind index (encrypted elements, search/blind.py).
    count = "SELECT count(*) FROM alpha.fhir_index_blind WHERE resource_id = %s"
    indexed = owner_db.execute(count, [created["id"]]).fetchone()[0]
    owner_db.execute("DELETE FROM alpha.fhir_index_blind WHERE resource_id = %s", [created["id"]])
    assert "entry" not in fhir.get("/Patient", params=query).json()

    result = manage_command("reindex", "--tenant", "alpha", "--type", "Patient")
    assert result.returncode == 0, result.stderr
    assert "reindexed" in result.stdout
    assert [e["resource"]["id"] for e in fhir.get("/Patient", params=query).json()["entry"]] == [
        created["id"]
    ]
    assert owner_db.execute(count, [created["id"]]).fetchone()[0] == indexed  # replaced, not duplicated


def test_reindex_refuses_bad_input():
    assert (
        "not an R4 resource type" in manage_command("reindex", "--tenant", "alpha", "--type", "Nope").stderr
    )
    assert "no tenant" in manage_command("reindex", "--tenant", "nope").stderr


def test_reindex_rebuilds_composite_groups_and_full_text(fhir, owner_db):
    marker = uuid.uuid4().hex
    created = fhir.post(
        "/Location",
        json={
            "resourceType": "Location",
            "identifier": [{"system": "urn:r", "value": marker}],
            "name": f"Reindex harbour {marker}",
            "position": {"latitude": 51.9, "longitude": 4.48},
        },
    ).json()
    queries = [{"near": "51.9|4.48|1"}, {"_content": "harbour"}]

    def found(query: dict) -> list[str]:
        response = fhir.get("/Location", params={"identifier": f"urn:r|{marker}", **query}).json()
        return [e["resource"]["id"] for e in response.get("entry", [])]

    assert all(found(query) == [created["id"]] for query in queries)
    rows = (
        "SELECT (SELECT count(*) FROM alpha.fhir_index_number WHERE resource_id = %s"
        " AND composite IS NOT NULL) + (SELECT count(*) FROM alpha.fhir_index_text WHERE resource_id = %s)"
    )
    indexed = owner_db.execute(rows, [created["id"]] * 2).fetchone()[0]
    assert indexed == 3  # latitude and longitude in one group, one _content document
    owner_db.execute("DELETE FROM alpha.fhir_index_number WHERE resource_id = %s", [created["id"]])
    owner_db.execute("DELETE FROM alpha.fhir_index_text WHERE resource_id = %s", [created["id"]])
    assert not any(found(query) for query in queries)

    result = manage_command("reindex", "--tenant", "alpha", "--type", "Location")
    assert result.returncode == 0, result.stderr
    assert all(found(query) == [created["id"]] for query in queries)
    assert owner_db.execute(rows, [created["id"]] * 2).fetchone()[0] == indexed
