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
    owner_db.execute("DELETE FROM alpha.fhir_index_string WHERE resource_id = %s", [created["id"]])
    assert "entry" not in fhir.get("/Patient", params=query).json()

    result = manage_command("reindex", "--tenant", "alpha", "--type", "Patient")
    assert result.returncode == 0, result.stderr
    assert "reindexed" in result.stdout
    assert [e["resource"]["id"] for e in fhir.get("/Patient", params=query).json()["entry"]] == [
        created["id"]
    ]
    rows = owner_db.execute(
        "SELECT count(*) FROM alpha.fhir_index_token WHERE resource_id = %s AND param = 'identifier'",
        [created["id"]],
    ).fetchone()
    assert rows == (1,)  # replaced, not duplicated


def test_reindex_refuses_bad_input():
    assert (
        "not an R4 resource type" in manage_command("reindex", "--tenant", "alpha", "--type", "Nope").stderr
    )
    assert "no tenant" in manage_command("reindex", "--tenant", "nope").stderr
