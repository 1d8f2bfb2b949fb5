"""Search criteria of conditional interactions and conditional references
(http://hl7.org/fhir/R4/http.html#cond-update), evaluated by the same SQL as search.

A criterion that search cannot evaluate is an error here, never silently ignored: ignoring it
would make a conditional update or delete hit the wrong resources.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from django.db import connection

from fhirserver import errors
from fhirserver.search import query, sql


def matching_ids(resource_type: str, query_string: str) -> set[str]:
    """Ids of current (not deleted) resources of that type meeting every criterion."""
    pairs = [(k, v) for k, v in parse_qsl(query_string, keep_blank_values=True) if k not in query.CONTROL]
    if not pairs:
        raise errors.precondition_failed("Conditional request has no search criteria")
    parsed = query.parse(resource_type, pairs, sql.SUPPORTED_TYPES)
    if parsed.ignored:
        raise errors.not_supported(
            "Search parameters not supported in conditional requests: "
            + ", ".join(sorted(set(parsed.ignored)))
        )
    conditions, params = sql.where(resource_type, parsed.clauses)
    where = " AND ".join(["r.resource_type = %s", "NOT r.deleted", *conditions])
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT r.resource_id FROM fhir_resource r WHERE {where}", [resource_type, *params])
        return {row[0] for row in cursor.fetchall()}
