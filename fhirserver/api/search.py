"""search: type level (GET and POST _search), compartment and system level
(http://hl7.org/fhir/R4/search.html, http.html#search).

Unknown or unsupported parameters are ignored and listed in an OperationOutcome entry
(search.html#errors), or refused with `Prefer: handling=strict`.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

from django.db import connection
from django.http import HttpRequest, HttpResponse

from fhirserver import errors
from fhirserver.api import paging
from fhirserver.api.authorization import access
from fhirserver.api.bundles import bundle_response, ignored_parameters_entry, search_entry
from fhirserver.api.endpoint import base_url
from fhirserver.registry import r4
from fhirserver.search import compartment, sorting, sql
from fhirserver.search import query as search_query
from fhirserver.search.includes import included, parse_includes
from fhirserver.storage.repository import require_resource_type


def search(
    request: HttpRequest,
    resource_type: str,
    pairs: list[tuple[str, str]],
    extra: list[tuple[str, list]] = (),
    interaction: str = "search-type",
) -> HttpResponse:
    """Search one type; `extra` adds SQL conditions (compartments) to the parsed criteria, and
    the token's reach (fhirserver.api.authorization) is one more, so pages and totals stay exact."""
    require_resource_type(resource_type)
    guard = access(request)
    reach = guard.require(resource_type, interaction)
    parsed = search_query.parse(resource_type, pairs, sql.SUPPORTED_TYPES)
    includes = parse_includes(pairs)
    if parsed.ignored and "handling=strict" in request.headers.get("Prefer", ""):
        raise errors.not_supported(f"Unsupported search parameters: {', '.join(sorted(set(parsed.ignored)))}")
    conditions, params = sql.where(resource_type, parsed.clauses, guard.reach("search-type"))
    if reach is not None:
        extra = [*extra, (reach.sql, list(reach.params))]
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
    rows, links = _paged(request, pairs, (resource_type, conditions, params), keys, cursor, limit)
    base = base_url(request)
    entries = [search_entry(base, resource_type, row[0], row[1]) for row in rows]
    if includes:
        found = included(
            includes, [(resource_type, row[0]) for row in rows], lambda rows: guard.visible(rows, "read")
        )
        entries += [search_entry(base, t, i, content, "include") for t, i, content in found]
    if parsed.ignored:
        entries.append(ignored_parameters_entry(sorted(set(parsed.ignored))))
    return bundle_response(request, "searchset", entries, total=total, links=links)


def compartment_search(
    request: HttpRequest,
    compartment_type: str,
    compartment_id: str,
    resource_type: str,
    pairs: list[tuple[str, str]],
) -> HttpResponse:
    """[Compartment]/[id]/[type]?...: resources of that type in the compartment
    (http://hl7.org/fhir/R4/compartmentdefinition.html#search): Patient, Encounter,
    RelatedPerson, Practitioner or Device. The compartment's focal resource need not exist."""
    if compartment_type not in r4().compartments:
        raise errors.not_supported(
            f"{compartment_type} is not a compartment (use one of {', '.join(sorted(r4().compartments))})"
        )
    require_resource_type(resource_type)
    if not compartment.in_types(resource_type, compartment_type):
        raise errors.bad_request(f"{resource_type} is not in the {compartment_type} compartment")
    condition = compartment.condition(resource_type, compartment_id, compartment_type)
    return search(request, resource_type, pairs, extra=[condition], interaction="search-compartment")


def _paged(request: HttpRequest, pairs, query: tuple, keys, cursor, limit: int) -> tuple[list[tuple], list]:
    """The page's rows and its self/previous/next links. A previous page is read in the
    reversed order from before this page's first row, then put back in order."""
    before = paging.cursor(request, paging.BEFORE)
    if before is not None:
        rows, earlier = paging.split_page(
            _page(*query, sorting.reversed_keys(keys), before, limit + 1), limit
        )
        rows.reverse()
        later = True
        links = [("self", paging.link(request, before, pairs, paging.BEFORE))]
    else:
        rows, later = paging.split_page(_page(*query, keys, cursor, limit + 1), limit)
        earlier = cursor is not None
        links = [("self", paging.link(request, cursor, pairs))]
    if rows and earlier:
        links.append(("previous", paging.link(request, _position(rows[0][2:]), pairs, paging.BEFORE)))
    if rows and later:
        links.append(("next", paging.link(request, _position(rows[-1][2:]), pairs)))
    return rows, links


def _page(resource_type: str, conditions: list[str], params: list, keys, cursor, limit: int) -> list[tuple]:
    """One page: (id, content, sort values...)."""
    statement, statement_params = page_statement(resource_type, conditions, params, keys, cursor, limit)
    with connection.cursor() as db:
        db.execute(statement, statement_params)
        return db.fetchall()


