"""Patient $everything (http://hl7.org/fhir/R4/patient-operation-everything.html).

`GET|POST [base]/Patient/[id]/$everything` returns, as a searchset Bundle paged like search:

- the Patient itself;
- its compartment: every resource with a reference to the Patient through one of the search
  parameters R4's CompartmentDefinition patient lists for its type;
- what those reference through any indexed reference parameter, which is what is "needed to
  support the records": Practitioner, Organization, Location, Medication, Device, an Encounter
  without a subject... The spec asks for "any resource referenced from those"; we leave out
  what belongs to another patient (another Patient, a resource in another patient's
  compartment): the spec limits the result to what is "available for the given user".

`GET [base]/Patient/$everything` is the same over every patient at once (all patients the
caller may see), each resource once.

Authorization (fhirserver.api.authorization): the instance level reads the Patient (SMART `r`,
so another patient than the launch patient is 403 for patient-level tokens); the type level
searches Patient (`s`). Either way the result is a listing: each member type needs `s` and is
limited to what the token reaches, in the page's SQL; types without `s` are left out.

Parameters: `_since` (only resources whose lastUpdated is at or after it), `_type` (only these
types; the Patient itself only if Patient is listed), `_count` (page size, capped as in search).
`start` and `end` (a window of care dates, whose meaning per resource type the spec leaves to
the server) are accepted and ignored: the whole record is returned. Other parameters are
treated like unknown search parameters: ignored and listed in a warning OperationOutcome entry,
or refused with `Prefer: handling=strict`. POST takes the same parameters in a Parameters body;
its next links are GETs carrying them.

Without `_count`, the instance level returns the whole record as one Bundle, streamed: one
SQL statement finds the members in order and a server-side cursor hands them over a batch at a
time, so the server holds one batch however large the record, and the record costs one pass
(the issue's measure is the time to the last byte of the whole record). With `_count` (or a
format or `_summary`/`_elements` that needs each entry parsed, or at the type level, where the
whole record is the whole tenant: that is Bulk Data's `$export`) results are paged.

Paging is a keyset on (resource type, id), like system search. Each page is one SQL statement
(after the Patient's existence check) that finds the members, orders them and stops after the
page, reading `content` only for the page's rows. For one patient the statement recomputes the
member set each page, so a page costs in proportion to the size of the record (about 0.4 s for
25,000 resources); a larger `_count`, or none, gets a large record faster.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cache

import orjson
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse, QueryDict

from fhirserver import errors
from fhirserver.api import paging
from fhirserver.api.authorization import access, named
from fhirserver.api.bundles import (
    Entry,
    bundle_header,
    bundle_response,
    ignored_parameters_entry,
    search_entry,
    streamed_bundle_response,
)
from fhirserver.api.endpoint import base_url
from fhirserver.api.negotiation import JSON, parse_body, response_format, wants_shaping
from fhirserver.operations import parameters
from fhirserver.registry import r4
from fhirserver.search.dates import parse_range
from fhirserver.storage.repository import Repository

OPERATION_PARAMETERS = ("_since", "_type", "_count", "start", "end")
STREAM_BATCH = 500  # rows per FETCH of a streamed record (about 0.5-1 MB of JSON)
# Parameters that are not the operation's but shape any response (or carry our cursor).
GENERAL_PARAMETERS = ("_format", "_pretty", "_summary", "_elements", paging.CURSOR)


@dataclass(frozen=True)
class Selection:
    """What one page asks for, after validation."""

    since: datetime | None
    types: list[str] | None
    after: tuple[str, str] | None
    limit: int


def everything(request: HttpRequest, resource_type: str, resource_id: str | None = None) -> HttpResponse:
    if resource_type != "Patient":
        raise errors.not_supported(f"$everything is supported on Patient, not on {resource_type}")
    if request.method == "POST":
        request.GET = _with_body_parameters(request)
    ignored = _check_parameters(request)
    selection = _selection(request)
    guard = access(request)
    if resource_id is not None:
        guard.require("Patient", "read")
        Repository().read("Patient", resource_id)  # 404 / 410, where the page would be empty
        guard.check_instance("Patient", resource_id, "read")
        reach = guard.types_condition("search-type", "m.resource_type", "m.resource_id")
        if _whole_record(request):
            statement, params = _patient_statement(resource_id, selection, reach, limit=None)
            return _streamed(request, statement, params, ignored)
        rows = _fetch(*_patient_statement(resource_id, selection, reach, selection.limit + 1))
    else:
        guard.require("Patient", "search-type")
        reach = guard.types_condition("search-type", "r.resource_type", "r.resource_id")
        rows = _fetch(*_all_patients_statement(selection, reach))
    return _bundle(request, rows, selection.limit, ignored)


def _whole_record(request: HttpRequest) -> bool:
    fmt = response_format(request)
    return "_count" not in request.GET and fmt == JSON and not wants_shaping(request, fmt)


# ----- parameters -----------------------------------------------------------------------------
def _with_body_parameters(request: HttpRequest) -> QueryDict:
    """The query string plus a Parameters body's values, so that everything downstream (paging
    links included, which are GETs) sees one set of parameters."""
    merged = request.GET.copy()
    if not request.body:
        return merged
    body = parse_body(request)
    if not parameters.is_parameters(body):
        raise errors.bad_request("The body of POST $everything must be a Parameters resource")
    for parameter in body.get("parameter", []):
        if not isinstance(parameter, dict) or "name" not in parameter:
            raise errors.bad_request("Each parameter needs a name", code="structure")
        value = _primitive_value(parameter)
        if value is None:
            raise errors.bad_request(f"Parameter '{parameter['name']}' needs a primitive value[x]")
        merged.appendlist(parameter["name"], value)
    return merged


def _primitive_value(parameter: dict) -> str | None:
    for key, value in parameter.items():
        if key.startswith("value") and isinstance(value, str | int) and not isinstance(value, bool):
            return str(value)
    return None


def _check_parameters(request: HttpRequest) -> list[str]:
    """Names of parameters this operation does not know (ignored, or 400 under strict handling)."""
    unknown = sorted(name for name in request.GET if name not in OPERATION_PARAMETERS + GENERAL_PARAMETERS)
    if unknown and "handling=strict" in request.headers.get("Prefer", ""):
        raise errors.not_supported(f"Unsupported $everything parameters: {', '.join(unknown)}")
    return unknown


def _selection(request: HttpRequest) -> Selection:
    raw_since = request.GET.get("_since")
    since = parse_range(raw_since, "_since")[0] if raw_since else None
    return Selection(since, _types(request), _after(request), paging.page_size(request))


def _types(request: HttpRequest) -> list[str] | None:
    values = request.GET.getlist("_type")
    if not values:
        return None
    names = {name.strip() for value in values for name in value.split(",")} - {""}
    unknown = sorted(name for name in names if not r4().is_resource_type(name))
    if unknown or not names:
        raise errors.bad_request(f"_type names unknown resource types: {', '.join(unknown) or '(none)'}")
    return sorted(names)


def _after(request: HttpRequest) -> tuple[str, str] | None:
    position = paging.cursor(request)
    if position is None:
        return None
    if len(position) != 2 or not all(isinstance(part, str) for part in position):
        raise errors.bad_request("_cursor is not a cursor this server issued")
    return position[0], position[1]


# ----- SQL ----------------------------------------------------------------------------------
@cache
def _compartment_links() -> tuple[list[str], list[str]]:
    """(types, params): the pairs that put a resource in a patient's compartment."""
    pairs = [(t, p) for t, params in sorted(r4().patient_compartment.items()) for p in params]
    return [t for t, _ in pairs], [p for _, p in pairs]


