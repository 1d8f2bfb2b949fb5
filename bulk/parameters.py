"""Kick-off parameters of $export (Bulk Data IG 2.0, "Query Parameters"), from the query string or
a POSTed Parameters resource, checked before a job is queued: every error is the kick-off's 4xx,
never a failed job later."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from django.http import HttpRequest

from bulk.selection import exportable, parse_type_filter
from fhirserver import errors
from fhirserver.api.negotiation import parse_body
from fhirserver.operations import parameters
from fhirserver.registry import r4
from fhirserver.search.dates import parse_range

# "_outputFormat ... Servers SHALL support Newline Delimited JSON with a format type of
# application/fhir+ndjson and SHOULD accept application/ndjson and ndjson" (IG, Query Parameters).
OUTPUT_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
SUPPORTED = frozenset({"_outputFormat", "_since", "_type", "_typeFilter"})
# Named by the IG, not supported here: ignored with a note, or 400 under handling=strict.
# (_format and _pretty shape responses and are no export parameters.)
_NOT_PARAMETERS = frozenset({"_format", "_pretty"})
# _typeFilter values may be comma-separated (IG 2.0): split before each `Type?`.
_FILTER_SPLIT = re.compile(r",(?=[A-Z][A-Za-z]+\?)")


@dataclass
class KickOff:
    types: list[str]
    explicit_types: bool
    since: datetime | None
    type_filters: dict[str, list[str]]
    notes: list[str] = field(default_factory=list)


def pairs_of(request: HttpRequest) -> list[tuple[str, str]]:
    """The kick-off parameters: the query string, plus a Parameters body for POST (IG 2.0
    permits POST kick-off with a Parameters resource)."""
    pairs = [(key, value) for key, values in request.GET.lists() for value in values]
    if request.method == "POST" and request.body:
        body = parse_body(request)
        if not parameters.is_parameters(body):
            raise errors.bad_request("The body of POST $export must be a Parameters resource")
        for parameter in body.get("parameter", []):
            value = _primitive(parameter) if isinstance(parameter, dict) else None
            if value is None or "name" not in parameter:
                raise errors.bad_request("Each $export parameter needs a name and a primitive value[x]")
            pairs.append((parameter["name"], value))
    return pairs


def _primitive(parameter: dict) -> str | None:
    for key, value in parameter.items():
        if key.startswith("value") and isinstance(value, str):
            return value
    return None


def parse(level: str, pairs: list[tuple[str, str]], strict: bool) -> KickOff:
    unsupported = sorted({name for name, _ in pairs if name not in SUPPORTED | _NOT_PARAMETERS})
    if unsupported and strict:
        raise errors.not_supported(f"Unsupported $export parameters: {', '.join(unsupported)}")
    notes = [f"Parameter {name} is not supported and was ignored" for name in unsupported]
    for name, value in pairs:
        if name == "_outputFormat" and value not in OUTPUT_FORMATS:
            raise errors.not_supported(f"_outputFormat {value} is not supported; use application/fhir+ndjson")
    types, explicit = _types(level, [value for name, value in pairs if name == "_type"], strict, notes)
    since_values = [value for name, value in pairs if name == "_since"]
    if len(since_values) > 1:
        raise errors.bad_request("_since may be given once")
    since = parse_range(since_values[0], "_since")[0] if since_values else None
    filters = _filters([value for name, value in pairs if name == "_typeFilter"], types, notes)
    return KickOff(types, explicit, since, filters, notes)


def _types(level: str, values: list[str], strict: bool, notes: list[str]) -> tuple[list[str], bool]:
    names = sorted({name.strip() for value in values for name in value.split(",")} - {""})
    if not names:
        return exportable(level), False
    unknown = [name for name in names if not r4().is_resource_type(name)]
    if unknown:
        raise errors.bad_request(f"_type names unknown resource types: {', '.join(unknown)}")
    allowed = set(exportable(level))
    outside = [name for name in names if name not in allowed]
    if outside and strict:
        raise errors.not_supported(f"Not in the Patient compartment: {', '.join(outside)}")
    notes += [f"{name} is not in the Patient compartment and was left out" for name in outside]
    return [name for name in names if name in allowed], True


def _filters(values: list[str], types: list[str], notes: list[str]) -> dict[str, list[str]]:
    """type -> its filters' query strings, each compiled once here so a bad one is a 400 now."""
    filters: dict[str, list[str]] = {}
    for value in values:
        for item in _FILTER_SPLIT.split(value):
            resource_type, mark, search = item.partition("?")
            if not mark or not r4().is_resource_type(resource_type):
                raise errors.bad_request("_typeFilter must be [type]?[search parameters]")
            if resource_type not in types:
                notes.append(f"_typeFilter for {resource_type}, a type not exported, was ignored")
                continue
            parse_type_filter(resource_type, search)
            filters.setdefault(resource_type, []).append(search)
    return filters
