"""Token index rows (system|code) for the `identifier` search parameter.

This is the part of search that conditional interactions and conditional references need
(`Patient?identifier=system|value`). Indexing of every R4 search parameter builds on it.
"""

from __future__ import annotations

from functools import cache

from django.db import connection

from fhirserver.registry import r4

IDENTIFIER = "identifier"


@cache
def indexed_types() -> frozenset[str]:
    """Resource types that have an `identifier` search parameter in R4."""
    return frozenset(base for sp in r4().search_parameters if sp.code == IDENTIFIER for base in sp.base)


def token_rows(resource_type: str, resource_id: str, resource: dict) -> list[tuple]:
    """(type, id, param, system, code) rows to index for this resource."""
    if resource_type not in indexed_types():
        return []
    value = resource.get(IDENTIFIER)
    identifiers = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
    return [
        (resource_type, resource_id, IDENTIFIER, i.get("system"), i["value"])
        for i in identifiers
        if isinstance(i, dict) and isinstance(i.get("value"), str)
    ]


def find(resource_type: str, param: str, system: str | None, code: str, any_system: bool) -> set[str]:
    """Ids of current, not deleted resources with that token. `any_system` for a bare `code`;
    system None without any_system is `|code` (no system)."""
    sql = (
        "SELECT t.resource_id FROM fhir_index_token t JOIN fhir_resource r"
        " ON r.resource_type = t.resource_type AND r.resource_id = t.resource_id AND NOT r.deleted"
        " WHERE t.resource_type = %s AND t.param = %s AND t.code = %s"
    )
    params: list = [resource_type, param, code]
    if not any_system:
        sql += " AND t.system IS NULL" if system is None else " AND t.system = %s"
        params += [] if system is None else [system]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {row[0] for row in cursor.fetchall()}
