"""Sync (sync/) against the provider simulator over real HTTP, into tenant alpha of the real
database: complete runs per provider family, token refresh, 429 storms, transient failures,
re-sync without new versions, colliding ids, normalisation, a killed worker, credentials at rest.

Most runs use the sync queue in this process (tenants.jobs with the sync queue only); the kill
test and the `sync --wait` test run `manage.py worker` subprocesses. Patients are the two
lightest Synthea patients (66 and 146 resources)."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from config.environment import BASE_DIR
from sync import connections
from sync.models import LinkedPatient, Provider, Snapshot, SnapshotEntry
from sync.runner import QUEUE
from sync.simulated_data import LIGHT_PATIENTS, Dataset
from sync.simulator import Behaviour, Credentials, Simulator
from tenants import jobs
from tenants.lifecycle import get_tenant
from tests.support import manage_command

TENANT = "alpha"
SMALL, LARGER = LIGHT_PATIENTS


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return Dataset.load()


@pytest.fixture
def simulators(dataset):
    started: list[Simulator] = []

    def start(behaviour: Behaviour, credentials: Credentials | None = None, data: Dataset | None = None):
        simulator = Simulator(behaviour, credentials, data or dataset).start()
        started.append(simulator)
        return simulator

    yield start
    for simulator in started:
        simulator.stop()


def add_provider(simulator: Simulator, kind: str = "generic", rpm: int = 0, query: str = "", **opts) -> str:
    name = f"{kind}-{uuid.uuid4().hex[:8]}"
    query = query or "client_id=sim-client&client_secret=sim-secret"
    url = simulator.base_url.replace("http://", "fhir+http://") + f"?token_url={simulator.token_url}&{query}"
    call_command("add_provider", "--tenant", TENANT, "--name", name, "--type", kind, url, "--rpm", str(rpm))
    if opts:
        with in_alpha():
            Provider.objects.filter(name=name).update(options=opts)
    return name


def link(provider: str, patient: str, refresh_token: str = "sim-refresh") -> str:  # noqa: S107
    """The link id `link_patient` prints."""
    out = io.StringIO()
    args = ["--refresh-token", refresh_token] if refresh_token else []
    call_command(
        "link_patient", "--tenant", TENANT, "--provider", provider, "--provider-patient-id", patient, *args,
        stdout=out,
    )  # fmt: skip
    return out.getvalue().strip()


class in_alpha:
    def __enter__(self):
        connection.set_tenant(get_tenant(TENANT))

    def __exit__(self, *exc):
        connection.set_schema_to_public()


def sync(link_id: str) -> Snapshot:
    """Queue a snapshot and run the sync queue in this process until nothing waits."""
    with in_alpha():
        snapshot = Snapshot.objects.create(patient_id=link_id)
    jobs.serve([QUEUE], poll_seconds=0.1, once=True)
    with in_alpha():
        return Snapshot.objects.get(id=snapshot.id)


def start_worker() -> subprocess.Popen:
    """`manage.py worker`, polling often."""
    return subprocess.Popen(
        [sys.executable, str(BASE_DIR / "manage.py"), "worker"], cwd=BASE_DIR,
        env={**os.environ, "WORKER_POLL_SECONDS": "0.1"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def expected_keys(simulator: Simulator, patient: str) -> set[tuple[str, str]]:
    """What a complete sync holds: the compartment and what it references, transitively, and the
    Binaries its attachments are served as (Behaviour.binary_urls)."""
    from sync.strategies import local_key, references_in

    keys = {(r["resourceType"], r["id"]) for r in simulator.data.compartment(patient)}
    frontier = set(keys)
    while frontier:
        found = {
            key for k in frontier for ref in references_in(simulator.data.resources[k])
            if (key := local_key(ref, simulator.base_url)) and key in simulator.data.resources
        }  # fmt: skip
        frontier = found - keys
        keys |= found
    return keys | {("Binary", ident) for key in keys for ident in simulator.attachments.get(key, ())}


def stored(snapshot: Snapshot) -> Counter:
    with in_alpha():
        return Counter(
            SnapshotEntry.objects.filter(snapshot=snapshot).values_list("resource_type", flat=True)
        )


def versions_of(owner_db, ids: list[str]) -> int:
    return owner_db.execute(
        f"SELECT count(*) FROM {TENANT}.fhir_resource_version WHERE resource_id = ANY(%s)", [ids]
    ).fetchone()[0]


def imported_and_provenances(snapshot: Snapshot) -> tuple[list[tuple[str, str, int]], dict[str, set]]:
    """The manifest's imported versions (type, id, version), and the Provenances that recorded
    them (id -> the versions each names in the manifest), apart."""
    with in_alpha():
        entries = list(
            SnapshotEntry.objects.filter(snapshot=snapshot).values_list(
                "resource_type", "resource_id", "version_id", "provenance_id"
            )
        )
    recorders: dict[str, set] = {}
    for kind, ident, version, recorder in entries:
        if recorder:
            recorders.setdefault(recorder, set()).add((kind, ident, version))
    imported = [(k, i, v) for k, i, v, _ in entries if not (k == "Provenance" and i in recorders)]
    return imported, recorders


def assert_complete(snapshot: Snapshot, simulator: Simulator, patient: str) -> None:
    """The snapshot holds what the provider has for the patient, and a Provenance for each version."""
    assert snapshot.status == "complete", snapshot.description
    expected = Counter(kind for kind, _ in expected_keys(simulator, patient))
    imported, recorders = imported_and_provenances(snapshot)
    assert Counter(kind for kind, _, _ in imported) == expected
    with in_alpha():
        in_manifest = set(
            SnapshotEntry.objects.filter(snapshot=snapshot, resource_type="Provenance").values_list(
                "resource_id", flat=True
            )
        )
    assert set(recorders) <= in_manifest
    assert sorted(v for versions in recorders.values() for v in versions) == sorted(imported)


def test_connection_strings():
    parsed = connections.parse(
        "fhir://ehr.example.org/api/FHIR/R4/?client_id=c&token_url=https://ehr.example.org/t"
    )
    assert parsed.base_url == "https://ehr.example.org/api/FHIR/R4" and parsed.client_id == "c"
    for bad in (
        "https://ehr.example.org/fhir",
        "fhir+http://ehr.example.org/fhir",  # plain HTTP only on loopback (DEBUG is off here)
        "fhir://ehr.example.org/fhir?token_url=http://ehr.example.org/t",
        "fhir://ehr.example.org/fhir?client_secret=s3cret&colour=blue",
        "fhir://ehr.example.org/fhir?use_jwt_assertion=true",
    ):
        with pytest.raises(connections.InvalidConnection) as refused:
            connections.parse(bad)
        assert "s3cret" not in str(refused.value)


def test_credentials_are_sealed_in_the_database(simulators, owner_db, tmp_path):
    simulator = simulators(Behaviour())
    secret_file = tmp_path / "secret"
    secret_file.write_text("file-secret-4711\n")
    name = add_provider(simulator, query=f"client_id=sim-client&client_secret_path={secret_file}")
    link_id = link(name, SMALL, refresh_token="refresh-token-0815")
    rows = owner_db.execute(
        f"SELECT p::text, l::text, p.client_secret, l.refresh_token FROM {TENANT}.sync_provider p"
        f" JOIN {TENANT}.sync_linked_patient l ON l.provider_id = p.id WHERE l.id = %s",
        [link_id],
    ).fetchone()
    assert "file-secret-4711" not in rows[0] and "refresh-token-0815" not in rows[1]
    assert rows[2].startswith("phi:1:") and rows[3].startswith("phi:1:")
    # a sealed value moved to another row does not open there (bound to row and field)
    from sync import secrets as sync_secrets

    with in_alpha():
        provider = Provider.objects.get(name=name)
        assert sync_secrets.get(provider, "client_secret") == "file-secret-4711"
        other = LinkedPatient.objects.get(id=link_id)
        other.refresh_token = provider.client_secret
        with pytest.raises(Exception, match="does not belong"):
            sync_secrets.get(other, "refresh_token")


def test_generic_sync_of_two_patients_then_resync_writes_nothing(simulators, owner_db):
    simulator = simulators(Behaviour())
    provider = add_provider(simulator)
    links = {patient: link(provider, patient) for patient in (SMALL, LARGER)}
    first = {patient: sync(link_id) for patient, link_id in links.items()}
    for patient, snapshot in first.items():
        assert_complete(snapshot, simulator, patient)
    assert first[SMALL].written == sum(first[SMALL].counts.values())  # a new provider: all new
    assert first[LARGER].written <= sum(first[LARGER].counts.values())  # shared practitioners reused
    with in_alpha():
        assert Provider.objects.get(name=provider).learned["everything"] == "works"
        ids = list(
            SnapshotEntry.objects.filter(snapshot__in=first.values()).values_list("resource_id", flat=True)
        )
        small = list(
            SnapshotEntry.objects.filter(snapshot=first[SMALL]).values_list("resource_id", flat=True)
        )
        local_patient = LinkedPatient.objects.get(id=links[SMALL]).local_patient_id
    before = versions_of(owner_db, ids)
    again = sync(links[SMALL])
    assert again.status == "complete" and again.written == 0
    assert stored(again) == stored(first[SMALL])
    assert versions_of(owner_db, ids) == before
    content = owner_db.execute(
        f"SELECT content FROM {TENANT}.fhir_resource"
        " WHERE resource_type = 'Encounter' AND resource_id = ANY(%s)",
        [small],
    ).fetchone()[0]
    assert f'"reference":"Patient/{local_patient}"' in content
    assert '"source":"' + simulator.base_url + "/Encounter/" in content
    audited = owner_db.execute(
        f"SELECT patients, action, event FROM {TENANT}.audit_record WHERE client_id = %s ORDER BY seq",
        [f"sync:{provider}"],
    ).fetchall()
    assert len(audited) == 3 and audited[2][0] == [local_patient] and audited[2][1] == "C"
    assert '"$sync"' in audited[2][2]


def test_resources_are_stored_while_the_crawl_fetches_with_their_references_resolved(
    simulators, owner_db, monkeypatch
):
    """Batches of 5: most of the record is stored before the fetch ends (the crawl reads
    referenced Practitioners and Organizations as soon as a resource names them), and every
    reference of every stored resource is a local resource of the snapshot or an absolute URL at
    the provider of something it does not have."""
    from sync import importer
    from sync.strategies import local_key, references_in

    monkeypatch.setattr(importer, "BATCH", 5)
    early: list[int] = []
    store = importer.Import._store

    def watched(self, batch):
        if any(thread.name.startswith("sync-fetch-") for thread in threading.enumerate()):
            early.append(len(batch))
        store(self, batch)

    monkeypatch.setattr(importer.Import, "_store", watched)
    simulator = simulators(Behaviour.named("epic", delay_seconds=0.02))
    snapshot = sync(link(add_provider(simulator, "epic"), LARGER))
    assert_complete(snapshot, simulator, LARGER)
    assert sum(early) > sum(snapshot.counts.values()) / 4, early
    with in_alpha():
        entries = set(
            SnapshotEntry.objects.filter(snapshot=snapshot).values_list("resource_type", "resource_id")
        )
    rows = owner_db.execute(
        f"SELECT content FROM {TENANT}.fhir_resource WHERE resource_id = ANY(%s)", [[i for _, i in entries]]
    ).fetchall()
    for (content,) in rows:
        for reference in references_in(json.loads(content)):
            target = local_key(reference, simulator.base_url)  # None: contained, urn:, elsewhere
            if target is None:
                continue
            if reference.startswith(simulator.base_url):
                assert target not in simulator.data.resources, reference
            else:
                assert target in entries, reference


def test_a_provider_lost_mid_run_fails_the_snapshot_and_nothing_stored_meanwhile_shows(
    simulators, owner_db, monkeypatch
):
    """Batches already stored when the provider goes away are rolled back with the run."""
    from sync import client, importer

    monkeypatch.setattr(importer, "BATCH", 5)
    monkeypatch.setattr(client, "BACKOFF_BASE", 0.05)
    simulator = simulators(Behaviour(delay_seconds=0.02))
    stored_early: list[str] = []
    store = importer.Import._store

    def store_then_lose_the_provider(self, batch):
        store(self, batch)
        if not stored_early:
            simulator.stop()
        stored_early.extend(item.local for item in batch)

    monkeypatch.setattr(importer.Import, "_store", store_then_lose_the_provider)
    snapshot = sync(link(add_provider(simulator), LARGER))
    assert snapshot.status == "failed" and "connection failed" in snapshot.description, snapshot.description
    assert stored_early
    with in_alpha():
        assert not SnapshotEntry.objects.filter(snapshot=snapshot).exists()
    assert versions_of(owner_db, stored_early) == 0


def test_a_resource_refused_on_storing_fails_the_run_and_stops_the_fetch(simulators, monkeypatch):
    from fhirserver import errors
    from sync import importer

    monkeypatch.setattr(importer, "BATCH", 5)

    def refuse(self, batch):
        raise errors.bad_request("refused for the test", expression="Observation.status")

    monkeypatch.setattr(importer.Import, "_store", refuse)
    simulator = simulators(Behaviour(delay_seconds=0.05, page_size=5))
    snapshot = sync(link(add_provider(simulator), LARGER))
    assert snapshot.status == "failed" and "refused on storing" in snapshot.description, snapshot.description
    # 146 resources in pages of 5 would take ~40 requests; the fetch stopped soon after the refusal
    assert len([path for _, path, _ in simulator.log if path.startswith("/fhir/")]) < 20, simulator.log


def test_an_answer_that_is_not_json_fails_the_run_clearly(simulators):
    simulator = simulators(Behaviour(html_every=3))
    snapshot = sync(link(add_provider(simulator), SMALL))
    assert snapshot.status == "failed" and "the answer is not JSON" in snapshot.description, (
        snapshot.description
    )
    with in_alpha():
        assert not SnapshotEntry.objects.filter(snapshot=snapshot).exists()


def test_epic_searches_observations_by_category(simulators):
    simulator = simulators(Behaviour.named("epic"))
    snapshot = sync(link(add_provider(simulator, "epic"), LARGER))
    assert_complete(snapshot, simulator, LARGER)
    observation_searches = [
        (path, status) for _, path, status in simulator.log if path.startswith("/fhir/Observation?")
    ]
    assert any(status == 400 and "category" not in path for path, status in observation_searches)
    assert sum("category=laboratory" in path and status == 200 for path, status in observation_searches) >= 1
    assert not any("$everything" in path for _, path, _ in simulator.log)


def test_lying_everything_falls_back_to_searches(simulators):
    simulator = simulators(Behaviour(everything="lying"))
    provider = add_provider(simulator)
    snapshot = sync(link(provider, SMALL))
    assert_complete(snapshot, simulator, SMALL)
    with in_alpha():
        assert Provider.objects.get(name=provider).learned["everything"] == "incomplete"
    assert sync(link(provider, LARGER)).status == "complete"
    # remembered: the next run does not ask $everything again
    assert sum("$everything" in path and "_offset" not in path for _, path, _ in simulator.log) == 1


def test_short_tokens_are_refreshed_mid_sync_and_500s_retried(simulators):
    simulator = simulators(Behaviour.named("cerner", token_seconds=1, delay_seconds=0.05, fail_every=9))
    snapshot = sync(link(add_provider(simulator, "cerner"), LARGER))
    assert_complete(snapshot, simulator, LARGER)
    tokens = [status for _, path, status in simulator.log if path == "/token"]
    assert len(tokens) >= 2 and set(tokens) == {200}
    assert any(status == 500 for _, _, status in simulator.log) and snapshot.retries > 0


def test_429_storm_stays_under_the_configured_rate(simulators):
    simulator = simulators(Behaviour(limit_per_window=6, window_seconds=1.0))
    rpm = 600
    snapshot = sync(link(add_provider(simulator, rpm=rpm), SMALL))
    assert_complete(snapshot, simulator, SMALL)
    fhir = [(moment, status) for moment, path, status in simulator.log if path.startswith("/fhir/")]
    assert any(status == 429 for _, status in fhir) and snapshot.waited_seconds > 0
    per_second = Counter(math.floor(moment) for moment, _ in fhir)
    assert max(per_second.values()) <= rpm / 60 + 1, per_second
    assert snapshot.requests == len([1 for _, path, _ in simulator.log if path.startswith("/fhir/")])


def test_colliding_ids_from_two_providers_stay_distinct(simulators, owner_db, tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    first = simulators(Behaviour())
    second = simulators(Behaviour(), Credentials(public_key_pem=public.decode()))
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(pem)
    one = sync(link(add_provider(first), SMALL))
    query = f"client_id=sim-client&use_jwt_assertion=true&private_key_path={key_file}&jwt_alg=RS384"
    two = sync(link(add_provider(second, query=query), SMALL, refresh_token=""))  # client credentials
    assert one.status == two.status == "complete", two.description
    with in_alpha():
        ids = [
            set(SnapshotEntry.objects.filter(snapshot=s).values_list("resource_id", flat=True))
            for s in (one, two)
        ]
    assert len(ids[0]) == len(ids[1]) and not ids[0] & ids[1]
    assert versions_of(owner_db, list(ids[0] | ids[1])) >= len(ids[0]) * 2


def test_invalid_resources_are_normalised_and_recorded(simulators, owner_db):
    simulator = simulators(Behaviour(invalid=True))
    snapshot = sync(link(add_provider(simulator), SMALL))
    assert_complete(snapshot, simulator, SMALL)
    removed = Counter(change["element"].split(".", 1)[1] for change in snapshot.changes)
    assert removed["language"] > 0 and removed["issued"] > 0
    with in_alpha():
        ids = list(SnapshotEntry.objects.filter(snapshot=snapshot).values_list("resource_id", flat=True))
    assert not owner_db.execute(
        f"SELECT 1 FROM {TENANT}.fhir_resource WHERE resource_id = ANY(%s)"
        ' AND content LIKE \'%%"language":""%%\'',
        [ids],
    ).fetchone()


def test_killed_worker_leaves_no_partial_snapshot_and_the_next_run_completes(simulators, owner_db):
    simulator = simulators(Behaviour.named("cerner", delay_seconds=0.15))
    link_id = link(add_provider(simulator, "cerner"), LARGER)
    with in_alpha():
        snapshot = Snapshot.objects.create(patient_id=link_id)
    worker = start_worker()
    try:
        deadline = time.monotonic() + 30
        while (
            time.monotonic() < deadline
            and sum(p.startswith("/fhir/Observation") for _, p, _ in simulator.log) < 3
        ):
            time.sleep(0.05)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    with in_alpha():
        killed = Snapshot.objects.get(id=snapshot.id)
        assert killed.status == "running" and not SnapshotEntry.objects.filter(snapshot=snapshot).exists()
        local_patient = LinkedPatient.objects.get(id=link_id).local_patient_id
    assert local_patient == ""  # set only when a snapshot completes
    # The dead worker's backend ends (and its advisory lock with it) once PostgreSQL reads the
    # closed socket: at once on a quiet machine, later on a loaded one.
    deadline = time.monotonic() + 30
    while (
        time.monotonic() < deadline
        and owner_db.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database ="
            " (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone()[0]
    ):
        time.sleep(0.1)
    jobs.serve([QUEUE], poll_seconds=0.1, once=True)  # takes the orphaned run over
    with in_alpha():
        done = Snapshot.objects.get(id=snapshot.id)
        ids = list(SnapshotEntry.objects.filter(snapshot=snapshot).values_list("resource_id", flat=True))
    assert_complete(done, simulator, LARGER)
    assert done.attempts == 2 and versions_of(owner_db, ids) == len(ids)  # nothing written twice
    assert done.started > killed.started and done.finished > done.started


def test_sync_command_waits_and_fails_clearly(simulators):
    simulator = simulators(Behaviour(delay_seconds=0.1))
    provider = add_provider(simulator)
    good, bad = link(provider, SMALL), link(provider, LARGER, refresh_token="revoked-4711")
    worker = start_worker()
    try:
        done = manage_command("sync", "--tenant", TENANT, "--patient", good, "--wait", "--timeout", "60")
        again = manage_command("sync", "--tenant", TENANT, "--patient", good, "--wait", "--timeout", "60")
        failed = manage_command("sync", "--tenant", TENANT, "--patient", bad, "--wait", "--timeout", "60")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "complete:" in done.stderr and "requests" in done.stderr
    # A first sync has nothing to measure progress against; a re-sync has the first one's requests.
    assert "%" not in done.stderr
    assert again.returncode == 0 and re.search(r"\] \d+% (ETA \d+ s|storing)", again.stderr), again.stderr
    assert failed.returncode == 1
    assert "refused the refresh_token grant: HTTP 400 invalid_grant" in failed.stderr
    assert "revoked-4711" not in failed.stderr + failed.stdout


def test_snapshot_endpoints_serve_the_complete_snapshot(simulators, fhir):
    simulator = simulators(Behaviour())
    link_id = link(add_provider(simulator), SMALL)
    snapshot = sync(link_id)
    assert snapshot.status == "complete"
    listed = fhir.get("/$snapshots", params={"link": link_id})
    assert listed.status_code == 200, listed.text
    (only,) = listed.json()["parameter"]
    assert {part["name"]: next(v for k, v in part.items() if k.startswith("value")) for part in only["part"]}[
        "id"
    ] == str(snapshot.id)
    served = fhir.get("/$snapshot", params={"link": link_id}, headers={"Accept-Encoding": "gzip"})
    assert served.status_code == 200 and served.headers["Content-Encoding"] == "gzip"
    bundle = served.json()
    assert bundle["type"] == "collection" and bundle["id"] == str(snapshot.id)
    assert Counter(e["resource"]["resourceType"] for e in bundle["entry"]) == Counter(snapshot.counts)
    with in_alpha():
        patient = LinkedPatient.objects.get(id=link_id).local_patient_id
    assert any(
        e["resource"]["id"] == patient and "name" in e["resource"] for e in bundle["entry"]
    )  # revealed
    everything = fhir.get(f"/Patient/{patient}/$everything", params={"_count": 1000}).json()
    assert len(everything["entry"]) >= len(simulator.data.compartment(SMALL))
    assert fhir.get("/$snapshot", params={"link": str(uuid.uuid4())}).status_code == 404
    assert fhir.get("/$snapshot", params={"link": "nope"}).status_code == 400


def test_snapshots_are_for_administrators_only():
    from smart_auth.context import AuthContext
    from sync.views import require_administrator

    require_administrator(AuthContext(user=None, scopes=frozenset({"system/*.read"})))
    require_administrator(AuthContext(user="a", roles=frozenset({"admin"}), scopes=frozenset({"user/*.rs"})))
    for refused in (
        AuthContext(user="d", scopes=frozenset({"user/*.read"})),
        AuthContext(user=None, scopes=frozenset({"system/Observation.read"})),
        AuthContext(user="p", scopes=frozenset({"patient/*.read"}), patient="1"),
        None,
    ):
        with pytest.raises(Exception, match="Snapshots need"):
            require_administrator(refused)


def test_progress_bar_and_eta_extrapolate_against_the_last_snapshot():
    from sync.management.commands.sync import progress

    started = timezone.now() - timedelta(seconds=30)
    running = Snapshot(status="running", requests=25, started=started)
    assert re.fullmatch(r"\[#####-{15}\] 25% ETA (89|90|91) s, ", progress(running, 100))
    past = Snapshot(status="running", requests=120, started=started)
    assert progress(past, 100) == f"[{'#' * 20}] 100% storing, "
    assert progress(running, 0) == "" and progress(Snapshot(status="pending"), 100) == ""


def test_tenants_reaching_one_provider_with_one_client_share_its_budget(simulators, unique_slug):
    """Two tenants, each with the provider at 600/min, sync at once through two workers: the
    provider sees at most 10 requests (+1) in any second, and the two runs take the time their
    requests need at that one rate, not half of it."""
    simulator = simulators(Behaviour())
    assert manage_command("create_tenant", unique_slug).returncode == 0
    links = []
    for tenant in (TENANT, unique_slug):
        url = simulator.base_url.replace("http://", "fhir+http://")
        url += f"?token_url={simulator.token_url}&client_id=sim-client&client_secret=sim-secret"
        call_command("add_provider", "--tenant", tenant, "--name", "shared", url, "--rpm", "600",
                     stdout=io.StringIO())  # fmt: skip
        out = io.StringIO()
        call_command(
            "link_patient", "--tenant", tenant, "--provider", "shared", "--provider-patient-id", SMALL,
            "--refresh-token", "sim-refresh", stdout=out,
        )  # fmt: skip
        links.append((tenant, out.getvalue().strip()))
    workers = [start_worker(), start_worker()]
    try:
        runs = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(BASE_DIR / "manage.py"),
                    "sync",
                    "--tenant",
                    tenant,
                    "--patient",
                    link_id,
                    "--wait",
                    "--timeout",
                    "90",
                ],
                cwd=BASE_DIR,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for tenant, link_id in links
        ]
        outcomes = [(run.wait(timeout=120), run.stderr.read()) for run in runs]
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(timeout=30)
    assert all(code == 0 for code, _ in outcomes), [err[-500:] for _, err in outcomes]
    runs = []
    for tenant, link_id in links:
        connection.set_tenant(get_tenant(tenant))
        runs.append(Snapshot.objects.get(patient_id=link_id))
    connection.set_schema_to_public()
    assert max(run.started for run in runs) < min(run.finished for run in runs), "the runs overlapped"
    moments = sorted(moment for moment, path, _ in simulator.log if path.startswith("/fhir/"))
    per_second = Counter(math.floor(moment) for moment in moments)
    assert max(per_second.values()) <= 11, per_second
    assert moments[-1] - moments[0] >= (len(moments) - 1) * 0.1 - 0.5


def test_rotate_phi_key_reseals_sync_credentials(simulators, owner_db, unique_slug):
    """In a tenant of its own: rotating alpha's key would leave the session's servers unable to read it."""
    from fhirserver.storage import keyring

    assert manage_command("create_tenant", unique_slug).returncode == 0
    try:
        simulator = simulators(Behaviour())
        url = simulator.base_url.replace("http://", "fhir+http://")
        url += f"?token_url={simulator.token_url}&client_id=sim-client&client_secret=sim-secret"
        call_command("add_provider", "--tenant", unique_slug, "--name", "p", url, stdout=io.StringIO())
        call_command(
            "link_patient", "--tenant", unique_slug, "--provider", "p", "--provider-patient-id", SMALL,
            "--refresh-token", "sim-refresh", stdout=io.StringIO(),
        )  # fmt: skip
        new_master = base64.b64encode(secrets.token_bytes(32)).decode()
        rotating = {"PHI_MASTER_KEY": new_master, "PHI_RETIRED_MASTER_KEYS": os.environ["PHI_MASTER_KEY"]}
        rotated = manage_command("rotate_phi_key", "--tenant", unique_slug, env=rotating)
        assert rotated.returncode == 0, rotated.stderr
        assert "and 2 sync credentials" in rotated.stdout
        new_id = keyring.key_id(base64.b64decode(new_master))
        sealed = owner_db.execute(
            f"SELECT p.client_secret, l.refresh_token FROM {unique_slug}.sync_provider p"
            f" JOIN {unique_slug}.sync_linked_patient l ON l.provider_id = p.id"
        ).fetchone()
        assert all(value.startswith(f"phi:1:{new_id}:") for value in sealed)
    finally:
        manage_command("delete_tenant", unique_slug, "--yes")


def test_scheduled_resync_queues_due_links_once(simulators):
    from sync import schedule

    simulator = simulators(Behaviour())
    provider = add_provider(simulator)
    with in_alpha():
        Provider.objects.filter(name=provider).update(resync_hours=6)
    link_id = link(provider, SMALL)
    first = sync(link_id)  # its own pending snapshot keeps the schedule from adding one
    assert first.status == "complete"
    with in_alpha():
        assert Snapshot.objects.filter(patient_id=link_id).count() == 1
        Snapshot.objects.filter(id=first.id).update(created=first.created - timedelta(hours=7))
    assert schedule.queue_due() == 1
    assert schedule.queue_due() == 0  # pending already
    jobs.serve([QUEUE], poll_seconds=0.1, once=True)
    with in_alpha():
        runs = list(Snapshot.objects.filter(patient_id=link_id).order_by("created"))
    assert [run.status for run in runs] == ["complete", "complete"] and runs[1].written == 0
    assert schedule.queue_due() == 0  # fresh again