@cache
def _reference_paths() -> str:
    """JSON: target type -> [{source_type, param}, ...], every reference search parameter of a
    type that can be in a compartment, under each type it may point to. Lets the all-patients
    query ask "is this resource referenced from a compartment?" with index lookups only."""
    compartment_types = {t for t, params in r4().patient_compartment.items() if params}
    paths: dict[str, list[dict]] = {}
    for sp in r4().search_parameters:
        if sp.type != "reference":
            continue
        for source in sorted(set(sp.base) & compartment_types):
            for target in sp.target:
                paths.setdefault(target, []).append({"source_type": source, "param": sp.code})
    return orjson.dumps(paths).decode()


# The (type, param) pairs of R4's CompartmentDefinition patient, as a table.
_LINKS = (
    "links(source_type, param) AS (SELECT * FROM unnest(%(link_types)s::text[], %(link_params)s::text[]))"
)
# A row of fhir_index_reference (alias given) that puts its resource in some patient compartment.
_IN_A_COMPARTMENT = (
    "{a}.target_type = 'Patient' AND EXISTS (SELECT 1 FROM links l"
    " WHERE l.source_type = {a}.resource_type AND l.param = {a}.param)"
)

# One patient's page. The compartment is found through the reference index (by target) and
# materialized once: it is both part of the result and where the references start. Referenced
# resources already in the compartment are removed with EXCEPT, a set operation PostgreSQL runs
# by hashing or sorting whatever its estimates (an anti-join there may become a nested loop over
# the CTE, quadratic for a large record). What is left is kept unless it is in another patient's
# compartment: that is the other patient's data, not ours to return.
PATIENT_PAGE = f"""
WITH {_LINKS}, compartment AS MATERIALIZED (
    SELECT DISTINCT c.resource_type, c.resource_id
    FROM links l JOIN fhir_index_reference c
      ON c.resource_type = l.source_type AND c.param = l.param
     AND c.target_id = %(patient)s AND c.target_type = 'Patient'
), referenced AS (
    SELECT f.target_type AS resource_type, f.target_id AS resource_id
    FROM compartment c JOIN fhir_index_reference f
      ON f.resource_type = c.resource_type AND f.resource_id = c.resource_id
    WHERE f.target_type <> 'Patient' AND f.target_id IS NOT NULL
    EXCEPT
    SELECT resource_type, resource_id FROM compartment
), members AS (
    SELECT 'Patient' AS resource_type, %(patient)s AS resource_id
    UNION ALL
    SELECT * FROM compartment WHERE NOT (resource_type = 'Patient' AND resource_id = %(patient)s)
    UNION ALL
    SELECT * FROM referenced x
    WHERE NOT EXISTS (
        SELECT 1 FROM fhir_index_reference o
        WHERE o.resource_type = x.resource_type AND o.resource_id = x.resource_id
          AND o.target_id <> %(patient)s AND {_IN_A_COMPARTMENT.format(a="o")})
)
SELECT m.resource_type, m.resource_id, r.content
FROM (SELECT * FROM members ORDER BY resource_type, resource_id) m
CROSS JOIN LATERAL (
    SELECT r.content, r.last_updated FROM fhir_resource r
    WHERE r.resource_type = m.resource_type AND r.resource_id = m.resource_id AND NOT r.deleted
    LIMIT 1
) r
WHERE {{conditions}}
ORDER BY m.resource_type, m.resource_id
LIMIT %(limit)s
"""
# LIMIT 1 in the lateral subquery (the primary key makes it a no-op) keeps PostgreSQL from
# flattening it into a join it may reorder: members are sorted first and read in that order,
# so the outer LIMIT stops after one page instead of reading every member's row.

