"""Bulk Data exports (http://hl7.org/fhir/uv/bulkdata/STU2/export.html), one row per kick-off.

The row is the job: the worker queue (bulk.worker) claims rows, and the row keeps what the
export selects (fixed at kick-off, with the token's scopes, so the worker applies the same
authorization later) and its per-type progress (bulk.writer), so that a restarted worker goes
on where the last one stopped. A tenant table like any other: row-level security applies.
"""

import uuid

from django.db import models


class Export(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    level = models.CharField(max_length=16, help_text="system, patient or group")
    group_id = models.CharField(max_length=64, blank=True)
    request_url = models.TextField(help_text="the kick-off URL, echoed in the manifest")
    # Who may poll and download: the client (and user) of the kick-off token.
    client_id = models.CharField(max_length=200, blank=True)
    user = models.CharField(max_length=200, blank=True)
    scopes = models.JSONField(default=list, help_text="the scopes that decide what is exported")
    types = models.JSONField(default=list, help_text="resource types, in export order")
    since = models.DateTimeField(null=True)
    type_filters = models.JSONField(default=dict, help_text="type -> [_typeFilter query strings]")
    patients = models.JSONField(null=True, help_text="Group members (Patient ids) of a group export")
    notes = models.JSONField(default=list, help_text="warnings for the error file (ignored parameters)")
    transaction_time = models.DateTimeField()
    progress = models.JSONField(default=dict, help_text="per type: files, last id written, done")
    attempts = models.PositiveIntegerField(default=0)
    created = models.DateTimeField()
    finished = models.DateTimeField(null=True)
    error = models.TextField(blank=True)

    class Meta:
        db_table = "bulk_export"
        indexes = [models.Index(fields=["status", "created"], name="bulk_export_status")]

    def __str__(self) -> str:
        return f"export {self.id} ({self.status})"
