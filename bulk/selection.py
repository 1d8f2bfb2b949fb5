"""What one export selects, and the SQL that reads it in keyset batches.

Consistency as of `transaction_time` (the manifest's transactionTime, Bulk Data IG "Response -
Complete Status": resources "as of" that instant), without holding a snapshot open for the
whole export (which a restarted worker could not get back, and which would hold back vacuum):

- a current row (fhir_resource) with last_updated <= transaction_time is the version as of then:
  these are nearly all rows, streamed in primary-key order by an index scan;
- a row updated later (changed or deleted after the kick-off) is replaced by its latest version
  with last_updated <= transaction_time from fhir_resource_version, unless that version is a
  deletion; a resource created later has no such version and is left out.

Both branches are merged in resource_id order, so `resource_id > last id written` is a keyset
that a worker can resume from. Filters (authorization, _typeFilter, compartment membership) are
conditions on the current row `r` and its search index, which describes the current version:
for the few resources changed after transaction_time, the version written is as of then, but
whether it is written is decided on the current index.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import parse_qsl

from django.db import connection

from fhirserver import errors
from fhirserver.api.authorization import Access
from fhirserver.registry import r4
from fhirserver.search import compartment, query, sql
from smart_auth.context import AuthContext

LEVELS = ("system", "patient", "group")


@dataclass(frozen=True)
class Selection:
    """Everything that decides the content of an export, fixed at kick-off."""

    level: str
    types: list[str]
    transaction_time: datetime
    scopes: list[str]
    since: datetime | None = None
    type_filters: dict[str, list[str]] = field(default_factory=dict)  # type -> ["a=b&c=d", ...]
    patients: list[str] | None = None  # group members; None: every patient


def read_batch(selection: Selection, resource_type: str, after: str, limit: int) -> Iterator[tuple[str, str]]:
    """Up to `limit` (id, stored JSON) of the type with id > `after`, in id order, row by row
    as they arrive (libpq single-row mode): the batch is never held whole in memory."""
    statement, params = batch_statement(selection, resource_type, after, limit)
    with connection.cursor() as db:
        # Row-by-row subplans give estimates above jit_above_cost; compiling took longer than
        # the batch (as in $everything). The writer's connection is its own: a session setting.
        db.execute("SET jit = off")
        yield from db.cursor.stream(statement, params)


def batch_statement(selection: Selection, resource_type: str, after: str, limit: int) -> tuple[str, list]:
    conditions, condition_params = _conditions(selection, resource_type)
    where = "".join(f" AND {condition}" for condition in conditions)
    since_current = " AND r.last_updated > %s" if selection.since else ""
    since_version = " AND v.last_updated > %s" if selection.since else ""
    since = [selection.since] if selection.since else []
    moment = selection.transaction_time
    # Each branch orders and limits itself, so the planner reads the current rows in primary-key
    # order from the index and stops after one batch, instead of sorting the whole type per batch.
    statement = (
        "(SELECT r.resource_id, r.content FROM fhir_resource r"
        " WHERE r.resource_type = %s AND r.resource_id > %s AND NOT r.deleted AND r.last_updated <= %s"
        f"{since_current}{where} ORDER BY r.resource_id LIMIT %s)"
        " UNION ALL "
        "(SELECT r.resource_id, v.content FROM fhir_resource r CROSS JOIN LATERAL ("
        "  SELECT v.content, v.deleted, v.last_updated FROM fhir_resource_version v"
        "  WHERE v.resource_type = r.resource_type AND v.resource_id = r.resource_id AND v.last_updated <= %s"
        "  ORDER BY v.version_id DESC LIMIT 1) v"
        " WHERE r.resource_type = %s AND r.resource_id > %s AND r.last_updated > %s AND NOT v.deleted"
        f"{since_version}{where} ORDER BY r.resource_id LIMIT %s)"
        " ORDER BY 1 LIMIT %s"
    )
    params = [
        *[resource_type, after, moment, *since, *condition_params, limit],
        *[moment, resource_type, after, moment, *since, *condition_params, limit],
        limit,
    ]
    return statement, params


def _conditions(selection: Selection, resource_type: str) -> tuple[list[str], list]:
    conditions, params = [], []
    found = access_of(selection.scopes).require(resource_type, "search-type")
    if found is not None:
        conditions.append(found.sql)
        params += list(found.params)
    filters = selection.type_filters.get(resource_type)
    if filters:
        alternatives = []
        for text in filters:
            clauses, clause_params = sql.where(resource_type, parse_type_filter(resource_type, text).clauses)
            alternatives.append("(" + " AND ".join(clauses or ["true"]) + ")")
            params += clause_params
        conditions.append("(" + " OR ".join(alternatives) + ")")  # IG: several filters of a type are ORed
    if selection.level != "system":
        condition, membership_params = _membership(resource_type, selection.patients)
        conditions.append(condition)
        params += membership_params
    return conditions, params


def _membership(resource_type: str, patients: list[str] | None) -> tuple[str, list]:
    """In the Patient compartment of one of `patients` (None: of any patient)."""
    if resource_type == "Patient":
        return ("true", []) if patients is None else ("r.resource_id = ANY(%s)", [patients])
    params = [list(r4().patient_compartment[resource_type])]
    if patients is None:
        # Nearly every row qualifies: checked row by row along the primary-key scan (the reference
        # index by resource). OFFSET 0 keeps PostgreSQL from turning it into a semi-join, which it
        # ran as a hash of the whole type (and a sort of it) on every batch.
        return (
            "EXISTS (SELECT 1 FROM fhir_index_reference c WHERE c.resource_type = r.resource_type"
            " AND c.resource_id = r.resource_id AND c.param = ANY(%s) AND c.target_type = 'Patient'"
            " OFFSET 0)",
            params,
        )
    return (
        "r.resource_id IN (SELECT c.resource_id FROM fhir_index_reference c WHERE c.resource_type = %s"
        " AND c.param = ANY(%s) AND c.target_type = 'Patient' AND c.target_id = ANY(%s))",
        [resource_type, *params, patients],
    )


def parse_type_filter(resource_type: str, text: str) -> query.SearchQuery:
    """A _typeFilter's query (the part after `?`), compiled by the search code. Parameters the
    search cannot evaluate make it invalid, never ignored: ignoring them would widen the export."""
    pairs = parse_qsl(text, keep_blank_values=True)
    control = sorted({name for name, _ in pairs if name in query.CONTROL})
    parsed = query.parse(resource_type, pairs, sql.SUPPORTED_TYPES)
    unusable = control + parsed.ignored
    if unusable:
        raise errors.bad_request(
            f"_typeFilter for {resource_type} has unsupported parameters: {', '.join(unusable)}"
        )
    return parsed


def access_of(scopes: list[str]) -> Access:
    """The access the export's scopes give (a token without user: backend services)."""
    return Access(AuthContext(user=None, scopes=frozenset(scopes)))


def exportable(level: str) -> list[str]:
    """Every type an export of this level may hold: all types at system level, else the types
    of the Patient compartment (IG "Endpoint - All Patients": "resources in the Patient
    compartment"), the Patient itself included."""
    if level == "system":
        return sorted(r4().resource_types)
    return sorted({t for t in r4().resource_types if compartment.in_types(t)} | {"Patient"})