# Every patient's page: walk fhir_resource in key order from the cursor and keep a row if it is
# a Patient, in some compartment, or referenced from a resource in one. The last test looks up
# the reference index by target through each (source type, param) that can point to the row's
# type, so each page costs index lookups for its own rows, not a pass over the tenant. The
# pairs come as typed columns (jsonb_to_recordset): with `p ->> 0` in the join clause, which is
# not leakproof, row-level security kept PostgreSQL from using it as an index condition.
ALL_PATIENTS_PAGE = f"""
WITH {_LINKS}
SELECT r.resource_type, r.resource_id, r.content
FROM fhir_resource r
WHERE NOT r.deleted AND {{conditions}}
  AND (r.resource_type = 'Patient'
    OR EXISTS (
        SELECT 1 FROM fhir_index_reference c
        WHERE c.resource_type = r.resource_type AND c.resource_id = r.resource_id
          AND {_IN_A_COMPARTMENT.format(a="c")})
    OR EXISTS (
        SELECT 1
        FROM jsonb_to_recordset(%(paths)s::jsonb -> r.resource_type) p(source_type text, param text)
        JOIN fhir_index_reference f
          ON f.resource_type = p.source_type AND f.param = p.param
         AND f.target_id = r.resource_id AND f.target_type = r.resource_type
        WHERE EXISTS (
            SELECT 1 FROM fhir_index_reference c
            WHERE c.resource_type = f.resource_type AND c.resource_id = f.resource_id
              AND {_IN_A_COMPARTMENT.format(a="c")})))
ORDER BY r.resource_type, r.resource_id
LIMIT %(limit)s
"""


