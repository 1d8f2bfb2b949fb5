"""Structural validation of FHIR R4 JSON resources, fast enough to run on every write.

Checks what http://hl7.org/fhir/R4/json.html and the R4 definitions say about shape: known
elements, cardinality, JSON types and regexes of primitive values (datatypes.html), one type per
choice element, primitive extensions (`_x`), and codes of required bindings. Invariants,
profiles, references and other terminology need more context and are left to other layers.

Each type's properties are compiled once from the registry into lookup tables, so a call is one
recursive walk over the JSON with a dict lookup per property. Diagnostics name elements and
expected types, never submitted values: those may be patient data and end up in logs.

Issue codes (http://hl7.org/fhir/R4/valueset-issue-type.html): "invalid" when the document is not
the expected resource at all, "structure" for JSON shape (unknown element, array/object/null
where not allowed, two types of one choice), "required" for a missing element, "value" for a
primitive of the wrong JSON type or format, "code-invalid" for a code outside a required binding.

Expressions follow the JSON: the resource type, then property names and array indexes
("Observation.valueQuantity.value", "Patient._birthDate.extension[0].url"); a nested resource
continues its container's ("Bundle.entry[3].resource.name[0]").
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

from fhirserver.narrative import narrative_problem
from fhirserver.registry import ElementDefinition, Registry, TypeDefinition, r4

MAX_ISSUES = 100
INT32_MAX = 2**31 - 1
STRING_MAX_BYTES = 1024 * 1024  # "Strings SHALL NOT exceed 1MB in size" (datatypes.html#string)


@dataclass(frozen=True)
class ValidationIssue:
    code: str
    expression: str
    diagnostics: str


def validate_resource(resource: object, expected_type: str | None = None) -> list[ValidationIssue]:
    """All structural problems of `resource` (up to MAX_ISSUES), or [] if there are none."""
    specs = _resource_specs()
    declared = resource.get("resourceType") if isinstance(resource, dict) else None
    known = declared if isinstance(declared, str) and declared in specs else None
    # Types only ever name R4 types in locations: unknown ones may be anything a client sent.
    expected = expected_type if expected_type in specs else None
    path = known or expected or "Resource"
    issues = _Issues()
    try:
        if known and expected_type is not None and known != expected_type:
            wanted = f"resourceType '{expected}'" if expected else "another resourceType"
            issues.add("invalid", f"{path}.resourceType", f"Expected {wanted}")
        _resource(resource, path, issues)
    except _TooManyIssues:
        pass
    except RecursionError:
        issues.append(ValidationIssue("structure", path, "Elements are nested too deeply"))
    return list(issues)


class _TooManyIssues(Exception):
    pass


class _Issues(list):
    def add(self, code: str, expression: str, diagnostics: str) -> None:
        self.append(ValidationIssue(code, expression, diagnostics))
        if len(self) >= MAX_ISSUES:
            raise _TooManyIssues


# Compiled definitions --------------------------------------------------------------------------

_PRIMITIVE, _EXTENSIONS, _COMPLEX, _RESOURCE, _RESOURCE_TYPE = range(5)


@dataclass(slots=True)
class _Field:
    kind: int
    type_code: str
    repeats: bool
    max: int | None
    choice: str | None  # element name shared by the choice's properties (value[x] -> "value")
    partner: str | None = None  # x <-> _x, whose arrays are aligned (json.html#primitive)
    check: Callable[[object], str | None] | None = None
    value_set: frozenset[str] | None = None
    allowed: str = ""
    spec: _Spec | None = None


@dataclass(slots=True)
class _Spec:
    fields: dict[str, _Field] = field(default_factory=dict)
    # (element as shown in expressions, the properties any of which satisfies it)
    required: tuple[tuple[str, tuple[str, ...]], ...] = ()


@cache
def _resource_specs() -> dict[str, _Spec]:
    registry = r4()
    specs = {name: _Spec() for name in registry.types}
    for definition in registry.types.values():
        _compile(registry, specs, definition)
    return {name: specs[name] for name in registry.resource_types}


def _compile(registry: Registry, specs: dict[str, _Spec], definition: TypeDefinition) -> None:
    spec = specs[definition.name]
    for key, (element, code) in definition.properties.items():
        spec.fields.update(_fields(registry, specs, definition.name, key, element, code))
    if definition.kind == "resource":
        spec.fields["resourceType"] = _Field(_RESOURCE_TYPE, "code", repeats=False, max=1, choice=None)
    spec.required = tuple(
        (element.name + "[x]" if element.choice else element.name, _keys_of(spec, definition, element))
        for element in definition.elements
        if element.min > 0
    )


def _fields(
    registry: Registry, specs: dict[str, _Spec], owner: str, key: str, element: ElementDefinition, code: str
) -> dict[str, _Field]:
    shape = {
        "repeats": element.repeats,
        "max": element.max,
        "choice": element.name if element.choice else None,
    }
    # Resource-typed elements (contained, Bundle.entry.resource, ...) hold a resource of any type.
    # R4 types Bundle.entry.response.outcome as Resource too, which the registry narrows to
    # OperationOutcome; either way the nested resource is checked against its own resourceType.
    if code == "Resource" or registry.is_resource_type(code):
        return {key: _Field(_RESOURCE, code, **shape)}
    if not registry.is_primitive(code):
        return {key: _Field(_COMPLEX, code, **shape, spec=specs[code])}
    value_set = registry.value_sets[element.value_set] if code == "code" and element.value_set else None
    fields = {key: _Field(_PRIMITIVE, code, **shape, check=_CHECKS[code], value_set=value_set)}
    if value_set is not None:
        fields[key].allowed = ", ".join(sorted(value_set)[:10]) + (", ..." if len(value_set) > 10 else "")
    # Element.id, Resource.id and Extension.url are System.String, and xhtml allows no
    # extensions: none of them has an Element to carry a `_x` companion.
    if key != "id" and code != "xhtml" and (owner, key) != ("Extension", "url"):
        fields[key].partner = "_" + key
        fields["_" + key] = _Field(_EXTENSIONS, code, **shape, partner=key, spec=specs["Element"])
    return fields


def _keys_of(spec: _Spec, definition: TypeDefinition, element: ElementDefinition) -> tuple[str, ...]:
    """The properties that carry `element`: one per choice type, and `_x` companions."""
    keys = [key for key, (owner, _) in definition.properties.items() if owner is element]
    return tuple(keys + [f"_{key}" for key in keys if f"_{key}" in spec.fields])


# Primitive values (http://hl7.org/fhir/R4/datatypes.html#primitive) ----------------------------

# The spec's regexes are XML Schema ones, whose \s is only space, tab, CR and LF.
_YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
_ZONE = r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
_NOT_SPACE = r"[^ \t\r\n]"
_FORMATS = {
    "date": _YEAR + r"(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?",
    "dateTime": _YEAR + rf"(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])(T{_TIME}{_ZONE})?)?)?",
    "instant": _YEAR + rf"-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])T{_TIME}{_ZONE}",
    "time": _TIME,
    "id": r"[A-Za-z0-9\-.]{1,64}",
    "code": rf"{_NOT_SPACE}+([ \t\r\n]{_NOT_SPACE}+)*",
    "uri": _NOT_SPACE + "+",
    "url": _NOT_SPACE + "+",
    "canonical": _NOT_SPACE + "+",
    "oid": r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+",
    "uuid": r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    "markdown": None,
}


def _text(type_code: str, pattern: str | None) -> Callable[[object], str | None]:
    # Non-capturing groups: the spec's patterns, twice as fast to match.
    matches = re.compile(pattern.replace("(", "(?:")).fullmatch if pattern else None

    def check(value: object) -> str | None:
        if type(value) is not str:
            return f"expected {type_code} (a JSON string)"
        if not value:
            return "empty strings are not allowed"  # json.html: empty values are not allowed
        if matches is not None and matches(value) is None:
            return f"not a valid {type_code}"
        return None

    return check


def _string(value: object) -> str | None:
    if type(value) is not str:
        return "expected string (a JSON string)"
    if not value:
        return "empty strings are not allowed"
    # Only long strings can be over the limit; encoding is the costly part.
    if len(value) * 4 > STRING_MAX_BYTES and len(value.encode("utf-8", "surrogatepass")) > STRING_MAX_BYTES:
        return "exceeds 1 MiB"
    return None


_BASE64_CHARACTERS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \t\r\n"


def _base64(value: object) -> str | None:
    """R4's regex is quartets of [0-9a-zA-Z+=] (it forgot '/') with whitespace between them.

    Checked without a regex: the spec's backtracks exponentially on long MIME-wrapped data.
    """
    if type(value) is not str:
        return "expected base64Binary (a JSON string)"
    if not value:
        return "empty strings are not allowed"
    if not value.isascii() or value.encode().translate(None, _BASE64_CHARACTERS):
        return "not a valid base64Binary"
    # Only the alphabet and XML whitespace are left, so str.split() splits where the regex would.
    chunks = value.split()
    if not chunks or any(len(chunk) % 4 for chunk in chunks):
        return "not a valid base64Binary"
    return None


def _integer(type_code: str, low: int) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        if type(value) is not int:  # excludes bool, and floats such as 1.0
            return f"expected {type_code} (a JSON integer)"
        if not low <= value <= INT32_MAX:
            return f"{type_code} must be between {low} and {INT32_MAX}"
        return None

    return check


def _decimal(value: object) -> str | None:
    if type(value) is int or (type(value) is float and math.isfinite(value)):
        return None
    return "expected decimal (a JSON number)"


def _boolean(value: object) -> str | None:
    return None if type(value) is bool else "expected boolean (true or false)"


def _xhtml(value: object) -> str | None:
    """Narrative XHTML: a string, then the R4 allow-list (fhirserver.narrative: no active content)."""
    if type(value) is not str:
        return "expected xhtml (a JSON string)"
    return narrative_problem(value)


_CHECKS: dict[str, Callable[[object], str | None]] = {
    "boolean": _boolean,
    "decimal": _decimal,
    "integer": _integer("integer", -INT32_MAX - 1),
    "unsignedInt": _integer("unsignedInt", 0),
    "positiveInt": _integer("positiveInt", 1),
    "string": _string,
    "base64Binary": _base64,
    "xhtml": _xhtml,
    **{type_code: _text(type_code, pattern) for type_code, pattern in _FORMATS.items()},
}


# The walk ----------------------------------------------------------------------------------------


def _resource(resource: object, path: str, issues: _Issues) -> None:
    if not isinstance(resource, dict):
        issues.add("invalid", path, "A resource must be a JSON object")
        return
    resource_type = resource.get("resourceType")
    spec = _resource_specs().get(resource_type) if isinstance(resource_type, str) else None
    if spec is None:
        issues.add("invalid", f"{path}.resourceType", "resourceType must name an R4 resource type")
        return
    _object(resource, spec, path, issues)


def _object(obj: dict, spec: _Spec, path: str, issues: _Issues) -> None:
    fields = spec.fields
    chosen: dict[str, str] | None = None
    for key, value in obj.items():
        found = fields.get(key)
        if found is None:
            if key != "fhir_comments":  # comments of older JSON, still written by some tools
                shown = _shown(key)
                issues.add("structure", f"{path}.{shown}", f"Unknown element '{shown}'")
            continue
        if found.choice is not None:
            chosen = _choose(chosen, found, path, issues)
        if value is None:
            issues.add("structure", f"{path}.{key}", f"Element '{key}' must not be null")
        elif found.repeats:
            _array(obj, key, value, found, path, issues)
        elif isinstance(value, list):
            issues.add("structure", f"{path}.{key}", f"Element '{key}' must not be an array")
        else:
            _value(key, None, value, found, path, issues)
    for name, keys in spec.required:
        if obj.keys().isdisjoint(keys):
            issues.add("required", f"{path}.{name}", f"Missing required element '{name}'")


def _choose(chosen: dict[str, str] | None, found: _Field, path: str, issues: _Issues) -> dict[str, str]:
    """Records a choice element's type; a second type is an error (json.html#choice)."""
    chosen = chosen if chosen is not None else {}
    if chosen.setdefault(found.choice, found.type_code) != found.type_code:
        name = f"{found.choice}[x]"
        issues.add("structure", f"{path}.{name}", f"Only one type of '{name}' may be present")
    return chosen


