"""Running one sync: the queue entry (tenants.jobs serves it) and the run itself.

A Snapshot row is the job: `enqueue` adds one as pending; a worker claims it, fetches
(sync.strategies through sync.client), prepares and stores (sync.importer). A run is all or
nothing: a worker that dies leaves the row running with no entries, its advisory lock goes with
its connection, and the next worker restarts the run from the start; deterministic ids and
content hashes make the rerun write nothing twice. Failures end the snapshot `failed` with a
description that names what failed, never a credential or patient data.
"""

from __future__ import annotations

import logging
import time

import httpx

from fhirserver import errors
from fhirserver.storage.repository import now
from sync import importer, schedule
from sync.auth import AuthFailed, TokenSource
from sync.client import TIMEOUT, Client, FetchFailed
from sync.limiter import Limiter, budget_key
from sync.models import LinkedPatient, Provider, Snapshot
from sync.shared import SharedConnection
from sync.strategies import Crawl, strategy_for
from tenants import jobs

logger = logging.getLogger(__name__)
PROGRESS_SECONDS = 1.0


def enqueue(link: LinkedPatient) -> Snapshot:
    return Snapshot.objects.create(patient=link)


def run_claimed(snapshot_id: object) -> None:
    snapshot = Snapshot.objects.select_related("patient__provider").get(id=snapshot_id)
    link = snapshot.patient
    provider = link.provider
    # A rerun (its worker died) starts over: progress of the earlier attempt is reset.
    snapshot.started, snapshot.fetched, snapshot.requests, snapshot.retries = now(), 0, 0, 0
    snapshot.waited_seconds, snapshot.description = 0.0, ""
    snapshot.save(
        update_fields=["started", "fetched", "requests", "retries", "waited_seconds", "description"]
    )
    begun = time.monotonic()
    try:
        with httpx.Client(timeout=TIMEOUT, follow_redirects=False) as http, SharedConnection().shared() as db:
            client = Client(
                provider.base_url,
                http,
                TokenSource(provider, link, http, db),
                Limiter(budget_key(provider.base_url, provider.client_id), provider.requests_per_minute, db),
            )
            found = _crawl(snapshot, provider, link, client, db)
        fetched = time.monotonic()
        prepared, changes = importer.prepare(provider.id, provider.base_url, found)
        prepared_at = time.monotonic()
        _record(snapshot, client, changes)
        written = importer.store(snapshot, prepared)
        Snapshot.objects.filter(id=snapshot.id).update(
            description=f"fetched in {fetched - begun:.1f} s, prepared in {prepared_at - fetched:.1f} s,"
            f" stored in {time.monotonic() - prepared_at:.1f} s; {len(changes)} normalisation changes"
        )
        Provider.objects.filter(id=provider.id).update(learned=provider.learned)
        LinkedPatient.objects.filter(id=link.id).update(
            local_patient_id=importer.local_id(provider.id, "Patient", link.provider_patient_id)
        )
        logger.info("sync %s complete: %d resources, %d new versions", snapshot.id, len(prepared), written)
    except (FetchFailed, AuthFailed) as failure:
        _fail(snapshot, str(failure))
    except errors.FhirError as refused:
        where = ", ".join(f"{issue.expression}: {issue.diagnostics}" for issue in refused.issues[:3])
        _fail(snapshot, f"a resource was refused on storing ({where})")
    except Exception:
        logger.exception("sync %s failed", snapshot.id)
        _fail(snapshot, "the sync failed on the server (see the worker's log)")


def _crawl(
    snapshot: Snapshot, provider: Provider, link: LinkedPatient, client: Client, db: SharedConnection
) -> dict:
    last = [0.0]

    def progress() -> None:
        if time.monotonic() - last[0] < PROGRESS_SECONDS:
            return
        last[0] = time.monotonic()
        stats = client.stats
        with db.cursor() as cursor:
            cursor.execute(
                "UPDATE sync_snapshot SET fetched = %s, requests = %s, retries = %s, waited_seconds = %s"
                " WHERE id = %s",
                [stats.fetched, stats.requests, stats.retries, stats.waited, snapshot.id],
            )

    strategy = strategy_for(provider.kind, provider.options)
    crawl = Crawl(
        client, strategy, link.provider_patient_id, provider.concurrency, provider.learned, progress
    )
    return crawl.run()


def _record(snapshot: Snapshot, client: Client, changes: list[dict]) -> None:
    stats = client.stats
    snapshot.fetched, snapshot.requests, snapshot.retries = stats.fetched, stats.requests, stats.retries
    snapshot.waited_seconds, snapshot.changes = stats.waited, changes


def _fail(snapshot: Snapshot, description: str) -> None:
    logger.warning("sync %s failed: %s", snapshot.id, description)
    Snapshot.objects.filter(id=snapshot.id, status=Snapshot.Status.RUNNING).update(
        status=Snapshot.Status.FAILED, description=description[:2000], finished=now()
    )


QUEUE = jobs.Queue(
    table="sync_snapshot",
    waiting=Snapshot.Status.PENDING,
    running=Snapshot.Status.RUNNING,
    run=run_claimed,
    every=schedule.queue_due,
)
