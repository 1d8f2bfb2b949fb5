"""Search values parsed by their parameter's type (http://hl7.org/fhir/R4/search.html#ptypes),
so a malformed value (a bad date, an unknown prefix, a composite with the wrong number of
parts) fails with 400 before any SQL is built. Comma-separated values are ORed; `\\,` and `\\$`
stand for a literal comma and dollar sign (search.html#escaping).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from fhirserver import errors
from fhirserver.registry import SearchParameterDefinition, r4
from fhirserver.search.dates import parse_range
from fhirserver.search.index_values import precision_range

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
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


@dataclass(frozen=True)
class CompositeValue:
    """`a$b` (search.html#composite): one value per component, each parsed by its own type;
    `components` are the component parameters' definitions, in order."""

    components: tuple[SearchParameterDefinition, ...]
    values: tuple


@dataclass(frozen=True)
class NearValue:
    """`near=latitude|longitude|distance|units` (search.html#special), distance in km."""

    latitude: Decimal
    longitude: Decimal
    kilometres: Decimal


def parse(parameter: SearchParameterDefinition, modifier: str, raw: str, name: str) -> list:
    """The ORed values of one parameter occurrence (not :missing)."""
    if parameter.type == "composite":
        return [_composite(parameter, value, name) for value in _split(raw, ",")]
    parse_one = _PARSERS[parameter.type]
    return [parse_one(value, name, modifier) for value in split_values(raw)]


def split_values(raw: str) -> list[str]:
    """Split on commas not escaped as `\\,` (search.html#escaping), unescaping the rest."""
    return [unescape(part) for part in _split(raw, ",")]


def _split(raw: str, separator: str) -> list[str]:
    """Split on `separator` where it is not escaped, keeping every escape as it is."""
    parts, current, escaped = [], [], False
    for char in raw:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _composite(parameter: SearchParameterDefinition, raw: str, name: str) -> CompositeValue:
    """One `a$b` value; `$` escaped as `\\$` belongs to a component (search.html#escaping)."""
    parts = _split(raw, "$")
    definitions = r4().components(parameter)
    if len(parts) != len(definitions):
        raise errors.bad_request(f"{name} needs {len(definitions)} values separated by $")
    values = tuple(
        _PARSERS[definition.type](unescape(part), name, "")
        for definition, part in zip(definitions, parts, strict=True)
    )
    return CompositeValue(definitions, values)


# UCUM codes of the distance units `near` accepts, in km (search.html#special: km by default).
_DISTANCE_UNITS = {
    "km": Decimal(1),
    "m": Decimal("0.001"),
    "[mi_i]": Decimal("1.609344"),
    "mi": Decimal("1.609344"),
}
DEFAULT_NEAR_KM = Decimal(10)


def _near(value: str, name: str, modifier: str) -> NearValue:
    parts = value.split("|")
    if not 2 <= len(parts) <= 4:
        raise errors.bad_request(f"{name} needs latitude|longitude[|distance[|units]]")
    latitude, _, _ = decimal_range(parts[0], name)
    longitude, _, _ = decimal_range(parts[1], name)
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        raise errors.bad_request(f"{name}: latitude or longitude out of range")
    distance = decimal_range(parts[2], name)[0] if len(parts) > 2 and parts[2] else DEFAULT_NEAR_KM
    unit = parts[3] if len(parts) > 3 and parts[3] else "km"
    if unit not in _DISTANCE_UNITS or distance < 0:
        raise errors.bad_request(f"{name}: distance must be positive, in km, m or [mi_i]")
    return NearValue(latitude, longitude, distance * _DISTANCE_UNITS[unit])


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


def _reference(value: str, name: str, modifier: str) -> ReferenceValue | TokenValue:
    if modifier == "identifier":  # Reference.identifier, a token (search.html#reference)
        return _token(value, name, "")
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
    "special": _near,
}
