"""Sync (sync/) of what records carry besides their resources, over real HTTP against the
provider simulator into tenant alpha: Binary attachments, per-source Provenance, the expiry of
what a provider taught about `$everything`, and the VA-style provider.

Helpers come from tests/test_sync.py (the same tenant, queue and simulator fixtures)."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from django.contrib.auth.models import User

from sync.models import Provider, SnapshotEntry
from sync.simulated_data import Dataset
from sync.simulator import Behaviour
from tests import test_sync
from tests.smart_support import CSRF, PASSWORD, tenant_admin
from tests.test_sync import (
    LARGER,
    SMALL,
    TENANT,
    add_provider,
    assert_complete,
    imported_and_provenances,
    in_alpha,
    link,
    sync,
)

dataset, simulators = test_sync.dataset, test_sync.simulators  # the fixtures, shared


def current(owner_db, kind: str, ident: str) -> dict:
    (content,) = owner_db.execute(
        f"SELECT content FROM {TENANT}.fhir_resource WHERE resource_type = %s AND resource_id = %s",
        [kind, ident],
    ).fetchone()
    return json.loads(content)


def entries(snapshot, kind: str) -> list[str]:
    with in_alpha():
        return list(
            SnapshotEntry.objects.filter(snapshot=snapshot, resource_type=kind).values_list(
                "resource_id", flat=True
            )
        )


def sim_token(simulator) -> str:
    answer = httpx.post(
        simulator.token_url,
        data={"grant_type": "client_credentials", "client_id": "sim-client", "client_secret": "sim-secret"},
    )
    return answer.json()["access_token"]


# ----- Binary / attachments ---------------------------------------------------------------------
def test_simulator_serves_attachments_as_fhir_binary_or_raw_bytes(simulators):
    simulator = simulators(Behaviour.named("epic"))
    document = next(r for (kind, _), r in simulator.data.resources.items() if kind == "DocumentReference")
    served = simulator.served(document)
    url = served["content"][0]["attachment"]["url"]
    assert "data" not in served["content"][0]["attachment"] and url.startswith(
        simulator.base_url + "/Binary/"
    )
    assert "data" in document["content"][0]["attachment"]  # the dataset itself is untouched
    original = document["content"][0]["attachment"]["data"]
    headers = {"Authorization": f"Bearer {sim_token(simulator)}"}
    as_fhir = httpx.get(url, headers={**headers, "Accept": "application/fhir+json"})
    assert as_fhir.headers["Content-Type"] == "application/fhir+json"
    assert as_fhir.json()["resourceType"] == "Binary" and as_fhir.json()["data"] == original
    raw = httpx.get(url, headers={**headers, "Accept": "*/*"})
    assert raw.headers["Content-Type"].startswith("text/plain") and raw.content == base64.b64decode(original)
    assert httpx.get(url + "x", headers=headers).status_code == 404


@pytest.mark.parametrize("raw", [False, True], ids=["fhir-json", "raw-bytes"])
def test_attachments_are_fetched_once_stored_as_binary_and_pointed_at_locally(simulators, owner_db, raw):
    simulator = simulators(Behaviour.named("cerner", delay_seconds=0, binary_raw=raw))
    link_id = link(add_provider(simulator, "cerner"), LARGER)
    snapshot = sync(link_id)
    assert_complete(snapshot, simulator, LARGER)
    binaries = [path for _, path, _ in simulator.log if path.startswith("/fhir/Binary/")]
    expected = {
        i for key, idents in simulator.attachments.items() for i in idents if key in _compartment(simulator)
    }
    assert len(binaries) == len(expected) == snapshot.counts["Binary"] > 0  # each fetched once
    documents = entries(snapshot, "DocumentReference")
    assert documents
    for ident in documents:
        document = current(owner_db, "DocumentReference", ident)
        source = simulator.data.resources[tuple(document["meta"]["source"].rsplit("/", 2)[-2:])]
        for stored, original in zip(document["content"], source["content"], strict=True):
            attachment = stored["attachment"]
            assert "data" not in attachment and attachment["url"].startswith("Binary/")
            binary = current(owner_db, "Binary", attachment["url"].removeprefix("Binary/"))
            assert binary["data"] == original["attachment"]["data"]
            assert binary["contentType"] == original["attachment"]["contentType"]
            assert binary["meta"]["source"].startswith(simulator.base_url + "/Binary/")
    assert snapshot.fetched >= len(expected)
    again = sync(link_id)  # unchanged: nothing written, nothing fetched twice within a run
    assert again.status == "complete" and again.written == 0


def _compartment(simulator) -> set:
    return {(r["resourceType"], r["id"]) for r in simulator.data.compartment(LARGER)}


def test_attachment_urls_elsewhere_are_kept_and_missing_binaries_point_at_the_provider(simulators, owner_db):
    data = Dataset.load((SMALL,))
    documents = sorted(key for key in data.by_patient[SMALL] if key[0] == "DocumentReference")
    foreign, gone = documents[0], documents[1]
    data.resources[foreign]["content"][0]["attachment"] = {
        "contentType": "application/pdf",
        "url": "https://elsewhere.example.org/notes/1.pdf",
    }
    simulator = simulators(Behaviour(binary_urls=True), data=data)
    lost = simulator.attachments[gone][0]
    del simulator.binaries[lost]  # the provider names a Binary it no longer has
    snapshot = sync(link(add_provider(simulator), SMALL))
    assert snapshot.status == "complete", snapshot.description
    by_source = {}
    for ident in entries(snapshot, "DocumentReference"):
        document = current(owner_db, "DocumentReference", ident)
        by_source[tuple(document["meta"]["source"].rsplit("/", 2)[-2:])] = document
    assert (
        by_source[foreign]["content"][0]["attachment"]["url"] == "https://elsewhere.example.org/notes/1.pdf"
    )
    assert by_source[gone]["content"][0]["attachment"]["url"] == f"{simulator.base_url}/Binary/{lost}"
    assert snapshot.counts["Binary"] == len(documents) - 2 + sum(
        len(simulator.attachments.get(key, ()))
        for key in data.by_patient[SMALL]
        if key[0] == "DiagnosticReport"
    )


# ----- per-source Provenance ------------------------------------------------------------------
def test_each_imported_version_has_its_provenance_and_an_unchanged_resync_writes_none(
    simulators, owner_db, fhir
):
    data = Dataset.load((SMALL,))
    simulator = simulators(Behaviour(invalid=True), data=data)
    provider = add_provider(simulator)
    link_id = link(provider, SMALL)
    first = sync(link_id)
    assert_complete(first, simulator, SMALL)
    imported, recorders = imported_and_provenances(first)
    assert first.written == len(imported) + len(recorders)  # a new provider: everything new
    changed = {change["resource"] for change in first.changes}
    kind, ident, version = next(e for e in imported if f"{e[0]}/{e[1]}" in changed)
    (recorder,) = [p for p, versions in recorders.items() if (kind, ident, version) in versions]
    record = current(owner_db, "Provenance", recorder)
    target = f"{kind}/{ident}/_history/{version}"
    assert sorted(t["reference"] for t in record["target"]) == sorted(
        f"{k}/{i}/_history/{v}" for k, i, v in recorders[recorder]
    )
    assert record["activity"]["coding"][0]["code"] == "CREATE" and record["recorded"].startswith("20")
    assert [agent["type"]["coding"][0]["code"] for agent in record["agent"]] == ["author", "transmitter"]
    assert all(agent["who"]["identifier"]["value"] == simulator.base_url for agent in record["agent"])
    source = current(owner_db, kind, ident)["meta"]["source"]
    assert {
        "role": "source",
        "what": {"identifier": {"system": "urn:ietf:rfc:3986", "value": source}, "display": source},
    } in record["entity"]
    assert len(record["entity"]) == len(record["target"])
    removed = [
        {
            part["url"]: part.get("valueString") or part["valueReference"]["reference"]
            for part in e["extension"]
        }
        for e in record["extension"]
    ]
    assert [r for r in removed if r["target"] == target] == [
        {"target": target, "element": c["element"], "reason": c["reason"]}
        for c in first.changes
        if c["resource"] == f"{kind}/{ident}"
    ]
    # US Core: a client finds a resource's Provenance by target (besides the provider's own)
    found = fhir.get("/Provenance", params={"target": f"{kind}/{ident}"}).json()
    assert record["id"] in [e["resource"]["id"] for e in found.get("entry", [])]

    again = sync(link_id)  # unchanged: zero new versions, the same manifest, Provenances included
    assert again.status == "complete" and again.written == 0
    assert sorted(imported_and_provenances(again)[0]) == sorted(imported)
    assert imported_and_provenances(again)[1] == recorders

    observation = next(key for key in data.by_patient[SMALL] if key[0] == "Observation")
    data.resources[observation] = {**data.resources[observation], "status": "amended"}
    third = sync(link_id)  # one resource changed: its new version and a Provenance of it alone
    assert third.status == "complete" and third.written == 2, third.written
    entries, now_recorders = imported_and_provenances(third)
    (updated,) = [e for e in entries if e not in imported]
    assert updated[0] == "Observation" and updated[2] == 2
    (new,) = set(now_recorders) - set(recorders)
    assert now_recorders[new] == {updated}
    update = current(owner_db, "Provenance", new)
    assert update["activity"]["coding"][0]["code"] == "UPDATE"
    assert update["target"] == [{"reference": f"{updated[0]}/{updated[1]}/_history/2"}]


# ----- $everything failure memory ---------------------------------------------------------------
def test_a_remembered_everything_failure_expires_and_the_admin_clears_it(simulators, smart_server):
    simulator = simulators(Behaviour(everything="lying"))
    provider = add_provider(simulator)
    link_id = link(provider, SMALL)

    def asked() -> int:
        return sum("$everything" in path and "_offset" not in path for _, path, _ in simulator.log)

    def learned(**change) -> dict:
        with in_alpha():
            if change:
                Provider.objects.filter(name=provider).update(**change)
            return Provider.objects.get(name=provider).learned

    def days_ago(days: float) -> str:
        return (datetime.now(UTC) - timedelta(days=days)).isoformat()

    assert sync(link_id).status == "complete" and asked() == 1
    remembered = learned()
    assert remembered["everything"] == "incomplete"
    assert datetime.now(UTC) - datetime.fromisoformat(remembered["everything_at"]) < timedelta(minutes=5)
    assert sync(link_id).status == "complete" and asked() == 1  # remembered: not asked again
    learned(learned={"everything": "incomplete", "everything_at": days_ago(6)})
    assert sync(link_id).status == "complete" and asked() == 1  # within the 7 days
    learned(learned={"everything": "incomplete", "everything_at": days_ago(8)})
    assert sync(link_id).status == "complete" and asked() == 2  # expired: tried again, learned again
    assert learned()["everything"] == "incomplete" and learned()["everything_at"] > days_ago(1)
    learned(learned={"everything": "failed"})  # remembered before outcomes had a time: stale
    assert sync(link_id).status == "complete" and asked() == 3
    learned(
        options={"everything_retry_days": 1}, learned={"everything": "failed", "everything_at": days_ago(2)}
    )
    assert sync(link_id).status == "complete" and asked() == 4  # the provider's own retry period
    assert sync(link_id).status == "complete" and asked() == 4

    name = f"syncadmin{uuid.uuid4().hex[:8]}"
    with in_alpha():
        User.objects.create_superuser(name, password=PASSWORD)
        provider_id = str(Provider.objects.get(name=provider).id)
    with tenant_admin(smart_server.url, name) as browser:
        listing = browser.get("/sync/provider/")
        assert listing.status_code == 200 and "Forget what sync learned" in listing.text
        done = browser.post(
            "/sync/provider/",
            data={
                "csrfmiddlewaretoken": CSRF.search(listing.text).group(1),
                "action": "forget_learned",
                "_selected_action": provider_id,
                "index": "0",
            },
        )
        assert done.status_code == 200 and "forgot what it learned about 1 provider" in done.text
    assert learned() == {}
    assert sync(link_id).status == "complete" and asked() == 5


# ----- VA-style provider ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def va_dataset() -> Dataset:
    return Dataset.load(id_prefix="I2-")


def test_va_sync_is_complete_by_patient_searches_paged_by_page_number(simulators, va_dataset):
    simulator = simulators(Behaviour.named("va", max_count=25), data=va_dataset)  # small pages: paging shows
    patient = "I2-" + LARGER
    snapshot = sync(link(add_provider(simulator, "va"), patient))
    assert_complete(snapshot, simulator, patient)
    fhir = [(path, status) for _, path, status in simulator.log if path.startswith("/fhir/")]
    searches = [(path, status) for path, status in fhir if "?" in path]
    assert searches and all(status == 200 for _, status in fhir)
    assert all("patient=I2-" in path and "subject=" not in path for path, _ in searches)
    assert all("_count=100" in path or "_count=25" in path for path, _ in searches)  # asked 100, capped
    assert any(path.startswith("/fhir/Observation?") and "page=4" in path for path, _ in searches)
    assert not any("$everything" in path for path, _ in fhir)
    assert not any("_offset" in path for path, _ in fhir)
    observations = sum(1 for key in va_dataset.by_patient[patient] if key[0] == "Observation")
    assert snapshot.counts["Observation"] == observations > 75


def test_the_generic_strategy_fails_on_va_quirks(simulators, va_dataset):
    """What the va strategy is for: a VA API refuses searches by `subject`."""
    simulator = simulators(Behaviour.named("va"), data=va_dataset)
    snapshot = sync(link(add_provider(simulator, "generic"), "I2-" + SMALL))
    assert snapshot.status == "failed" and "refused: HTTP 400" in snapshot.description
