"""`[base]/AuditEvent`: the tenant's audit trail (audit/), read-only and for administrators.

Records live in their own append-only table, not in fhir_resource, so they are outside the one
write path by construction: POST, PUT, PATCH and DELETE answer 405, and so does the Repository
for AuditEvents arriving any other way (bundles, $meta-add). Read by id and search, newest first,
paged by sequence number. Search parameters (R4 AuditEvent): `patient`, `date` (prefixes
eq/ge/gt/le/lt), `subtype`, `action`, `outcome`, `altid` (the user), `_id`, `_count`; any other
criterion is refused (400), never ignored, since ignoring it would widen the answer.
"""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, HttpResponse

from fhirserver import errors
from fhirserver.api import paging
from fhirserver.api.bundles import Entry, bundle_response
from fhirserver.api.endpoint import base_url
from fhirserver.api.negotiation import fhir_response
from fhirserver.search.dates import parse_range
from smart_auth.scopes import require_role

RESOURCE_TYPE = "AuditEvent"
GENERAL = frozenset({"_count", "_format", "_pretty", "_summary", "_elements", paging.CURSOR})
_COLUMNS = {
    "subtype": "subtype",
    "action": "action",
    "outcome": "outcome",
    "altid": "agent",
    "_id": "event_id",
}
# prefix -> (comparison, whether it compares with the end of the value's range)
_DATE_BOUNDS = {"ge": (">=", False), "gt": (">=", True), "lt": ("<", False), "le": ("<", True), "eq": None}


def not_allowed(request: HttpRequest) -> errors.FhirError:
    return errors.FhirError.single(
        405, "not-supported", f"{request.method} of AuditEvent is not allowed: the server records them"
    )


def read(request: HttpRequest, event_id: str) -> HttpResponse:
    _require_admin(request)
    if request.method not in ("GET", "HEAD"):
        raise not_allowed(request)
    with connection.cursor() as cursor:
        cursor.execute("SELECT event FROM audit_record WHERE event_id = %s", [event_id])
        row = cursor.fetchone()
    if row is None:
        raise errors.not_found(f"AuditEvent/{event_id} is not known")
    return fhir_response(request, row[0])


def search(request: HttpRequest, pairs: list[tuple[str, str]]) -> HttpResponse:
    _require_admin(request)
    conditions, params = _criteria(pairs)
    position = paging.cursor(request)
    if position is not None:
        conditions.append("seq < %s")
        params.append(int(position[0]))
    limit = paging.page_size(request)
    where = " AND ".join(conditions) or "true"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT seq, event_id, event FROM audit_record WHERE {where} ORDER BY seq DESC LIMIT %s",
            [*params, limit + 1],
        )
        rows = cursor.fetchall()
    rows, more = paging.split_page(rows, limit)
    links = [("self", paging.link(request, position, pairs))]
    if more:
        links.append(("next", paging.link(request, (rows[-1][0],), pairs)))
    base = base_url(request)
    entries = [Entry(f"{base}/AuditEvent/{i}", event, {"search": {"mode": "match"}}) for _, i, event in rows]
    return bundle_response(request, "searchset", entries, links=links)


def _require_admin(request: HttpRequest) -> None:
    context = getattr(request, "auth_context", None)
    if context is None:
        raise errors.forbidden("Reading the audit trail needs the admin role")
    require_role(context, "admin")


def _criteria(pairs: list[tuple[str, str]]) -> tuple[list[str], list]:
    conditions, params = [], []
    for name, value in pairs:
        if name in GENERAL:
            continue
        if name == "patient":
            conditions.append("patients && %s")
            params.append([v.rstrip("/").rsplit("/", 1)[-1] for v in value.split(",")])
        elif name == "date":
            condition, condition_params = _date(value)
            conditions.append(condition)
            params += condition_params
        elif name in _COLUMNS:
            conditions.append(f"{_COLUMNS[name]}::text = ANY(%s)")
            params.append([v.rsplit("|", 1)[-1] for v in value.split(",")])
        else:
            raise errors.not_supported(f"AuditEvent cannot be searched by {name}")
    return conditions, params


def _date(value: str) -> tuple[str, list]:
    """A date criterion on `recorded`: the value is a range [start, end) at its precision."""
    prefixed = value[:2] in _DATE_BOUNDS
    prefix = value[:2] if prefixed else "eq"
    start, end = parse_range(value[2:] if prefixed else value, "date")
    if prefix == "eq":
        return "recorded >= %s AND recorded < %s", [start, end]
    operator, use_end = _DATE_BOUNDS[prefix]
    return f"recorded {operator} %s", [end if use_end else start]
