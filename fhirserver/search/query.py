"""Parsing a FHIR search request into typed clauses (http://hl7.org/fhir/R4/search.html).

A clause is one parameter occurrence: repeated parameters are ANDed, comma-separated values
within one are ORed. Values are parsed by the parameter's type here, so malformed values
(a bad date, an unknown prefix) fail with 400 before any SQL is built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import cache

from fhirserver import errors
from fhirserver.registry import SearchParameterDefinition, r4
from fhirserver.search.dates import parse_range
from fhirserver.search.extraction import precision_range

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
MODIFIERS = {
    "string": {"exact", "contains", "missing"},
    "token": {"not", "text", "of-type", "missing", "in", "not-in", "below", "above"},
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "reference": {"missing", "identifier"},  # plus :[Type]
    "uri": {"below", "above", "missing"},
}
# Result parameters (search.html#return) and paging: not criteria.
CONTROL = frozenset(
    {
        "_count",
        "_cursor",
        "_sort",
        "_total",
        "_summary",
        "_elements",
        "_include",
        "_revinclude",
        "_contained",
        "_containedType",
        "_format",
        "_pretty",
    }
)
_PREFIX = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb|ap)(?=[0-9+-])")


@dataclass(frozen=True)
class TokenValue:
    system: str | None
    code: str | None
    any_system: bool  # `code` alone, as opposed to `|code` (explicitly no system)


@dataclass(frozen=True)
class IdentifierTypeValue:
    """token:of-type: `type-system|type-code|value` (search.html#token)."""

    type_system: str | None
    type_code: str
    value: str


@dataclass(frozen=True)
class RangeValue:
    """A date, number or quantity value: prefix, the value and its implicit precision range."""

    prefix: str
    value: object
    low: object
    high: object
    system: str | None = None
    code: str | None = None


@dataclass(frozen=True)
class ReferenceValue:
    target_type: str | None
    target_id: str | None
    url: str | None


@dataclass
class Clause:
    parameter: SearchParameterDefinition
    modifier: str | None
    values: list  # parsed values, ORed
    raw: str = ""


@dataclass
class SearchQuery:
    resource_type: str
    clauses: list[Clause] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # unknown or unsupported parameter names


@cache
def parameters_for(resource_type: str) -> dict[str, SearchParameterDefinition]:
    """Search parameters of a type: its own and those defined on Resource/DomainResource."""
    found = {}
    for sp in r4().search_parameters:
        if resource_type in sp.base or "Resource" in sp.base or "DomainResource" in sp.base:
            found.setdefault(sp.code, sp)
    return found


def parse(resource_type: str, pairs: list[tuple[str, str]], supported_types: frozenset[str]) -> SearchQuery:
    query = SearchQuery(resource_type)
    known = parameters_for(resource_type)
    for name, raw in pairs:
        if name in CONTROL:
            continue
        code, _, modifier = name.partition(":")
        parameter = known.get(code)
        if (
            parameter is None
            or parameter.type not in supported_types
            or not _modifier_ok(parameter, modifier)
        ):
            query.ignored.append(name)
            continue
        query.clauses.append(
            Clause(parameter, modifier or None, _values(parameter, modifier, raw, name), raw)
        )
    return query


def _modifier_ok(parameter: SearchParameterDefinition, modifier: str) -> bool:
    if not modifier:
        return True
    if parameter.type == "reference" and r4().is_resource_type(modifier):
        return True
    return modifier in MODIFIERS.get(parameter.type, set())


def split_values(raw: str) -> list[str]:
    """Split on commas not escaped as `\\,` (search.html#escaping), unescaping the rest."""
    parts, current, escaped = [], [], False
    for char in raw:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _values(parameter: SearchParameterDefinition, modifier: str, raw: str, name: str) -> list:
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise errors.bad_request(f"{name} must be true or false")
        return [raw == "true"]
    parse_one = _PARSERS[parameter.type]
    return [parse_one(value, name, modifier) for value in split_values(raw)]


def _token(value: str, name: str, modifier: str) -> TokenValue | IdentifierTypeValue | str:
    if modifier == "text":
        return value
    if modifier == "of-type":
        parts = value.split("|")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise errors.bad_request(f"{name} needs type-system|type-code|value")
        return IdentifierTypeValue(parts[0] or None, parts[1], parts[2])
    if "|" not in value:
        return TokenValue(None, value, any_system=True)
    system, _, code = value.partition("|")
    return TokenValue(system or None, code or None, any_system=False)


def _string(value: str, name: str, modifier: str) -> str:
    return value


def _uri(value: str, name: str, modifier: str) -> str:
    return value


def _date(value: str, name: str, modifier: str) -> RangeValue:
    prefix, rest = _prefix(value)
    start, end = parse_range(rest, name)
    return RangeValue(prefix, start, start, end)


def _number(value: str, name: str, modifier: str) -> RangeValue:
    prefix, rest = _prefix(value)
    number, low, high = decimal_range(rest, name)
    return RangeValue(prefix, number, low, high)


def _quantity(value: str, name: str, modifier: str) -> RangeValue:
    prefix, rest = _prefix(value)
    number_text, _, unit = rest.partition("|")
    number, low, high = decimal_range(number_text, name)
    system, _, code = unit.partition("|") if "|" in unit else ("", "", unit)
    return RangeValue(prefix, number, low, high, system or None, code or None)


def _reference(value: str, name: str, modifier: str) -> ReferenceValue:
    if modifier == "identifier":
        raise errors.not_supported(f"{name}: the :identifier modifier is not supported")
    path = value.split("/_history/", 1)[0]
    if "://" in path or path.startswith("urn:"):
        parts = path.rstrip("/").split("/")
        if len(parts) >= 2 and r4().is_resource_type(parts[-2]):
            return ReferenceValue(parts[-2], parts[-1], path)
        return ReferenceValue(None, None, path)
    if "/" in path:
        target_type, _, target_id = path.partition("/")
        return ReferenceValue(target_type, target_id, None)
    return ReferenceValue(modifier or None, path, None)


def _prefix(value: str) -> tuple[str, str]:
    match = _PREFIX.match(value)
    if match:
        return match[1], value[2:]
    if value[:2].isalpha():
        raise errors.bad_request(f"Unknown search prefix '{value[:2]}' (use one of {', '.join(PREFIXES)})")
    return "eq", value


def decimal_range(text: str, name: str) -> tuple[Decimal, Decimal, Decimal]:
    """A number and its implicit precision range: 100 -> [99.5, 100.5) (search.html#number)."""
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise errors.bad_request(f"{name} needs a number") from None
    if not number.is_finite():
        raise errors.bad_request(f"{name} needs a finite number")
    return number, *precision_range(number)


_PARSERS = {
    "token": _token,
    "string": _string,
    "uri": _uri,
    "date": _date,
    "number": _number,
    "quantity": _quantity,
    "reference": _reference,
}