def page_statement(
    resource_type: str, conditions: list[str], params: list, keys, cursor, limit: int
) -> tuple[str, list]:
    """The SQL of one page (also EXPLAINed by bench/bench_scale.py). Ids and sort keys are found
    and ordered first; the (often large) JSON is read for the page's rows only."""
    columns, key_params = sorting.select_keys(keys)
    where = " AND ".join(["r.resource_type = %s", "NOT r.deleted", *conditions])
    after, after_params = ("", [])
    if cursor is not None:
        after, after_params = sorting.after(keys, cursor)
        after = "WHERE " + after
    order = sorting.order_by(keys)
    sort_columns = ", ".join(f"p.sort_{index}" for index in range(len(keys)))
    statement = (
        f"SELECT p.resource_id, r.content, {sort_columns} FROM ("
        f"SELECT * FROM (SELECT r.resource_id, {columns} FROM fhir_resource r WHERE {where}) s"
        f" {after} {order} LIMIT %s) p"
        " JOIN fhir_resource r ON r.resource_type = %s AND r.resource_id = p.resource_id"
        f" {sorting.order_by(keys, prefix='p.')}"
    )
    return statement, [*key_params, resource_type, *params, *after_params, limit, resource_type]


def _total(request: HttpRequest, resource_type: str, conditions: list[str], params: list) -> int | None:
    wanted = request.GET.get("_total", "none")
    if wanted not in ("none", "estimate", "accurate"):
        raise errors.bad_request("_total must be none, estimate or accurate")
    if wanted == "none" and request.GET.get("_summary") != "count":
        return None
    where = " AND ".join(["r.resource_type = %s", "NOT r.deleted", *conditions])
    with connection.cursor() as db:
        if wanted == "estimate":
            # The planner's row estimate of the same query (search.html#total: "estimate" may be
            # inexact): costs planning only, however many resources match.
            db.execute(
                f"EXPLAIN (FORMAT JSON) SELECT 1 FROM fhir_resource r WHERE {where}", [resource_type, *params]
            )
            plan = db.fetchone()[0]
            plan = json.loads(plan) if isinstance(plan, str) else plan
            return int(plan[0]["Plan"]["Plan Rows"])
        db.execute(f"SELECT count(*) FROM fhir_resource r WHERE {where}", [resource_type, *params])
        return db.fetchone()[0]


def _position(values: tuple) -> tuple:
    """Sort values as JSON-safe cursor values (re-cast by type in SQL)."""
    return tuple(
        v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, Decimal) else v for v in values
    )


def system_search(request: HttpRequest, pairs: list[tuple[str, str]]) -> HttpResponse:
    """GET [base]?_type=A,B&...: the parameters common to those types, ordered by type and id."""
    types = [t for name, value in pairs if name == "_type" for t in value.split(",") if t]
    if not types:
        raise errors.not_supported("Search across all types needs _type (search.html#searchall)")
    if "_sort" in request.GET:
        raise errors.not_supported("_sort is not supported across several types")
    guard = access(request)
    reaches = {}
    for resource_type in types:
        require_resource_type(resource_type)
        reaches[resource_type] = guard.require(resource_type, "search-system")
    criteria = [(k, v) for k, v in pairs if k != "_type"]
    selects, params, ignored = [], [], set()
    for resource_type in sorted(set(types)):
        parsed = search_query.parse(resource_type, criteria, sql.SUPPORTED_TYPES)
        ignored |= set(parsed.ignored)
        conditions, condition_params = sql.where(resource_type, parsed.clauses, guard.reach("search-system"))
        if reaches[resource_type] is not None:
            conditions.append(reaches[resource_type].sql)
            condition_params += reaches[resource_type].params
        where = " AND ".join(["r.resource_type = %s", "NOT r.deleted", *conditions])
        selects.append(
            f"(SELECT r.resource_type, r.resource_id, r.content FROM fhir_resource r WHERE {where})"
        )
        params += [resource_type, *condition_params]
    if ignored and "handling=strict" in request.headers.get("Prefer", ""):
        raise errors.not_supported(f"Unsupported search parameters: {', '.join(sorted(ignored))}")
    limit = paging.page_size(request)
    cursor = paging.cursor(request)
    after = "WHERE (s.resource_type, s.resource_id) > (%s, %s)" if cursor else ""
    statement = f"SELECT * FROM ({' UNION ALL '.join(selects)}) s {after} ORDER BY 1, 2 LIMIT %s"
    with connection.cursor() as db:
        db.execute(statement, [*params, *(cursor or ()), limit + 1])
        rows = db.fetchall()
    links = [("self", paging.link(request, cursor, pairs))]
    rows, more = paging.split_page(rows, limit)
    if more:
        links.append(("next", paging.link(request, (rows[-1][0], rows[-1][1]), pairs)))
    base = base_url(request)
    entries = [search_entry(base, t, i, content) for t, i, content in rows]
    if ignored:
        entries.append(ignored_parameters_entry(sorted(ignored)))
    return bundle_response(request, "searchset", entries, links=links)
