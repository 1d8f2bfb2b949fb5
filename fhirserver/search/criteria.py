"""Search criteria of conditional interactions and conditional references
(http://hl7.org/fhir/R4/http.html#cond-update): `_id` and `identifier` (token) for now.

A criterion this module cannot evaluate is an error, never silently ignored: ignoring it
would make a conditional update or delete hit the wrong resources.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from django.db import connection

from fhirserver import errors
from fhirserver.search import tokens

SUPPORTED = ("_id", tokens.IDENTIFIER)
# Result-shaping parameters carry no criteria (http://hl7.org/fhir/R4/search.html#return).
IGNORED = frozenset({"_format", "_pretty", "_summary", "_elements", "_count", "_sort", "_total"})


def parse(query: str) -> list[tuple[str, str]]:
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in IGNORED]
    if not pairs:
        raise errors.precondition_failed("Conditional request has no search criteria")
    for name, _value in pairs:
        if name.split(":", 1)[0] not in SUPPORTED:
            raise errors.not_supported(
                f"Search parameter '{name}' is not supported in conditional requests (use _id or identifier)"
            )
        if ":" in name:
            raise errors.not_supported(f"Modifier on '{name}' is not supported in conditional requests")
    return pairs


def matching_ids(resource_type: str, query: str) -> set[str]:
    """Ids of current (not deleted) resources of that type meeting every criterion (AND);
    comma-separated values within one criterion are alternatives (OR)."""
    result: set[str] | None = None
    for name, value in parse(query):
        found: set[str] = set()
        for alternative in value.split(","):
            found |= _ids_for(resource_type, name, alternative)
        result = found if result is None else result & found
    return result or set()


def _ids_for(resource_type: str, name: str, value: str) -> set[str]:
    if name == "_id":
        return _existing(resource_type, {value})
    if "|" not in value:
        return tokens.find(resource_type, name, None, value, any_system=True)
    system, code = value.split("|", 1)
    if not code:
        raise errors.not_supported(f"'{name}={value}' (system only) is not supported in conditional requests")
    return tokens.find(resource_type, name, system or None, code, any_system=False)


def _existing(resource_type: str, ids: set[str]) -> set[str]:
    if not ids:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT resource_id FROM fhir_resource"
            " WHERE resource_type = %s AND resource_id = ANY(%s) AND NOT deleted",
            [resource_type, list(ids)],
        )
        return {row[0] for row in cursor.fetchall()}
