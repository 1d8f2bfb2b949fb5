"""Bulk Data $export (bulk/) over real HTTP with Backend Services tokens, on a tenant loaded with
the five smart-synthea-2019 patients; jobs run in `manage.py worker` subprocesses."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings

from config.environment import BASE_DIR
from fhirserver.registry import r4
from fhirserver.validation import validate_resource
from tests.smart_support import ASSERTION_TYPE, client_assertion, public_jwk, run_manage
from tests.support import manage_command

SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthea" / "smart-synthea-2019"
if not SYNTHEA.is_dir():
    SYNTHEA = BASE_DIR / "data" / "demo"
ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


class Bulk:
    """A tenant with data, its base URL and Backend Services clients."""

    def __init__(self, server_url: str, slug: str, key, jwks_file: Path):
        self.slug, self.key, self.jwks_file = slug, key, jwks_file
        self.base = f"{server_url}/t/{slug}/fhir"
        self.token_url = f"{server_url}/t/{slug}/auth/token"

    def client(self, scopes: str = "system/*.rs") -> str:
        client_id = f"bulk{uuid.uuid4().hex[:8]}"
        run_manage(
            "register_client", "--tenant", self.slug, "--client-id", client_id, "--backend",
            "--jwks-file", str(self.jwks_file), "--scopes", scopes,
        )  # fmt: skip
        return client_id

    def token(self, client_id: str, scopes: str = "system/*.rs") -> dict:
        response = httpx.post(
            self.token_url,
            data={
                "grant_type": "client_credentials",
                "scope": scopes,
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": client_assertion(self.key, "ec-1", "ES384", client_id, self.token_url),
            },
        )
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture(scope="module")
def bulk(smart_server, tmp_path_factory):
    slug = "bulk" + uuid.uuid4().hex[:8]
    assert manage_command("create_tenant", slug).returncode == 0
    loaded = manage_command("load_bundles", "--tenant", slug, str(SYNTHEA))
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    key = ec.generate_private_key(ec.SECP384R1())
    jwks_file = tmp_path_factory.mktemp("bulk") / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [public_jwk(key, "ec-1", "ES384")]}))
    yield Bulk(smart_server.url, slug, key, jwks_file)
    manage_command("delete_tenant", slug, "--yes")


@pytest.fixture(scope="module")
def backend(bulk):
    client_id = bulk.client()
    return bulk.token(client_id)


def run_worker(**env: str) -> None:
    result = manage_command("worker", "--once", env=env)
    assert result.returncode == 0, result.stderr[-3000:]


def kick_off(bulk: Bulk, headers: dict, path: str = "/$export", **params) -> str:
    response = httpx.get(bulk.base + path, params=params, headers={**ASYNC, **headers})
    assert response.status_code == 202, response.text
    return response.headers["Content-Location"]


def finished(status_url: str, headers: dict) -> dict:
    run_worker()
    response = httpx.get(status_url, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def lines_by_type(manifest: dict, headers: dict) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for output in manifest["output"]:
        response = httpx.get(output["url"], headers={**headers, "Accept": "application/fhir+ndjson"})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/fhir+ndjson")
        lines = [json.loads(line) for line in response.text.splitlines()]
        assert len(lines) == output["count"]
        found.setdefault(output["type"], []).extend(lines)
    return found


def current_counts(owner_db, slug: str) -> dict[str, int]:
    rows = owner_db.execute(
        f'SELECT resource_type, count(*) FROM "{slug}".fhir_resource WHERE NOT deleted GROUP BY resource_type'
    ).fetchall()
    return dict(rows)


def test_system_export_round_trip(bulk, backend, owner_db):
    status_url = kick_off(bulk, backend)
    waiting = httpx.get(status_url, headers=backend)
    assert waiting.status_code == 202 and waiting.headers["X-Progress"] and waiting.headers["Retry-After"]
    manifest = finished(status_url, backend)
    assert manifest["requiresAccessToken"] is True and manifest["error"] == []
    assert manifest["request"].endswith("/$export") and manifest["transactionTime"].endswith("Z")
    exported = lines_by_type(manifest, backend)
    assert {t: len(lines) for t, lines in exported.items()} == current_counts(owner_db, bulk.slug)
    for resource_type, lines in exported.items():
        assert len({line["id"] for line in lines}) == len(lines)
        for resource in lines:
            assert resource["resourceType"] == resource_type
            assert validate_resource(resource) == [], resource["id"]


def test_type_since_and_type_filter(bulk, backend, owner_db):
    manifest = finished(kick_off(bulk, backend, _type="Patient,Condition"), backend)
    assert {output["type"] for output in manifest["output"]} == {"Patient", "Condition"}
    latest = owner_db.execute(f'SELECT max(last_updated) FROM "{bulk.slug}".fhir_resource').fetchone()[0]
    writer = bulk.token(bulk.client("system/*.cruds"), "system/*.cruds")
    later = httpx.post(
        f"{bulk.base}/Patient", json={"resourceType": "Patient", "gender": "other"}, headers=writer
    )
    manifest = finished(kick_off(bulk, backend, _type="Patient", _since=latest.isoformat()), backend)
    assert [p["id"] for p in lines_by_type(manifest, backend)["Patient"]] == [later.json()["id"]]
    manifest = finished(kick_off(bulk, backend, _type="Patient", _since="2000-01-01T00:00:00Z"), backend)
    assert manifest["output"][0]["count"] == current_counts(owner_db, bulk.slug)["Patient"]
    manifest = finished(
        kick_off(bulk, backend, _type="Patient,Observation", _typeFilter="Patient?gender=other"), backend
    )
    exported = lines_by_type(manifest, backend)
    assert [p["id"] for p in exported["Patient"]] == [later.json()["id"]]
    assert len(exported["Observation"]) == current_counts(owner_db, bulk.slug)["Observation"]
    bad = httpx.get(
        f"{bulk.base}/$export", params={"_typeFilter": "Patient?nonsense=1"}, headers={**ASYNC, **backend}
    )
    assert bad.status_code == 400


def test_group_export_holds_only_its_members(bulk, backend, owner_db):
    patients = sorted(
        row[0]
        for row in owner_db.execute(
            f"""SELECT target_id FROM "{bulk.slug}".fhir_index_reference
                WHERE resource_type = 'Observation' AND target_type = 'Patient'
                GROUP BY target_id ORDER BY count(*) DESC LIMIT 2"""
        ).fetchall()
    )
    writer = bulk.token(bulk.client("system/*.cruds"), "system/*.cruds")
    members = [{"entity": {"reference": f"Patient/{p}"}} for p in patients]
    group = httpx.post(
        f"{bulk.base}/Group",
        json={"resourceType": "Group", "type": "person", "actual": True, "member": members},
        headers=writer,
    ).json()
    manifest = finished(kick_off(bulk, backend, f"/Group/{group['id']}/$export"), backend)
    exported = lines_by_type(manifest, backend)
    assert sorted(p["id"] for p in exported["Patient"]) == patients
    link_types, link_params = zip(
        *[(t, p) for t, params in r4().patient_compartment.items() for p in params], strict=True
    )
    expected = owner_db.execute(
        f"""SELECT r.resource_type, count(DISTINCT r.resource_id) FROM "{bulk.slug}".fhir_resource r
            JOIN "{bulk.slug}".fhir_index_reference c
              ON c.resource_type = r.resource_type AND c.resource_id = r.resource_id
            JOIN unnest(%s::text[], %s::text[]) AS l(t, p) ON l.t = c.resource_type AND l.p = c.param
            WHERE NOT r.deleted AND r.resource_type <> 'Patient' AND c.target_type = 'Patient'
              AND c.target_id = ANY(%s)
            GROUP BY r.resource_type""",
        [list(link_types), list(link_params), patients],
    ).fetchall()
    assert {t: len(lines) for t, lines in exported.items() if t != "Patient"} == dict(expected)
    everyone = finished(kick_off(bulk, backend, "/Patient/$export"), backend)
    assert sum(o["count"] for o in everyone["output"]) > sum(o["count"] for o in manifest["output"])


def test_consistent_as_of_transaction_time(bulk, owner_db):
    writer = bulk.token(bulk.client("system/*.cruds"), "system/*.cruds")
    patient = httpx.post(
        f"{bulk.base}/Patient", json={"resourceType": "Patient", "gender": "female"}, headers=writer
    ).json()
    doomed = httpx.post(
        f"{bulk.base}/Patient", json={"resourceType": "Patient", "gender": "male"}, headers=writer
    ).json()
    status_url = kick_off(bulk, writer, _type="Patient")
    changed = {**patient, "gender": "unknown"}
    assert httpx.put(f"{bulk.base}/Patient/{patient['id']}", json=changed, headers=writer).status_code == 200
    assert httpx.delete(f"{bulk.base}/Patient/{doomed['id']}", headers=writer).status_code in (200, 204)
    newer = httpx.post(f"{bulk.base}/Patient", json={"resourceType": "Patient"}, headers=writer).json()
    exported = {p["id"]: p for p in lines_by_type(finished(status_url, writer), writer)["Patient"]}
    assert exported[patient["id"]]["gender"] == "female"
    assert exported[doomed["id"]]["gender"] == "male"
    assert newer["id"] not in exported


def test_cancel_removes_files(bulk, backend):
    status_url = kick_off(bulk, backend, _type="Patient")
    manifest = finished(status_url, backend)
    export_id = status_url.rsplit("/", 1)[1]
    folder = settings.EXPORT_DIR / bulk.slug / export_id
    assert folder.is_dir()
    cancelled = httpx.delete(status_url, headers=backend)
    assert cancelled.status_code == 202
    assert not folder.exists()
    assert httpx.get(status_url, headers=backend).status_code == 404
    assert httpx.get(manifest["output"][0]["url"], headers=backend).status_code == 404
    queued = kick_off(bulk, backend, _type="Patient")
    assert httpx.delete(queued, headers=backend).status_code == 202
    run_worker()
    assert httpx.get(queued, headers=backend).status_code == 404


def test_refusals(bulk, backend):
    patient_token = run_manage(
        "issue_token", "--tenant", bulk.slug, "--scopes", "patient/*.rs", "--patient", "p1",
        "--fhir-base", bulk.base,
    )  # fmt: skip
    refused = httpx.get(f"{bulk.base}/$export", headers={**ASYNC, "Authorization": f"Bearer {patient_token}"})
    assert refused.status_code == 403
    assert httpx.get(f"{bulk.base}/$export", headers=ASYNC).status_code == 401
    assert (
        httpx.get(f"{bulk.base}/$export", headers={**backend, "Accept": "application/fhir+json"}).status_code
        == 400
    )
    wrong_format = {**ASYNC, **backend}
    assert (
        httpx.get(
            f"{bulk.base}/$export", params={"_outputFormat": "text/csv"}, headers=wrong_format
        ).status_code
        == 400
    )
    strict = {**wrong_format, "Prefer": "respond-async, handling=strict"}
    assert (
        httpx.get(f"{bulk.base}/$export", params={"includeAssociatedData": "x"}, headers=strict).status_code
        == 400
    )
    narrow = bulk.token(bulk.client("system/Patient.rs"), "system/Patient.rs")
    assert (
        httpx.get(
            f"{bulk.base}/$export", params={"_type": "Observation"}, headers={**ASYNC, **narrow}
        ).status_code
        == 403
    )
    lenient = kick_off(bulk, backend, _type="Patient", _outputFormat="ndjson", includeAssociatedData="x")
    manifest = finished(lenient, backend)
    assert len(manifest["error"]) == 1
    notes = httpx.get(manifest["error"][0]["url"], headers=backend).text
    assert "includeAssociatedData" in notes
    other = bulk.token(bulk.client())
    assert httpx.get(lenient, headers=other).status_code == 403
    assert httpx.get(manifest["output"][0]["url"], headers=other).status_code == 403
    only_patients = finished(kick_off(bulk, narrow), narrow)
    assert {o["type"] for o in only_patients["output"]} == {"Patient"}


def test_audit_of_kick_off_and_download(bulk, backend, owner_db):
    before = owner_db.execute(f'SELECT max(seq) FROM "{bulk.slug}".audit_record').fetchone()[0] or 0
    manifest = finished(kick_off(bulk, backend, _type="Patient"), backend)
    httpx.get(manifest["output"][0]["url"], headers=backend)
    events = [
        json.loads(row[0])
        for row in owner_db.execute(
            f'SELECT event FROM "{bulk.slug}".audit_record WHERE seq > %s ORDER BY seq', [before]
        ).fetchall()
    ]
    kinds = [(e["subtype"][0]["code"], e["action"]) for e in events]
    assert kinds == [("operation", "E"), ("operation", "R")]  # status polls are not recorded
    queries = [entity for e in events for entity in e["entity"] if "query" in entity]
    assert "_type=Patient" in base64_text(queries[0]["query"])
    assert "Patient-1.ndjson" in base64_text(queries[1]["query"])


def base64_text(value: str) -> str:
    return base64.b64decode(value).decode()


def test_worker_killed_mid_export_resumes_without_duplicates(bulk, backend, owner_db):
    """Locks stop the worker at its second checkpoint, one batch written past the first: kill -9
    it there; the next worker cuts the file back and resumes. A row lock on the job stops a
    checkpoint, a table lock the next batch's read; each is taken while the worker waits at the
    other, so no step races the worker."""
    status_url = kick_off(bulk, backend, _type="Observation")
    export_id = status_url.rsplit("/", 1)[1]
    table = f'"{bulk.slug}".bulk_export'
    row_lock = f"SELECT 1 FROM {table} WHERE id = %s FOR UPDATE"
    read_lock = f'LOCK TABLE "{bulk.slug}".fhir_resource_version IN ACCESS EXCLUSIVE MODE'
    env = {**os.environ, "EXPORT_BATCH_SIZE": "50", "WORKER_POLL_SECONDS": "0.1"}
    url = os.environ["DATABASE_URL"]
    with psycopg.connect(url) as first, psycopg.connect(url) as reads, psycopg.connect(url) as second:
        reads.execute(read_lock)  # the first batch's read will wait
        first.execute(row_lock, [export_id])  # the claim will wait
        worker = subprocess.Popen(
            [sys.executable, str(BASE_DIR / "manage.py"), "worker"], cwd=BASE_DIR, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for(owner_db, "query LIKE %s", ["UPDATE bulk_export SET status%"])
            first.commit()
            wait_for(owner_db, "query LIKE %s", ["(SELECT r.resource_id%"])  # claimed, at the first read
            first.execute(row_lock, [export_id])  # the first checkpoint will wait
            reads.commit()
            wait_for(owner_db, "query LIKE %s", ["UPDATE bulk_export SET progress%"])
            reads.execute(read_lock)  # the second batch's read will wait
            first.commit()  # the first checkpoint is stored
            wait_for(owner_db, "query LIKE %s", ["(SELECT r.resource_id%"])
            second.execute(row_lock, [export_id])  # the second checkpoint will wait
            reads.commit()
            wait_for(owner_db, "query LIKE %s", ["UPDATE bulk_export SET progress%"])
            running = httpx.get(status_url, headers=backend)
            assert running.status_code == 202 and running.headers["X-Progress"].startswith("50 resources")
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=30)
        finally:
            if worker.poll() is None:
                worker.kill()
        second.rollback()
    written = settings.EXPORT_DIR / bulk.slug / export_id / "Observation-1.ndjson"
    assert len(written.read_text().splitlines()) == 100  # one batch past the checkpoint
    run_worker(EXPORT_BATCH_SIZE="50")
    manifest = httpx.get(status_url, headers=backend).json()
    lines = lines_by_type(manifest, backend)["Observation"]
    assert (
        len(lines)
        == len({line["id"] for line in lines})
        == current_counts(owner_db, bulk.slug)["Observation"]
    )
    attempts = owner_db.execute(f"SELECT attempts FROM {table} WHERE id = %s", [export_id]).fetchone()[0]
    assert attempts == 2


def wait_for(owner_db, condition: str, params: list) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        waiting = owner_db.execute(
            f"SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND {condition}", params
        ).fetchone()[0]
        if waiting:
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing waited for a lock where {condition} {params}")


def test_capability_statement_names_the_bulk_operations(bulk):
    statement = httpx.get(f"{bulk.base}/metadata").json()
    assert statement["instantiates"] == ["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"]
    rest = statement["rest"][0]
    definitions = {o["definition"] for o in rest["operation"] if o["name"] == "export"}
    assert definitions == {"http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"}
    by_type = {r["type"]: r for r in rest["resource"]}
    for resource_type, name in (("Patient", "patient-export"), ("Group", "group-export")):
        assert {
            "name": "export",
            "definition": f"http://hl7.org/fhir/uv/bulkdata/OperationDefinition/{name}",
        } in (by_type[resource_type]["operation"])


def test_expired_exports_are_removed_by_the_worker(bulk, backend):
    status_url = kick_off(bulk, backend, _type="Patient")
    finished(status_url, backend)
    folder = settings.EXPORT_DIR / bulk.slug / status_url.rsplit("/", 1)[1]
    assert folder.is_dir()
    run_worker(EXPORT_RETENTION_HOURS="0")
    assert not folder.exists()
    assert httpx.get(status_url, headers=backend).status_code == 404


def test_export_command_writes_the_same_files(bulk, owner_db, tmp_path):
    result = manage_command(
        "export", "--tenant", bulk.slug, "--type", "Patient,Encounter", "--output", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "exported" in result.stdout and "Patient" in result.stderr
    counts = current_counts(owner_db, bulk.slug)
    for resource_type in ("Patient", "Encounter"):
        lines = (tmp_path / f"{resource_type}-1.ndjson").read_text().splitlines()
        assert len(lines) == counts[resource_type]
        assert all(json.loads(line)["resourceType"] == resource_type for line in lines)
