"""The export queue (`manage.py worker` serves it): running a claimed job, and cleanup.

The queue is the bulk_export table of each tenant schema, claimed through tenants.jobs (advisory
locks): when a worker dies, the next one takes the job over from its last checkpoint
(bulk.writer).
"""

from __future__ import annotations

import logging
import shutil
import time
from datetime import timedelta
from pathlib import Path

import orjson
from django.conf import settings
from django.db import connection

from bulk.models import Export
from bulk.selection import Selection
from bulk.writer import write_notes, write_type
from fhirserver.storage.repository import now
from tenants import jobs
from tenants.models import Tenant

logger = logging.getLogger(__name__)


def directory_of(schema: str, export_id: object) -> Path:
    """Where an export's files are: <EXPORT_DIR>/<tenant schema>/<export id>/."""
    return settings.EXPORT_DIR / schema / str(export_id)


def selection_of(export: Export) -> Selection:
    return Selection(
        level=export.level,
        types=export.types,
        transaction_time=export.transaction_time,
        scopes=export.scopes,
        since=export.since,
        type_filters=export.type_filters,
        patients=export.patients,
    )


def run(export: Export, directory: Path) -> None:
    """Run (or resume) a claimed job to its end: completed, cancelled or failed."""
    directory.mkdir(parents=True, exist_ok=True)
    selection = selection_of(export)
    progress = export.progress

    def checkpoint(resource_type: str, state: dict) -> bool:
        progress[resource_type] = state
        with connection.cursor() as db:
            db.execute(
                "UPDATE bulk_export SET progress = %s WHERE id = %s AND status = 'running'",
                [_json(progress), export.id],
            )
            return db.rowcount == 1

    try:
        wait_for_earlier_writes(export.transaction_time)
        for resource_type in export.types:
            if not write_type(
                selection, resource_type, directory, progress.setdefault(resource_type, {}), checkpoint
            ):
                logger.info("export %s cancelled", export.id)
                shutil.rmtree(directory, ignore_errors=True)
                return
        write_notes(directory, export.notes)
        Export.objects.filter(id=export.id, status=Export.Status.RUNNING).update(
            status=Export.Status.COMPLETED, finished=now(), progress=progress
        )
        logger.info("export %s completed", export.id)
    except Exception:
        logger.exception("export %s failed", export.id)
        # A cancellation may have removed the folder under the writer: it stays cancelled.
        Export.objects.filter(id=export.id, status=Export.Status.RUNNING).update(
            status=Export.Status.FAILED, finished=now(), error="The export failed on the server"
        )


def wait_for_earlier_writes(moment, limit_seconds: float = 60) -> None:
    """Wait until no transaction that began before `moment` is still open: the repository
    stamps lastUpdated when a write starts, so a long transaction (a large Bundle) may commit
    rows dated before transactionTime after the export has read past them. The runtime role
    sees the start of its own role's transactions in pg_stat_activity, which are the writers."""
    deadline = time.monotonic() + limit_seconds
    while time.monotonic() < deadline:
        with connection.cursor() as db:
            db.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND state <> 'idle' AND xact_start < %s",
                [moment],
            )
            if db.fetchone()[0] == 0:
                return
        time.sleep(0.2)
    logger.warning("transactions older than an export's transactionTime still open after %ss", limit_seconds)


def cleanup() -> None:
    """Remove exports older than EXPORT_RETENTION_HOURS and cancelled ones (rows and files),
    and any export folder whose row is gone, in every tenant."""
    cutoff = now() - timedelta(hours=settings.EXPORT_RETENTION_HOURS)
    for tenant in Tenant.objects.exclude(schema_name="public").order_by("schema_name"):
        connection.set_tenant(tenant)
        try:
            Export.objects.filter(created__lt=cutoff).delete()
            Export.objects.filter(status=Export.Status.CANCELLED).delete()
            kept = {str(export_id) for export_id in Export.objects.values_list("id", flat=True)}
        finally:
            connection.set_schema_to_public()
        folder = settings.EXPORT_DIR / tenant.schema_name
        if folder.is_dir():
            for entry in folder.iterdir():
                if entry.name not in kept:
                    shutil.rmtree(entry, ignore_errors=True)


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


def run_claimed(export_id: object) -> None:
    run(Export.objects.get(id=export_id), directory_of(connection.schema_name, export_id))


QUEUE = jobs.Queue(
    table="bulk_export",
    waiting=Export.Status.QUEUED,
    running=Export.Status.RUNNING,
    run=run_claimed,
    every=cleanup,
)
