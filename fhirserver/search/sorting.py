"""`_sort` and keyset paging (http://hl7.org/fhir/R4/search.html#sort).

Each sort key is one SQL expression per resource (the least value of the parameter for
ascending order, the greatest for descending), with missing values last in either direction.
The resource id ends every order, so the order is total and a page can start strictly after
the last row of the previous one: pages do not shift when resources are added or removed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fhirserver import errors
from fhirserver.search import blind
from fhirserver.search.query import parameters_for

# parameter type -> (index table, column sorted by, SQL type of the key)
_KEYS = {
    "string": ("fhir_index_string", "normalized", "text"),
    "token": ("fhir_index_token", "code", "text"),
    "uri": ("fhir_index_uri", "uri", "text"),
    "reference": ("fhir_index_reference", "target_id", "text"),
    "number": ("fhir_index_number", "value", "numeric"),
    "quantity": ("fhir_index_quantity", "value", "numeric"),
    "date": ("fhir_index_date", "start", "timestamptz"),
}
# Missing values sort last: larger than anything ascending, smaller than anything descending.
_LAST = {
    "text": ("chr(1114111)", "''"),
    "numeric": ("'Infinity'::numeric", "'-Infinity'::numeric"),
    "timestamptz": ("'infinity'::timestamptz", "'-infinity'::timestamptz"),
}


@dataclass(frozen=True)
class SortKey:
    sql: str  # expression on r
    params: tuple
    descending: bool
    sql_type: str


def sort_keys(resource_type: str, sort: str | None) -> list[SortKey]:
    keys = [_key(resource_type, name.strip()) for name in (sort or "").split(",") if name.strip()]
    keys.append(SortKey("r.resource_id", (), False, "text"))
    return keys


def _key(resource_type: str, name: str) -> SortKey:
    descending = name.startswith("-")
    code = name.lstrip("-")
    if code == "_id":
        return SortKey("r.resource_id", (), descending, "text")
    if code == "_lastUpdated":
        return SortKey("r.last_updated", (), descending, "timestamptz")
    parameter = parameters_for(resource_type).get(code)
    if parameter is None or parameter.type not in _KEYS:
        raise errors.bad_request(f"Cannot sort {resource_type} by '{code}'")
    if blind.is_blind(resource_type, code):
        raise errors.bad_request(f"Cannot sort {resource_type} by '{code}': it reads encrypted data")
    table, column, sql_type = _KEYS[parameter.type]
    if parameter.type == "date" and descending:
        column = "end"
    aggregate = "max" if descending else "min"
    missing = _LAST[sql_type][1 if descending else 0]
    collate = ' COLLATE "C"' if sql_type == "text" else ""
    sql = (
        f"coalesce((SELECT {aggregate}(k.{column}){collate} FROM {table} k"
        " WHERE k.resource_type = r.resource_type"
        f" AND k.resource_id = r.resource_id AND k.param = %s), {missing}{collate})"
    )
    return SortKey(sql, (code,), descending, sql_type)


def reversed_keys(keys: list[SortKey]) -> list[SortKey]:
    """The same keys in the opposite order, for reading the page before a position. The key
    expressions (with their missing-value placement) stay, so both orders are mirror images."""
    return [replace(key, descending=not key.descending) for key in keys]


def order_by(keys: list[SortKey], prefix: str = "") -> str:
    """ORDER BY the sort columns (named sort_<n>, optionally qualified by `prefix`)."""
    parts = [f"{prefix}sort_{index} {'DESC' if key.descending else 'ASC'}" for index, key in enumerate(keys)]
    return "ORDER BY " + ", ".join(parts)


def select_keys(keys: list[SortKey]) -> tuple[str, list]:
    columns, params = [], []
    for index, key in enumerate(keys):
        collate = ' COLLATE "C"' if key.sql_type == "text" else ""
        columns.append(f"({key.sql}){collate} AS sort_{index}")
        params += key.params
    return ", ".join(columns), params


def after(keys: list[SortKey], cursor: tuple) -> tuple[str, list]:
    """Rows strictly after `cursor` (the sort values of the last row of the previous page)."""
    if len(cursor) != len(keys):
        raise errors.bad_request("_cursor does not belong to this search")
    alternatives, params = [], []
    for index, key in enumerate(keys):
        equal_before = [f"sort_{j} = %s::{keys[j].sql_type}" for j in range(index)]
        beyond = f"sort_{index} {'<' if key.descending else '>'} %s::{key.sql_type}"
        alternatives.append("(" + " AND ".join([*equal_before, beyond]) + ")")
        params += [*cursor[:index], cursor[index]]
    return "(" + " OR ".join(alternatives) + ")", params
