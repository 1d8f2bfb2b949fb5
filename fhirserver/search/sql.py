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

from fhirserver.search import blind, composite, fulltext
from fhirserver.search.conditions import TABLES, value_condition
from fhirserver.search.query import Chain, Clause, Criterion, ReverseChain

# composite: every R4 composite; special: `near` only (the others have no expression).
SUPPORTED_TYPES = frozenset({*TABLES, "composite", "special"})


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
    if clause.parameter.type in ("composite", "special"):
        return composite.condition(resource_type, clause, alias)
    if code in fulltext.FULL_TEXT:
        return _full_text(resource_type, clause, alias)
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
    if clause.modifier == "identifier":  # Reference.identifier, as token rows (extraction._reference)
        table, code = "fhir_index_token", f"{code}:identifier"
    alternatives, params = [], []
    for value in clause.values:
        sql, value_params = value_condition(clause, value)
        alternatives.append(f"({sql})")
        params += value_params
    negate = "NOT " if clause.modifier == "not" else ""
    return (
        f"{alias}.resource_id {negate}IN (SELECT i.resource_id FROM {table} i"
        f" WHERE i.resource_type = %s AND i.param = %s AND ({' OR '.join(alternatives)}))",
        [resource_type, code, *params],
    )


def _full_text(resource_type: str, clause: Clause, alias: str) -> tuple[str, list]:
    alternatives, params = [], []
    for value in clause.values:
        sql, value_params = fulltext.condition(value)
        alternatives.append(f"({sql})")
        params += value_params
    return (
        f"{alias}.resource_id IN (SELECT i.resource_id FROM fhir_index_text i"
        f" WHERE i.resource_type = %s AND i.param = %s AND ({' OR '.join(alternatives)}))",
        [resource_type, clause.parameter.code, *params],
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
