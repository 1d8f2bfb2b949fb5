"""What a FHIR request did, in AuditEvent terms: the R4 restful interaction
(http://hl7.org/fhir/restful-interaction), its action (http://hl7.org/fhir/audit-event-action:
C create, R read, U update, D delete, E execute: searches and operations, as IHE BALP records
them), the resource addressed and the query, read from the URL the request was routed by."""

from __future__ import annotations

from dataclasses import dataclass

from django.http import HttpRequest


@dataclass(frozen=True)
class Interaction:
    subtype: str
    action: str
    resource_type: str | None = None
    resource_id: str | None = None
    version_id: str | None = None
    operation: str | None = None
    query: str = ""  # the raw query string (PHI: stored in the audit trail only, never logged)


# (view name, HTTP method) -> (interaction, action); method None: any method the view accepts
_BY_VIEW = {
    ("base", "GET"): ("search-system", "E"),
    ("base", "POST"): ("transaction", "E"),  # or batch: the view tells (audit.notes)
    ("system_history", None): ("history-system", "R"),
    ("type_level", "GET"): ("search-type", "E"),
    ("type_level", "POST"): ("create", "C"),
    ("type_level", "PUT"): ("update", "U"),
    ("type_level", "DELETE"): ("delete", "D"),
    ("type_search", None): ("search-type", "E"),
    ("compartment", None): ("search-type", "E"),
    ("type_history", None): ("history-type", "R"),
    ("instance", "GET"): ("read", "R"),
    ("instance", "HEAD"): ("read", "R"),
    ("instance", "PUT"): ("update", "U"),
    ("instance", "PATCH"): ("patch", "U"),
    ("instance", "DELETE"): ("delete", "D"),
    ("instance_history", None): ("history-instance", "R"),
    ("version", None): ("vread", "R"),
    ("operation", None): ("operation", "E"),
    # Bulk Data: the kick-off (what is exported: its query) and each file download (a read of
    # many resources at once); polling the status returns no patient data and is not recorded.
    ("export", None): ("operation", "E"),
    ("export_file", None): ("operation", "R"),
    # A sync snapshot served as one Bundle (its list holds no patient data, like export status).
    ("sync_snapshot", None): ("operation", "R"),
}


def of(request: HttpRequest) -> Interaction | None:
    """The interaction of a routed FHIR request; None for what touches no patient data
    (/metadata) or was not routed (unknown URL)."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return None
    view = match.func.__name__
    found = _BY_VIEW.get((view, request.method)) or _BY_VIEW.get((view, None))
    if found is None:
        return None
    kwargs = match.kwargs
    resource_type = kwargs.get("resource_type")
    if view == "compartment":
        # Patient/[id]/[type]: a search of [type] within that patient's compartment
        resource_type = kwargs["target_type"]
    return Interaction(
        subtype=found[0],
        action=found[1],
        resource_type=resource_type,
        resource_id=kwargs.get("resource_id") if view != "compartment" else None,
        version_id=kwargs.get("version_id"),
        operation=kwargs.get("name"),
        query=request.META.get("QUERY_STRING", ""),
    )


def compartment_patient(request: HttpRequest) -> str | None:
    """The patient of Patient/[id]/... URLs (compartment searches, $everything, the Patient)."""
    match = getattr(request, "resolver_match", None)
    if match is None or match.kwargs.get("resource_type") != "Patient":
        return None
    return match.kwargs.get("resource_id")