def _conditions(selection: Selection, keys: str, reach: tuple[str, list] | None) -> tuple[str, dict]:
    """The page's filters, applied before LIMIT: keyset and types on the alias `keys` (where
    they can narrow the member set early), lastUpdated on the stored row r, and what the token
    may reach (a condition on `keys`, from fhirserver.api.authorization)."""
    clauses, params = ["true"], {}
    if reach is not None:
        condition, reach_params = named(reach, "reach")
        clauses.append(condition)
        params.update(reach_params)
    if selection.after is not None:
        clauses.append(f"({keys}.resource_type, {keys}.resource_id) > (%(after_type)s, %(after_id)s)")
        params.update(after_type=selection.after[0], after_id=selection.after[1])
    if selection.types is not None:
        clauses.append(f"{keys}.resource_type = ANY(%(types)s::text[])")
        params["types"] = selection.types
    if selection.since is not None:
        clauses.append("r.last_updated >= %(since)s")
        params["since"] = selection.since
    return " AND ".join(clauses), params


def _patient_statement(
    patient_id: str, selection: Selection, reach: tuple[str, list] | None, limit: int | None
) -> tuple[str, dict]:
    """One patient's members from the selection's position on; `limit` None: all of them."""
    conditions, params = _conditions(selection, "m", reach)
    link_types, link_params = _compartment_links()
    params.update(patient=patient_id, link_types=link_types, link_params=link_params, limit=limit)
    return PATIENT_PAGE.format(conditions=conditions), params


def _all_patients_statement(selection: Selection, reach: tuple[str, list] | None) -> tuple[str, dict]:
    conditions, params = _conditions(selection, "r", reach)
    link_types, link_params = _compartment_links()
    params.update(
        link_types=link_types, link_params=link_params, paths=_reference_paths(), limit=selection.limit + 1
    )
    return ALL_PATIENTS_PAGE.format(conditions=conditions), params


# The per-row subqueries give these plans cost estimates far above jit_above_cost, and compiling
# them took longer (~0.5 s) than running a 1,000-entry page (~30 ms).
_NO_JIT = "SET LOCAL jit = off"


def _fetch(statement: str, params: dict) -> list[tuple[str, str, str]]:
    with transaction.atomic(), connection.cursor() as db:
        db.execute(_NO_JIT)
        db.execute(statement, params)
        return db.fetchall()


def _batches(statement: str, params: dict) -> Iterator[list[tuple[str, str, str]]]:
    """The statement's rows through a server-side cursor, STREAM_BATCH at a time. Runs while the
    response streams; a client that goes away closes the generator, which ends the transaction."""
    with transaction.atomic(), connection.cursor() as db:
        db.execute(_NO_JIT)
        db.execute(f"DECLARE everything NO SCROLL CURSOR FOR {statement}", params)
        while True:
            db.execute(f"FETCH {STREAM_BATCH} FROM everything")
            rows = db.fetchall()
            if not rows:
                return
            yield rows


# ----- response -----------------------------------------------------------------------------
def _streamed(request: HttpRequest, statement: str, params: dict, ignored: list[str]) -> HttpResponse:
    base = base_url(request)
    header = bundle_header("searchset", links=[("self", paging.link(request, paging.cursor(request)))])

    def entries() -> Iterator[list[Entry]]:
        for rows in _batches(statement, params):
            yield [search_entry(base, t, i, content) for t, i, content in rows]
        if ignored:
            yield [ignored_parameters_entry(ignored)]

    return streamed_bundle_response(request, header, entries())


def _bundle(request: HttpRequest, rows: list[tuple], limit: int, ignored: list[str]) -> HttpResponse:
    links = [("self", paging.link(request, paging.cursor(request)))]
    page, more = paging.split_page(rows, limit)
    if more:
        links.append(("next", paging.link(request, (page[-1][0], page[-1][1]))))
    base = base_url(request)
    entries = [search_entry(base, t, i, content) for t, i, content in page]
    if ignored:
        entries.append(ignored_parameters_entry(ignored))
    return bundle_response(request, "searchset", entries, links=links)
