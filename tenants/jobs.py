"""The job queues every worker serves: job tables in each tenant schema, claimed with advisory locks.

A queue is a tenant table whose rows are jobs (bulk_export, sync_snapshot): the row already holds
what the job does and how far it got, row-level security keeps it inside its tenant, and the
runtime role works it without grants on shared tables. A worker claims a job with a session-level
advisory lock on its id (pg_try_advisory_lock), held while it runs: two workers never run one
job, and when a worker dies its connection closes, PostgreSQL drops the lock, and the next poll
takes the job over (each queue decides how: the export resumes from its checkpoint, a sync
restarts). No heartbeat to tune, no lease to expire.

`serve` visits each active tenant once per poll with one indexed query per queue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.utils.module_loading import import_string

from tenants.models import Tenant

logger = logging.getLogger(__name__)

_LOCK = "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))"
_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended(%s, 0))"


@dataclass(frozen=True)
class Queue:
    """One kind of job: its table, the statuses of waiting jobs and of claimed ones, and what
    runs a claimed job (given its id, in the job's tenant, with the lock held)."""

    table: str
    waiting: str
    running: str
    run: Callable[[object], None]
    every: Callable[[], None] | None = None  # periodic upkeep, e.g. cleanup


def queues() -> list[Queue]:
    """The queues named in settings.JOB_QUEUES (dotted paths), so this module imports no app."""
    return [import_string(path) for path in settings.JOB_QUEUES]


def run_next(queue: Queue) -> bool:
    """Claim and run one waiting (or orphaned) job of the current tenant; False if none."""
    job_id = claim(queue)
    if job_id is None:
        return False
    try:
        queue.run(job_id)
    finally:
        with connection.cursor() as db:
            db.execute(_UNLOCK, [_key(queue, job_id)])
    return True


def claim(queue: Queue) -> object | None:
    """The id of a job this worker now holds (status set to running, attempts counted), or None.
    A job still marked running whose lock is free lost its worker: it is claimed again."""
    statuses = [queue.waiting, queue.running]
    with connection.cursor() as db:
        db.execute(
            f"SELECT id FROM {queue.table} WHERE status = ANY(%s) ORDER BY created LIMIT 20", [statuses]
        )
        for (job_id,) in db.fetchall():
            db.execute(_LOCK, [_key(queue, job_id)])
            if not db.fetchone()[0]:
                continue  # another worker runs it
            db.execute(
                f"UPDATE {queue.table} SET status = %s, attempts = attempts + 1"
                " WHERE id = %s AND status = ANY(%s) RETURNING id",
                [queue.running, job_id, statuses],
            )
            if db.fetchone():
                return job_id
            db.execute(_UNLOCK, [_key(queue, job_id)])  # finished or cancelled meanwhile
    return None


def _key(queue: Queue, job_id: object) -> str:
    return f"{queue.table}:{job_id}"


def serve(
    queues: Sequence[Queue], poll_seconds: float, once: bool = False, upkeep_seconds: float = 600
) -> None:
    """Run jobs of every queue and tenant as they come, until interrupted (or, with `once`,
    until none is waiting). Each queue's upkeep runs at start and every `upkeep_seconds`."""
    upkeep = [queue.every for queue in queues if queue.every]
    for task in upkeep:
        task()
    done_upkeep = time.monotonic()
    while True:
        ran = False
        for tenant in Tenant.objects.filter(status=Tenant.Status.ACTIVE).order_by("schema_name"):
            connection.set_tenant(tenant)
            try:
                for queue in queues:
                    ran = run_next(queue) or ran
            finally:
                connection.set_schema_to_public()
        if ran:
            continue
        if once:
            return
        if time.monotonic() - done_upkeep > upkeep_seconds:
            for task in upkeep:
                task()
            done_upkeep = time.monotonic()
        time.sleep(poll_seconds)