def _array(obj: dict, key: str, values: object, found: _Field, path: str, issues: _Issues) -> None:
    if not isinstance(values, list):
        issues.add("structure", f"{path}.{key}", f"Element '{key}' must be an array")
        return
    if not values:
        issues.add("structure", f"{path}.{key}", f"Element '{key}' must not be an empty array")
        return
    if found.max is not None and len(values) > found.max:
        issues.add("structure", f"{path}.{key}", f"Element '{key}' allows at most {found.max} items")
    partner = obj.get(found.partner) if found.partner is not None else None
    aligned = partner if isinstance(partner, list) else ()
    for index, value in enumerate(values):
        if value is not None:
            _value(key, index, value, found, path, issues)
        elif index >= len(aligned) or aligned[index] is None:
            # A null only holds the place of a value or extension in the partner array.
            message = f"'{key}' may be null only where '{found.partner}' is not"
            issues.add("structure", f"{path}.{key}[{index}]", message)
    if found.kind == _EXTENSIONS and aligned and len(aligned) != len(values):
        issues.add("structure", f"{path}.{key}", f"'{key}' must have as many items as '{found.partner}'")


def _value(key: str, index: int | None, value: object, found: _Field, path: str, issues: _Issues) -> None:
    """One value of property `key` (item `index` of its array); locations are built lazily."""
    kind = found.kind
    if kind == _PRIMITIVE:
        problem = found.check(value)
        if problem is not None:
            issues.add("value", _at(path, key, index), f"Element '{key}': {problem}")
        elif found.value_set is not None and value not in found.value_set:
            issues.add(
                "code-invalid", _at(path, key, index), f"Element '{key}' must be one of: {found.allowed}"
            )
    elif kind == _RESOURCE_TYPE:
        return  # checked by _resource before its properties
    elif not isinstance(value, dict):
        message = f"Element '{key}': expected {found.type_code} (a JSON object)"
        issues.add("structure", _at(path, key, index), message)
    elif not value:
        issues.add("structure", _at(path, key, index), f"Element '{key}' must not be an empty object")
    elif kind == _RESOURCE:
        _resource(value, _at(path, key, index), issues)
    else:
        _object(value, found.spec, _at(path, key, index), issues)


def _at(path: str, key: str, index: int | None) -> str:
    return f"{path}.{key}" if index is None else f"{path}.{key}[{index}]"


def _shown(key: object) -> str:
    """An unknown property's name, cut short: the name itself is all a client needs."""
    name = str(key)
    return name if len(name) <= 64 else name[:61] + "..."
