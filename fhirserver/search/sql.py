"""Search compiled to SQL, in this one place (http://hl7.org/fhir/R4/search.html).

Each clause becomes `r.resource_id IN (SELECT resource_id FROM <index table> ...)` (or NOT IN
for :not and :missing=true), served by the (resource_type, param, value) index of that table;
clauses are ANDed, the values of one clause ORed. Parameters only: no value is ever formatted
into the SQL text.

Chains nest: the criterion at the end of a chain is compiled by the same code against a
`fhir_resource` alias of its own (t1, t2, ...), and the reference index links that alias's ids
to the outer resource, forwards for a chain, backwards for `_has`. PostgreSQL flattens these
IN-subqueries into semi-joins and can start from whichever side is selective, which needs table
statistics (autovacuum): without any, every estimate is one row and the nested loops multiply.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from fhirserver.search import blind
from fhirserver.search.extraction import normalize
from fhirserver.search.query import (
    Chain,
    Clause,
    Criterion,
    IdentifierTypeValue,
    RangeValue,
    ReferenceValue,
    ReverseChain,
    TokenValue,
)

TABLES = {
    "token": "fhir_index_token",
    "string": "fhir_index_string",
    "date": "fhir_index_date",
    "number": "fhir_index_number",
    "quantity": "fhir_index_quantity",
    "reference": "fhir_index_reference",
    "uri": "fhir_index_uri",
}
SUPPORTED_TYPES = frozenset(TABLES)


# (resource type, alias) -> a condition on that alias limiting which resources of the type a
# chain may go through (the caller's authorization), or None for all of them.
Reach = Callable[[str, str], tuple[str, list] | None]


def where(resource_type: str, clauses: list[Criterion], reach: Reach | None = None) -> tuple[list[str], list]:
    """SQL conditions on `r` (fhir_resource) and their parameters. `reach` limits the
    resources that chained and reverse-chained criteria look at."""
    conditions, params = [], []
    for clause in clauses:
        sql, clause_params = _criterion(resource_type, clause, 0, reach)
        conditions.append(sql)
        params += clause_params
    return conditions, params


def _alias(depth: int) -> str:
    return f"t{depth}" if depth else "r"


def _criterion(resource_type: str, criterion: Criterion, depth: int, reach: Reach | None) -> tuple[str, list]:
    if isinstance(criterion, Chain):
        return _chain(resource_type, criterion, depth, reach)
    if isinstance(criterion, ReverseChain):
        return _reverse_chain(resource_type, criterion, depth, reach)
    return _clause(resource_type, criterion, _alias(depth))


def _chain(resource_type: str, chain: Chain, depth: int, reach: Reach | None) -> tuple[str, list]:
    # One branch per target type, in a UNION rather than ORed: the planner can turn each branch
    # into index nested loops, where an OR of IN-subqueries filters every reference row.
    ref = f"ref{depth + 1}"
    branches, params = [], []
    for target_type, criterion in chain.targets.items():
        ids, ids_params = _matching_ids(target_type, criterion, depth + 1, reach)
        branches.append(
            f"SELECT {ref}.resource_id FROM fhir_index_reference {ref}"
            f" WHERE {ref}.resource_type = %s AND {ref}.param = %s AND {ref}.target_type = %s"
            f" AND {ref}.target_id IN ({ids})"
        )
        params += [resource_type, chain.parameter.code, target_type, *ids_params]
    return f"{_alias(depth)}.resource_id IN ({' UNION ALL '.join(branches)})", params


def _reverse_chain(
    resource_type: str, has: ReverseChain, depth: int, reach: Reach | None
) -> tuple[str, list]:
    ref = f"ref{depth + 1}"
    ids, ids_params = _matching_ids(has.source_type, has.criterion, depth + 1, reach)
    return (
        f"{_alias(depth)}.resource_id IN (SELECT {ref}.target_id FROM fhir_index_reference {ref}"
        f" WHERE {ref}.resource_type = %s AND {ref}.param = %s AND {ref}.target_type = %s"
        f" AND {ref}.resource_id IN ({ids}))",
        [has.source_type, has.parameter.code, resource_type, *ids_params],
    )


def _matching_ids(
    resource_type: str, criterion: Criterion, depth: int, reach: Reach | None
) -> tuple[str, list]:
    """Ids of current resources meeting the criterion. Through fhir_resource, not the index
    alone, so that :not and :missing=true have the type's resources to subtract from."""
    alias = _alias(depth)
    sql, params = _criterion(resource_type, criterion, depth, reach)
    reachable = reach(resource_type, alias) if reach else None
    if reachable is not None:
        sql, params = f"{sql} AND {reachable[0]}", [*params, *reachable[1]]
    return (
        f"SELECT {alias}.resource_id FROM fhir_resource {alias}"
        f" WHERE {alias}.resource_type = %s AND NOT {alias}.deleted AND {sql}",
        [resource_type, *params],
    )


def _clause(resource_type: str, clause: Clause, alias: str) -> tuple[str, list]:
    code = clause.parameter.code
    table = "fhir_index_blind" if blind.is_blind(resource_type, code) else TABLES[clause.parameter.type]
    if clause.modifier == "missing":
        negate = "NOT " if clause.values[0] else ""
        return (
            f"{alias}.resource_id {negate}IN (SELECT resource_id FROM {table}"
            " WHERE resource_type = %s AND param = %s)",
            [resource_type, code],
        )
    if code == "_id":
        return f"{alias}.resource_id = ANY(%s)", [[v.code for v in clause.values]]
    if table == "fhir_index_blind":
        return _blind_clause(resource_type, clause, alias)
    if clause.modifier == "of-type":
        table = "fhir_index_identifier_type"
    alternatives, params = [], []
    for value in clause.values:
        sql, value_params = _value(clause, value)
        alternatives.append(f"({sql})")
        params += value_params
    negate = "NOT " if clause.modifier == "not" else ""
    return (
        f"{alias}.resource_id {negate}IN (SELECT i.resource_id FROM {table} i"
        f" WHERE i.resource_type = %s AND i.param = %s AND ({' OR '.join(alternatives)}))",
        [resource_type, code, *params],
    )


