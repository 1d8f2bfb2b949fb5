"""Scheduled re-syncs: a provider's `resync_hours` keeps its linked patients' snapshots fresh.

The sync queue's upkeep (tenants.jobs runs it when a worker starts and every ten minutes) visits
every active tenant and queues a snapshot for each link of such a provider whose latest snapshot
was queued longer ago than that, or that has none; a link with a snapshot pending or running
gets no second one. A transaction-level advisory lock per tenant keeps two workers from
queueing the same round twice.
"""

from __future__ import annotations

from datetime import timedelta

from django.db import connection, transaction
from django.db.models import Exists, Max, OuterRef

from fhirserver.storage.repository import now
from sync.models import LinkedPatient, Snapshot
from tenants.models import Tenant

BUSY = (Snapshot.Status.PENDING, Snapshot.Status.RUNNING)


def queue_due() -> int:
    """Queue the due re-syncs of every active tenant; how many were queued."""
    queued = 0
    for tenant in Tenant.objects.filter(status=Tenant.Status.ACTIVE).order_by("schema_name"):
        connection.set_tenant(tenant)
        try:
            queued += _queue_due_here()
        finally:
            connection.set_schema_to_public()
    return queued


def _queue_due_here() -> int:
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(hashtextextended('sync_schedule', 0))")
            if not cursor.fetchone()[0]:
                return 0  # another worker is queueing this tenant's round
        moment = now()
        busy = Snapshot.objects.filter(patient=OuterRef("pk"), status__in=BUSY)
        links = (
            LinkedPatient.objects.filter(provider__resync_hours__gt=0)
            .annotate(latest=Max("snapshots__created"), busy=Exists(busy))
            .filter(busy=False)
            .select_related("provider")
        )
        due = [
            link for link in links
            if link.latest is None or link.latest < moment - timedelta(hours=link.provider.resync_hours)
        ]  # fmt: skip
        Snapshot.objects.bulk_create([Snapshot(patient=link) for link in due])
        return len(due)
