"""_include and _revinclude (http://hl7.org/fhir/R4/search.html#include), with :iterate.

Both follow the reference index: _include takes the targets of a page's references,
_revinclude the resources whose references point at the page. Included resources are
returned once each, after the matches, with search.mode = include.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import connection

from fhirserver import errors
from fhirserver.registry import r4
from fhirserver.search.query import parameters_for

MAX_ITERATIONS = 4  # :iterate depth; cycles stop earlier, as nothing new is found


@dataclass(frozen=True)
class IncludeSpec:
    source_type: str  # the type whose reference parameter is followed
    param: str | None  # None for *
    target_type: str | None
    reverse: bool
    iterate: bool


def parse_includes(pairs: list[tuple[str, str]]) -> list[IncludeSpec]:
    specs = []
    for name, value in pairs:
        base, _, modifier = name.partition(":")
        if base not in ("_include", "_revinclude"):
            continue
        if modifier not in ("", "iterate", "recurse"):
            raise errors.bad_request(f"{name}: unknown modifier")
        specs.append(_spec(value, reverse=base == "_revinclude", iterate=bool(modifier), name=name))
    return specs


def _spec(value: str, reverse: bool, iterate: bool, name: str) -> IncludeSpec:
    parts = value.split(":")
    if len(parts) not in (2, 3) or not r4().is_resource_type(parts[0]):
        raise errors.bad_request(f"{name} must be Type:parameter[:TargetType] or Type:*")
    source_type, param = parts[0], parts[1]
    target_type = parts[2] if len(parts) == 3 else None
    if target_type is not None and not r4().is_resource_type(target_type):
        raise errors.bad_request(f"{name}: unknown target type '{target_type}'")
    if param != "*":
        definition = parameters_for(source_type).get(param)
        if definition is None or definition.type != "reference":
            raise errors.bad_request(f"{name}: '{param}' is not a reference parameter of {source_type}")
    return IncludeSpec(source_type, None if param == "*" else param, target_type, reverse, iterate)


Row = tuple[str, str, str]  # (type, id, content)


def included(
    specs: list[IncludeSpec], matches: list[tuple[str, str]], visible: Callable[[list[Row]], list[Row]]
) -> list[Row]:
    """(type, id, content) of every resource the specs bring in for the matched (type, id)s.
    `visible` keeps those the caller may see, at each step, so that :iterate never follows
    references out of what it may not see."""
    seen = set(matches)
    found: list[tuple[str, str, str]] = []
    frontier = list(matches)
    for iteration in range(MAX_ITERATIONS):
        active = [s for s in specs if iteration == 0 or s.iterate]
        new = []
        for spec in active:
            for row in visible(_follow(spec, frontier)):
                if (row[0], row[1]) not in seen and len(found) < settings.FHIR_MAX_INCLUDES:
                    seen.add((row[0], row[1]))
                    found.append(row)
                    new.append((row[0], row[1]))
        if not new:
            break
        frontier = new
    return found


def _follow(spec: IncludeSpec, frontier: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    if spec.reverse:
        # Resources of source_type whose `param` points at something in the frontier.
        targets = [(t, i) for t, i in frontier if spec.target_type in (None, t)]
        sql = (
            "SELECT DISTINCT r.resource_type, r.resource_id, r.content FROM fhir_index_reference ref"
            " JOIN fhir_resource r ON r.resource_type = ref.resource_type AND r.resource_id = ref.resource_id"
            " WHERE ref.resource_type = %s AND (ref.target_type, ref.target_id) IN"
            " (SELECT * FROM unnest(%s::text[], %s::text[])) AND NOT r.deleted"
        )
        params = [spec.source_type, [t for t, _ in targets], [i for _, i in targets]]
    else:
        # The targets of `param` references of frontier resources of source_type.
        sources = [i for t, i in frontier if t == spec.source_type]
        sql = (
            "SELECT DISTINCT r.resource_type, r.resource_id, r.content FROM fhir_index_reference ref"
            " JOIN fhir_resource r ON r.resource_type = ref.target_type AND r.resource_id = ref.target_id"
            " WHERE ref.resource_type = %s AND ref.resource_id = ANY(%s) AND NOT r.deleted"
        )
        params = [spec.source_type, sources]
        if spec.target_type:
            sql += " AND ref.target_type = %s"
            params.append(spec.target_type)
    if spec.param:
        sql += " AND ref.param = %s"
        params.append(spec.param)
    if not params[1]:
        return []
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()
