"""search: type level (GET and POST _search), compartment and system level
(http://hl7.org/fhir/R4/search.html, http.html#search).

Unknown or unsupported parameters are ignored and listed in an OperationOutcome entry
(search.html#errors), or refused with `Prefer: handling=strict`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.db import connection
from django.http import HttpRequest, HttpResponse

from fhirserver import errors
from fhirserver.api import paging
from fhirserver.api.bundles import Entry, bundle_response
from fhirserver.api.endpoint import base_url
from fhirserver.operation_outcome import outcome_from_issues
from fhirserver.registry import r4
from fhirserver.search import query as search_query
from fhirserver.search import sorting, sql
from fhirserver.search.includes import included, parse_includes
from fhirserver.storage.repository import require_resource_type


def search(
    request: HttpRequest, resource_type: str, pairs: list[tuple[str, str]], extra: list[tuple[str, list]] = ()
) -> HttpResponse:
    """Search one type; `extra` adds SQL conditions (compartments) to the parsed criteria."""
    require_resource_type(resource_type)
    parsed = search_query.parse(resource_type, pairs, sql.SUPPORTED_TYPES)
    includes = parse_includes(pairs)
    if parsed.ignored and "handling=strict" in request.headers.get("Prefer", ""):
        raise errors.not_supported(f"Unsupported search parameters: {', '.join(sorted(set(parsed.ignored)))}")
    conditions, params = sql.where(resource_type, parsed.clauses)
    for condition, condition_params in extra:
        conditions.append(condition)
        params += condition_params
    keys = sorting.sort_keys(resource_type, request.GET.get("_sort"))
    limit = paging.page_size(request)
    cursor = paging.cursor(request)
    total = _total(request, resource_type, conditions, params)
    if request.GET.get("_summary") == "count":
        return bundle_response(
            request, "searchset", [], total=total, links=[("self", paging.link(request, None, pairs))]
        )
    rows = _page(resource_type, conditions, params, keys, cursor, limit + 1)
    links = [("self", paging.link(request, cursor, pairs))]
    if len(rows) > limit:
        rows = rows[:limit]
        links.append(("next", paging.link(request, _position(rows[-1][2:]), pairs)))
    base = base_url(request)
    entries = [
        Entry(f"{base}/{resource_type}/{row[0]}", row[1], {"search": {"mode": "match"}}) for row in rows
    ]
    if includes:
        found = included(includes, [(resource_type, row[0]) for row in rows])
        entries += [
            Entry(f"{base}/{t}/{i}", content, {"search": {"mode": "include"}}) for t, i, content in found
        ]
    if parsed.ignored:
        entries.append(_ignored_outcome(sorted(set(parsed.ignored))))
    return bundle_response(request, "searchset", entries, total=total, links=links)


def compartment_search(
    request: HttpRequest,
    compartment: str,
    compartment_id: str,
    resource_type: str,
    pairs: list[tuple[str, str]],
) -> HttpResponse:
    """Patient/[id]/[type]?...: resources of that type in the patient's compartment."""
    if compartment != "Patient":
        raise errors.not_supported(f"Only the Patient compartment is supported, not {compartment}")
    require_resource_type(resource_type)
    links = r4().patient_compartment.get(resource_type)
    if not links:
        raise errors.bad_request(f"{resource_type} is not in the Patient compartment")
    if resource_type == "Patient":
        condition = ("r.resource_id = %s", [compartment_id])
    else:
        condition = (
            "r.resource_id IN (SELECT c.resource_id FROM fhir_index_reference c WHERE c.resource_type = %s"
            " AND c.param = ANY(%s) AND c.target_type = 'Patient' AND c.target_id = %s)",
            [resource_type, list(links), compartment_id],
        )
    return search(request, resource_type, pairs, extra=[condition])


def _page(resource_type: str, conditions: list[str], params: list, keys, cursor, limit: int) -> list[tuple]:
    columns, key_params = sorting.select_keys(keys)
    where = " AND ".join(["r.resource_type = %s", "NOT r.deleted", *conditions])
    inner = f"SELECT r.resource_id, r.content, {columns} FROM fhir_resource r WHERE {where}"
    outer_params: list = []
    outer = ""
    if cursor is not None:
        outer, outer_params = sorting.after(keys, cursor)
        outer = "WHERE " + outer
    order, _ = sorting.order_by(keys)
    statement = f"SELECT * FROM ({inner}) s {outer} {order} LIMIT %s"
    with connection.cursor() as db:
        db.execute(statement, [*key_params, resource_type, *params, *outer_params, limit])
        return db.fetchall()


def _total(request: HttpRequest, resource_type: str, conditions: list[str], params: list) -> int | None:
    wanted = request.GET.get("_total", "none")
    if wanted not in ("none", "estimate", "accurate"):
        raise errors.bad_request("_total must be none, estimate or accurate")
    if wanted == "none" and request.GET.get("_summary") != "count":
        return None
    where = " AND ".join(["r.resource_type = %s", "NOT r.deleted", *conditions])
    with connection.cursor() as db:
        db.execute(f"SELECT count(*) FROM fhir_resource r WHERE {where}", [resource_type, *params])
        return db.fetchone()[0]


def _position(values: tuple) -> tuple:
    """Sort values as JSON-safe cursor values (re-cast by type in SQL)."""
    return tuple(
        v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, Decimal) else v for v in values
    )


def _ignored_outcome(names: list[str]) -> Entry:
    issues = [
        errors.Issue(
            "not-supported", f"Search parameter '{n}' is not supported and was ignored", severity="warning"
        )
        for n in names
    ]
    return Entry(resource=outcome_from_issues(issues), fields={"search": {"mode": "outcome"}})
