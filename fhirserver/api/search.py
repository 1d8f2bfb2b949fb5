"""Type-level search (http://hl7.org/fhir/R4/search.html), GET and POST _search.

So far with the criteria conditional interactions use (`_id`, `identifier`); any other
parameter is ignored and reported in an OperationOutcome entry, as the spec allows
(search.html#errors), or refused with `Prefer: handling=strict`.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.db import connection
from django.http import HttpRequest, HttpResponse

from fhirserver import errors
from fhirserver.api import paging
from fhirserver.api.bundles import Entry, bundle_response
from fhirserver.api.endpoint import base_url
from fhirserver.operation_outcome import outcome_from_issues
from fhirserver.search import criteria
from fhirserver.storage.repository import require_resource_type

CONTROL = frozenset({"_count", "_cursor", "_total", "_format", "_pretty", "_summary", "_elements"})


def search(request: HttpRequest, resource_type: str, params: list[tuple[str, str]]) -> HttpResponse:
    require_resource_type(resource_type)
    used = [(k, v) for k, v in params if k.split(":", 1)[0] in criteria.SUPPORTED and ":" not in k]
    used_names = {name for name, _value in used}
    ignored = sorted({name for name, _value in params if name not in CONTROL and name not in used_names})
    if ignored and "handling=strict" in request.headers.get("Prefer", ""):
        raise errors.not_supported(f"Unsupported search parameters: {', '.join(ignored)}")
    ids = criteria.matching_ids(resource_type, urlencode(used)) if used else None
    limit = paging.page_size(request)
    after = paging.cursor(request)
    rows = _page(resource_type, ids, after[0] if after else None, limit + 1)
    base = base_url(request)
    links = [("self", paging.link(request, after))]
    if len(rows) > limit:
        rows = rows[:limit]
        links.append(("next", paging.link(request, (rows[-1][0],))))
    total = _total(resource_type, ids) if request.GET.get("_total", "accurate") != "none" else None
    if request.GET.get("_summary") == "count":
        return bundle_response(request, "searchset", [], total=total, links=links[:1])
    entries = [
        Entry(f"{base}/{resource_type}/{rid}", content, {"search": {"mode": "match"}})
        for rid, content in rows
    ]
    if ignored:
        entries.append(_ignored_outcome(ignored))
    return bundle_response(request, "searchset", entries, total=total, links=links)


def _page(resource_type: str, ids: set[str] | None, after: str | None, limit: int) -> list[tuple[str, str]]:
    sql = "SELECT resource_id, content FROM fhir_resource WHERE resource_type = %s AND NOT deleted"
    params: list = [resource_type]
    if ids is not None:
        sql += " AND resource_id = ANY(%s)"
        params.append(list(ids))
    if after is not None:
        sql += " AND resource_id > %s"
        params.append(after)
    sql += " ORDER BY resource_id LIMIT %s"
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, limit])
        return cursor.fetchall()


def _total(resource_type: str, ids: set[str] | None) -> int:
    if ids is not None:
        return len(ids)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM fhir_resource WHERE resource_type = %s AND NOT deleted", [resource_type]
        )
        return cursor.fetchone()[0]


def _ignored_outcome(names: list[str]) -> Entry:
    issues = [
        errors.Issue(
            "not-supported", f"Search parameter '{n}' is not supported and was ignored", severity="warning"
        )
        for n in names
    ]
    return Entry(resource=outcome_from_issues(issues), fields={"search": {"mode": "outcome"}})
