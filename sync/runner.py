"""Running one sync: the queue entry (tenants.jobs serves it) and the run itself.

A Snapshot row is the job: `enqueue` adds one as pending; a worker claims it and fetches
(sync.crawl through sync.client) on a thread of its own while the worker's thread prepares and
stores what arrives (sync.importer), all inside one transaction that also completes the
snapshot. A run is all or nothing: a worker that dies leaves the row running with no entries
(the transaction dies with it), its advisory lock goes with its connection, and the next worker
restarts the run from the start; deterministic ids and content hashes make the rerun write
nothing twice. Failures end the snapshot `failed` with a
description that names what failed, never a credential or patient data.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

import httpx
from django.db import connection, transaction

from fhirserver import errors
from fhirserver.storage.repository import now
from sync import importer, schedule
from sync.auth import AuthFailed, TokenSource
from sync.client import TIMEOUT, Client, FetchFailed
from sync.crawl import Crawl
from sync.limiter import Limiter, budget_key
from sync.models import LinkedPatient, Provider, Snapshot
from sync.provenance import local_id
from sync.shared import SharedConnection
from sync.strategies import Key, strategy_for
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
        with transaction.atomic():
            importer.lock_link(link.id)
            run = importer.Import(snapshot, provider)
            stats = _crawl_while_storing(snapshot, provider, link, run)
            fetched = time.monotonic()
            snapshot.fetched, snapshot.requests, snapshot.retries = (
                stats.fetched,
                stats.requests,
                stats.retries,
            )
            snapshot.waited_seconds = stats.waited
            written = run.finish()
            snapshot.description = (
                f"fetched (and stored meanwhile) in {fetched - begun:.1f} s, then stored the rest in"
                f" {time.monotonic() - fetched:.1f} s; {len(run.changes)} normalisation changes"
            )
            snapshot.save(update_fields=["description"])
            Provider.objects.filter(id=provider.id).update(learned=provider.learned)
            LinkedPatient.objects.filter(id=link.id).update(
                local_patient_id=local_id(provider.id, "Patient", link.provider_patient_id)
            )
        logger.info("sync %s complete: %d entries, %d new versions", snapshot.id, len(run.manifest), written)
    except (FetchFailed, AuthFailed) as failure:
        _fail(snapshot, str(failure))
    except errors.FhirError as refused:
        where = ", ".join(f"{issue.expression}: {issue.diagnostics}" for issue in refused.issues[:3])
        _fail(snapshot, f"a resource was refused on storing ({where})")
    except Exception:
        logger.exception("sync %s failed", snapshot.id)
        _fail(snapshot, "the sync failed on the server (see the worker's log)")


def _crawl_while_storing(snapshot: Snapshot, provider: Provider, link: LinkedPatient, run: importer.Import):
    """Fetch on a thread of its own while this thread stores what arrives; the fetch's stats.

    The fetching side has its own database connection (set to the tenant), outside this
    thread's transaction: the limiter's budget row, progress and rotated tokens must commit at
    once, for other workers and `sync --wait` to see, whatever becomes of the import. When
    storing fails, the fetch stops at its next arrival rather than running to its end."""
    arrivals: queue.Queue = queue.Queue()
    outcome: dict = {}
    stop = threading.Event()
    tenant = connection.tenant

    def sink(key: Key, resource: dict) -> None:
        if stop.is_set():
            raise FetchFailed("fetching stopped: storing failed")
        arrivals.put((key, resource))

    def fetch() -> None:
        connection.set_tenant(tenant)  # this thread's own connection
        try:
            with (
                httpx.Client(timeout=TIMEOUT, follow_redirects=False) as http,
                SharedConnection().shared() as db,
            ):
                budget = budget_key(provider.base_url, provider.client_id)
                limiter = Limiter(budget, provider.requests_per_minute, db)
                client = Client(provider.base_url, http, TokenSource(provider, link, http, db), limiter)
                _crawl(snapshot, provider, link, client, db, sink)
                outcome["stats"] = client.stats
        except BaseException as failure:  # raised again on the storing thread
            outcome["failure"] = failure
        finally:
            connection.close()
            arrivals.put(None)

    fetcher = threading.Thread(target=fetch, name=f"sync-fetch-{snapshot.id}", daemon=True)
    fetcher.start()
    try:
        while (item := arrivals.get()) is not None:
            run.add(*item)
            run.store_ready()
    except BaseException:
        stop.set()
        raise
    finally:
        fetcher.join()
    if "failure" in outcome:
        raise outcome["failure"]
    return outcome["stats"]


def _crawl(
    snapshot: Snapshot, provider: Provider, link: LinkedPatient, client: Client, db: SharedConnection,
    sink: Callable[[Key, dict], None],
) -> None:  # fmt: skip
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
        client, strategy, link.provider_patient_id, provider.concurrency, provider.learned, progress, sink
    )
    crawl.run()


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