def _blind_clause(resource_type: str, clause: Clause, alias: str) -> tuple[str, list]:
    """A parameter over encrypted elements: the values' digests (search/blind.py)."""
    negate = "NOT " if clause.modifier == "not" else ""
    return (
        f"{alias}.resource_id {negate}IN (SELECT i.resource_id FROM fhir_index_blind i"
        " WHERE i.resource_type = %s AND i.param = %s AND i.digest = ANY(%s))",
        [
            resource_type,
            clause.parameter.code,
            [blind.value_digest(clause, value) for value in clause.values],
        ],
    )


def _value(clause: Clause, value: object) -> tuple[str, list]:
    kind = clause.parameter.type
    if kind == "token":
        return _token(clause.modifier, value)
    if kind == "string":
        return _string(clause.modifier, value)
    if kind == "uri":
        return _uri(clause.modifier, value)
    if kind == "reference":
        return _reference(clause.modifier, value)
    if kind == "date":
        return _date(value)
    return _number(value, quantity=kind == "quantity")


def like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _token(modifier: str | None, value: object) -> tuple[str, list]:
    if modifier == "text":
        return "lower(i.text) LIKE %s", [like_prefix(normalize(value)) + "%"]
    if isinstance(value, IdentifierTypeValue):
        system = "i.type_system = %s" if value.type_system else "TRUE"
        params = [value.type_system] if value.type_system else []
        return f"{system} AND i.type_code = %s AND i.value = %s", [*params, value.type_code, value.value]
    assert isinstance(value, TokenValue)
    if value.any_system:
        return "i.code = %s", [value.code]
    if value.code is None:
        return "i.system = %s", [value.system]
    if value.system is None:
        return "i.system IS NULL AND i.code = %s", [value.code]
    return "i.system = %s AND i.code = %s", [value.system, value.code]


def _string(modifier: str | None, value: str) -> tuple[str, list]:
    if modifier == "exact":
        return "i.original = %s", [value]
    if modifier == "contains":
        return "i.normalized LIKE %s", ["%" + like_prefix(normalize(value)) + "%"]
    return "i.normalized LIKE %s", [like_prefix(normalize(value)) + "%"]


def _uri(modifier: str | None, value: str) -> tuple[str, list]:
    if modifier == "below":
        return "i.uri LIKE %s", [like_prefix(value) + "%"]
    if modifier == "above":
        return "%s LIKE replace(replace(i.uri, '%%', '\\%%'), '_', '\\_') || '%%'", [value]
    return "i.uri = %s", [value]


def _reference(modifier: str | None, value: ReferenceValue) -> tuple[str, list]:
    if value.target_id is None:
        return "i.url = %s", [value.url]
    conditions, params = ["i.target_id = %s"], [value.target_id]
    if value.target_type:
        conditions.append("i.target_type = %s")
        params.append(value.target_type)
    sql = " AND ".join(conditions)
    if value.url:  # an absolute URL naming Type/id matches either form
        return f"({sql}) OR i.url = %s", [*params, value.url]
    return sql, params


def _date(value: RangeValue) -> tuple[str, list]:
    """Ranges are [start, end); comparisons per search.html#prefix."""
    start, end = value.low, value.high
    contained = "(i.start >= %s AND i.end <= %s)"
    formulas = {
        "eq": (contained, [start, end]),
        "ne": (f"NOT {contained}", [start, end]),
        "gt": ("i.end > %s", [end]),
        "lt": ("i.start < %s", [start]),
        "ge": (f"(i.end > %s OR {contained})", [end, start, end]),
        "le": (f"(i.start < %s OR {contained})", [start, start, end]),
        "sa": ("i.start >= %s", [end]),
        "eb": ("i.end <= %s", [start]),
    }
    if value.prefix == "ap":
        slack = _approximation(start)
        return "(i.start < %s AND i.end > %s)", [end + slack, start - slack]
    return formulas[value.prefix]


def _approximation(moment: datetime) -> timedelta:
    """`ap`: 10% of the distance from now (search.html#prefix), at least a day."""
    return max(abs(datetime.now(UTC) - moment) / 10, timedelta(days=1))


def _number(value: RangeValue, quantity: bool) -> tuple[str, list]:
    number: Decimal = value.value
    formulas = {
        "eq": ("i.value >= %s AND i.value < %s", [value.low, value.high]),
        "ne": ("NOT (i.value >= %s AND i.value < %s)", [value.low, value.high]),
        "gt": ("i.value > %s", [number]),
        "lt": ("i.value < %s", [number]),
        "ge": ("i.value >= %s", [number]),
        "le": ("i.value <= %s", [number]),
        "sa": ("i.value > %s", [number]),
        "eb": ("i.value < %s", [number]),
        "ap": ("i.value >= %s AND i.value <= %s", [number - abs(number) / 10, number + abs(number) / 10]),
    }
    sql, params = formulas[value.prefix]
    if quantity and value.code:
        if value.system:
            sql += " AND i.system = %s AND i.code = %s"
            params = [*params, value.system, value.code]
        else:
            sql += " AND (i.code = %s OR i.unit = %s)"
            params = [*params, value.code, value.code]
    return sql, params
