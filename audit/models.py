"""The audit trail of a tenant: append-only AuditEvent records chained by SHA-256 hashes.

`AuditRecord` holds each event as the exact canonical JSON that was hashed and is served, plus a
few columns copied out of it for search. `AuditChain` is the one-row head of the tenant's chain
(last sequence number and hash): appending locks it, so the chain is strictly ordered even with
concurrent requests. The runtime role may only INSERT and SELECT records (tenants/rls.py), so the
API cannot rewrite them; `manage.py verify_audit` finds rewrites made any other way.
"""

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import models


class AuditRecord(models.Model):
    seq = models.BigIntegerField(primary_key=True)  # position in the chain, from 1, no gaps
    event_id = models.CharField(max_length=64, unique=True)  # AuditEvent.id
    recorded = models.DateTimeField()
    patients = ArrayField(models.CharField(max_length=64), default=list)  # Patient ids, for search
    action = models.CharField(max_length=1)
    subtype = models.CharField(max_length=32)
    outcome = models.SmallIntegerField()
    client_id = models.CharField(max_length=255, blank=True)
    agent = models.CharField(max_length=255, blank=True)  # the user (token subject)
    event = models.TextField()  # canonical AuditEvent JSON (sorted keys, no spaces)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)  # SHA-256 hex of prev_hash + event

    class Meta:
        db_table = "audit_record"
        indexes = [
            models.Index(fields=["recorded"], name="audit_recorded"),
            models.Index(fields=["client_id"], name="audit_client"),
            GinIndex(fields=["patients"], name="audit_patients"),
        ]

    def __str__(self) -> str:
        return f"audit record {self.seq}"


class AuditChain(models.Model):
    id = models.SmallIntegerField(primary_key=True)  # always 1
    seq = models.BigIntegerField()
    hash = models.CharField(max_length=64)
    prev_hash = models.CharField(max_length=64)

    class Meta:
        db_table = "audit_chain"

    def __str__(self) -> str:
        return f"audit chain head at {self.seq}"
