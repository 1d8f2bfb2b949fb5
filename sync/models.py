"""Sync: providers (external FHIR APIs), patients linked at them, and snapshots of their records.

A snapshot is both the job (the worker queue claims sync_snapshot rows, tenants.jobs) and, once
complete, the immutable manifest of what one run imported: SnapshotEntry rows naming
(type, id, version) in fhir_resource_version. Credentials are sealed with the tenant's PHI key
ring (sync.secrets), bound to the row and field they belong to; the columns never hold plaintext.
"""

import uuid

from django.db import models


class Provider(models.Model):
    class Kind(models.TextChoices):
        EPIC = "epic"
        CERNER = "cerner"
        VA = "va"
        GENERIC = "generic"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.GENERIC)
    base_url = models.URLField(max_length=500, help_text="the provider's FHIR base")
    token_url = models.URLField(max_length=500, blank=True)
    authorize_url = models.URLField(max_length=500, blank=True)
    client_id = models.CharField(max_length=200, blank=True)
    client_secret = models.TextField(blank=True, help_text="sealed (PHI key ring)")
    private_key = models.TextField(blank=True, help_text="PEM, sealed (PHI key ring)")
    key_id = models.CharField(max_length=200, blank=True)
    jwt_alg = models.CharField(max_length=8, default="RS384", help_text="RS384 or ES384")
    use_jwt_assertion = models.BooleanField(default=False)
    scope = models.TextField(blank=True)
    audience = models.CharField(max_length=500, blank=True)
    requests_per_minute = models.PositiveIntegerField(default=0, help_text="0: no limit")
    concurrency = models.PositiveIntegerField(default=4)
    resync_hours = models.PositiveIntegerField(
        default=0,
        help_text="queue a new snapshot of every linked patient this often (sync.schedule); 0: on demand",
    )
    options = models.JSONField(default=dict, blank=True, help_text="strategy settings (sync.strategies)")
    learned = models.JSONField(default=dict, blank=True, help_text="what worked last time, per strategy")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "sync_provider"

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"


class LinkedPatient(models.Model):
    """A patient at a provider, with the credentials that reach their record there."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="patients")
    provider_patient_id = models.CharField(max_length=200)
    refresh_token = models.TextField(blank=True, help_text="sealed (PHI key ring)")
    access_token = models.TextField(blank=True, help_text="cached, sealed (PHI key ring)")
    access_token_expires = models.DateTimeField(null=True, blank=True)
    local_patient_id = models.CharField(max_length=64, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "sync_linked_patient"
        constraints = [
            models.UniqueConstraint(fields=["provider", "provider_patient_id"], name="sync_link_unique")
        ]

    def __str__(self) -> str:
        return f"{self.provider.name}: {self.provider_patient_id}"


class Snapshot(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        COMPLETE = "complete"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    patient = models.ForeignKey(LinkedPatient, on_delete=models.PROTECT, related_name="snapshots")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    description = models.TextField(blank=True, help_text="what happened; the reason of a failure")
    counts = models.JSONField(default=dict, help_text="resources by type")
    fetched = models.PositiveIntegerField(default=0, help_text="resources fetched so far (progress)")
    written = models.PositiveIntegerField(default=0, help_text="new versions written")
    requests = models.PositiveIntegerField(default=0)
    retries = models.PositiveIntegerField(default=0)
    waited_seconds = models.FloatField(default=0, help_text="time spent waiting on rate limits")
    changes = models.JSONField(default=list, help_text="what normalisation changed, per resource")
    attempts = models.PositiveIntegerField(default=0)
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "sync_snapshot"
        indexes = [
            models.Index(fields=["status", "created"], name="sync_snapshot_status"),
            models.Index(fields=["patient", "finished"], name="sync_snapshot_patient"),
        ]

    def __str__(self) -> str:
        return f"snapshot {self.id} ({self.status})"


class SnapshotEntry(models.Model):
    """One resource version of a complete snapshot, with the hash of the content imported."""

    snapshot = models.ForeignKey(Snapshot, on_delete=models.CASCADE, related_name="entries")
    resource_type = models.CharField(max_length=64)
    resource_id = models.CharField(max_length=64)
    version_id = models.PositiveIntegerField()
    content_hash = models.CharField(max_length=64)
    provenance_id = models.CharField(
        max_length=64, blank=True, help_text="the Provenance that recorded this version's import"
    )

    class Meta:
        db_table = "sync_snapshot_entry"
        constraints = [
            models.UniqueConstraint(
                fields=["snapshot", "resource_type", "resource_id"], name="sync_entry_unique"
            )
        ]
        indexes = [models.Index(fields=["resource_type", "resource_id"], name="sync_entry_resource")]

    def __str__(self) -> str:
        return f"{self.resource_type}/{self.resource_id}/_history/{self.version_id}"
