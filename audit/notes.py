"""What an interaction tells the audit trail that its URL does not: the resources a batch or
transaction wrote or read. The one interface the FHIR API uses (ARCHITECTURE.md: the API uses
audit, never the other way round)."""

from __future__ import annotations

from django.http import HttpRequest


def touched(request: HttpRequest, subtype: str, references: list[str]) -> None:
    """Record the interaction's own subtype (batch/transaction) and the resources it reached,
    as `Type/id/_history/version`."""
    request.audit_subtype = subtype
    request.audit_references = references
