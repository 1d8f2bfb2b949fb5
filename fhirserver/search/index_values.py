"""Index rows and how each FHIR value becomes rows of its search parameter's type, following
the per-type rules of http://hl7.org/fhir/R4/search.html (token, string, date, number,
quantity, reference, uri). extraction.py decides which values each parameter yields; this
module only converts them.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any

from fhirserver import errors
from fhirserver.search.dates import parse_range
from fhirserver.search.expressions import parse_reference

# Open Period ends (http://hl7.org/fhir/R4/search.html#date: a missing bound is unbounded).
EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, tzinfo=UTC)
ISO_4217 = "urn:iso:std:iso:4217"
_SECOND = timedelta(seconds=1)
_MICROSECOND = timedelta(microseconds=1)


@dataclass
class IndexRows:
    """Rows per index table, each led by the parameter code. Dates are [start, end) in UTC;
    numbers and quantities carry their implicit precision range [low, high)."""

    tokens: list[tuple[str, str | None, str, str | None]] = field(default_factory=list)
    # Identifier.type codings, for the token :of-type modifier: (param, type system, type code, value)
    identifier_types: list[tuple[str, str | None, str, str]] = field(default_factory=list)
    strings: list[tuple[str, str, str]] = field(default_factory=list)
    dates: list[tuple[str, datetime, datetime]] = field(default_factory=list)
    numbers: list[tuple[str, Decimal, Decimal, Decimal]] = field(default_factory=list)
    quantities: list[tuple[str, Decimal, Decimal, Decimal, str | None, str | None, str | None]] = field(
        default_factory=list
    )
    references: list[tuple[str, str | None, str | None, str | None]] = field(default_factory=list)
    uris: list[tuple[str, str]] = field(default_factory=list)
    # Digests standing in for the values of parameters over encrypted elements (search/blind.py)
    blinds: list[tuple[str, bytes]] = field(default_factory=list)
    # Full-text documents (param `_text` or `_content`, text), search/fulltext.py
    texts: list[tuple[str, str]] = field(default_factory=list)
    # Rows of composite groups: (kind, group number, row of that kind led by `code#i`)
    components: list[tuple[str, int, tuple]] = field(default_factory=list)

    def deduplicate(self) -> None:
        for name in _ROW_LISTS:
            rows = getattr(self, name)
            if len(rows) > 1:
                setattr(self, name, list(dict.fromkeys(rows)))

    def count(self) -> int:
        return sum(len(getattr(self, kind)) for kind in VALUE_KINDS)


_ROW_LISTS = tuple(row_list.name for row_list in fields(IndexRows))
VALUE_KINDS = tuple(
    name for name in _ROW_LISTS if name not in ("components", "identifier_types", "blinds", "texts")
)


Converter = Callable[[str, Any, IndexRows], None]


def normalize(text: str) -> str:
    """String search form (http://hl7.org/fhir/R4/search.html#string: case and accent
    insensitive): lowercase, combining marks dropped, whitespace collapsed."""
    text = text.lower()  # first: lowercasing can itself decompose (İ -> i + combining dot)
    if not text.isascii():
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return " ".join(text.split())


# --- token (http://hl7.org/fhir/R4/search.html#token) ---


def _token_primitive(code: str, value: Any, rows: IndexRows) -> None:
    if isinstance(value, str) and value:
        rows.tokens.append((code, None, value, None))


def _token_boolean(code: str, value: Any, rows: IndexRows) -> None:
    if isinstance(value, bool):
        rows.tokens.append((code, None, "true" if value else "false", None))


def _token_coding(code: str, coding: dict, rows: IndexRows, text: str | None = None) -> None:
    value = coding.get("code")
    if isinstance(value, str) and value:
        rows.tokens.append((code, coding.get("system"), value, coding.get("display") or text))


def _token_codeable_concept(code: str, concept: dict, rows: IndexRows) -> None:
    # CodeableConcept.text rides on each coding's row for :text; a row needs a code.
    for coding in concept.get("coding", ()):
        _token_coding(code, coding, rows, concept.get("text"))


def _token_identifier(code: str, identifier: dict, rows: IndexRows) -> None:
    value = identifier.get("value")
    if not isinstance(value, str) or not value:
        return
    identifier_type = identifier.get("type") or {}
    rows.tokens.append((code, identifier.get("system"), value, identifier_type.get("text")))
    for coding in identifier_type.get("coding", ()):
        if coding.get("code"):
            rows.identifier_types.append((code, coding.get("system"), coding["code"], value))


def _token_contact_point(code: str, contact: dict, rows: IndexRows) -> None:
    _token_primitive(code, contact.get("value"), rows)


# --- string (http://hl7.org/fhir/R4/search.html#string) ---

_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


def _string(code: str, value: Any, rows: IndexRows) -> None:
    if isinstance(value, str) and value.strip():
        rows.strings.append((code, normalize(value), value))


def _string_parts(parts: tuple[str, ...]) -> Converter:
    """One row per part of a HumanName or Address (each given name, each address line)."""

    def convert(code: str, value: dict, rows: IndexRows) -> None:
        for part in parts:
            found = value.get(part)
            for text in found if isinstance(found, list) else (found,):
                _string(code, text, rows)

    return convert


# --- date (http://hl7.org/fhir/R4/search.html#date) ---


def _date_range(value: Any) -> tuple[datetime, datetime] | None:
    """[start, end) in UTC of a date, dateTime or instant; values without a zone are UTC."""
    if not isinstance(value, str):
        return None
    try:
        if len(value) >= 19 and value[10] == "T" and value[16] == ":":
            # Stored dateTimes and instants have seconds (http://hl7.org/fhir/R4/datatypes.html#dateTime):
            # the C parser is several times faster than the general partial-date one.
            start = datetime.fromisoformat(value)
            start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
            return start, start + (_MICROSECOND if value[19:20] == "." else _SECOND)
        start, end = parse_range(value, "date")
        return start.astimezone(UTC), end.astimezone(UTC)
    except (ValueError, errors.FhirError, OverflowError):
        return None  # validation rejects such values; one must not stop indexing the rest


def _date(code: str, value: Any, rows: IndexRows) -> None:
    found = _date_range(value)
    if found:
        rows.dates.append((code, *found))


def _date_period(code: str, period: dict, rows: IndexRows) -> None:
    start, end = _date_range(period.get("start")), _date_range(period.get("end"))
    if start or end:
        rows.dates.append((code, start[0] if start else EARLIEST, end[1] if end else LATEST))


def _date_timing(code: str, timing: dict, rows: IndexRows) -> None:
    for event in timing.get("event", ()):
        _date(code, event, rows)
    bounds = (timing.get("repeat") or {}).get("boundsPeriod")
    if isinstance(bounds, dict):
        _date_period(code, bounds, rows)


# --- number and quantity (http://hl7.org/fhir/R4/search.html#number, #quantity) ---


def _decimal(value: Any) -> Decimal | None:
    """The number as written: JSON floats through repr keep their decimal digits (1.50 parses
    to 1.5, so that precision is lost already)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | Decimal):
        return Decimal(value)
    return Decimal(repr(value)) if isinstance(value, float) else None


def precision_range(value: Decimal) -> tuple[Decimal, Decimal]:
    """Implicit precision (search.html#number): 100 means [99.5, 100.5), 1.50 [1.495, 1.505)."""
    half = _half_unit(int(value.as_tuple().exponent))  # JSON numbers are finite
    return value - half, value + half


@cache
def _half_unit(exponent: int) -> Decimal:
    return Decimal(5).scaleb(exponent - 1)


def _number(code: str, value: Any, rows: IndexRows) -> None:
    number = _decimal(value)
    if number is not None:
        rows.numbers.append((code, number, *precision_range(number)))


def _range_bounds(range_value: dict) -> tuple[Decimal, Decimal, Decimal, dict] | None:
    """(low value, low bound, high bound, low quantity) of a Range with both ends. The row's value
    is its low end; an open-ended Range has no finite bounds to store and is not indexed."""
    low, high = range_value.get("low") or {}, range_value.get("high") or {}
    low_value, high_value = _decimal(low.get("value")), _decimal(high.get("value"))
    if low_value is None or high_value is None:
        return None
    return low_value, precision_range(low_value)[0], precision_range(high_value)[1], low


def _number_range(code: str, value: dict, rows: IndexRows) -> None:
    bounds = _range_bounds(value)
    if bounds:
        rows.numbers.append((code, *bounds[:3]))


def _quantity(code: str, quantity: dict, rows: IndexRows) -> None:
    value = _decimal(quantity.get("value"))
    if value is not None:
        rows.quantities.append(
            (
                code,
                value,
                *precision_range(value),
                quantity.get("system"),
                quantity.get("code"),
                quantity.get("unit"),
            )
        )


def _quantity_money(code: str, money: dict, rows: IndexRows) -> None:
    value = _decimal(money.get("value"))
    if value is not None:
        rows.quantities.append((code, value, *precision_range(value), ISO_4217, money.get("currency"), None))


def _quantity_range(code: str, value: dict, rows: IndexRows) -> None:
    bounds = _range_bounds(value)
    if bounds:
        low = bounds[3]
        rows.quantities.append((code, *bounds[:3], low.get("system"), low.get("code"), low.get("unit")))


# --- reference (http://hl7.org/fhir/R4/search.html#reference) and uri ---


def _reference(code: str, reference: dict, rows: IndexRows) -> None:
    identifier = reference.get("identifier")
    if isinstance(identifier, dict) and isinstance(identifier.get("value"), str) and identifier["value"]:
        # For `code:identifier=system|value` (search.html#reference), as a token row.
        rows.tokens.append((f"{code}:identifier", identifier.get("system"), identifier["value"], None))
    target = reference.get("reference")
    if not isinstance(target, str) or not target or target.startswith("#"):
        return  # contained resources are searched through their container, not indexed here
    parts = parse_reference(target)
    absolute = ":" in target  # http(s)://, urn:uuid:, urn:oid:
    if parts and not absolute:
        rows.references.append((code, *parts, None))
    else:
        rows.references.append((code, *(parts or (None, None)), target))


def _reference_canonical(code: str, url: Any, rows: IndexRows) -> None:
    """A canonical or uri: by URL, without and with its |version, and by Type/id when it ends so."""
    if not isinstance(url, str) or not url:
        return
    unversioned = url.split("|", 1)[0]
    parts = parse_reference(unversioned) or (None, None)
    rows.references.append((code, *parts, unversioned))
    if unversioned != url:
        rows.references.append((code, *parts, url))


def _reference_resource(code: str, resource: dict, rows: IndexRows) -> None:
    # Bundle.entry[0].resource (composition, message): the embedded resource's own identity.
    if isinstance(resource.get("id"), str) and isinstance(resource.get("resourceType"), str):
        rows.references.append((code, resource["resourceType"], resource["id"], None))


def _uri(code: str, value: Any, rows: IndexRows) -> None:
    if isinstance(value, str) and value:
        rows.uris.append((code, value))


def _skip(_code: str, _value: Any, _rows: IndexRows) -> None:
    """A type the parameter's choice element allows but its parameter type has no rule for."""


# Parameter type -> FHIR type of a value -> how it becomes rows.
CONVERTERS: dict[str, dict[str, Converter]] = {
    "token": {
        **dict.fromkeys(("code", "string", "uri", "id"), _token_primitive),
        "boolean": _token_boolean,
        "Coding": _token_coding,
        "CodeableConcept": _token_codeable_concept,
        "Identifier": _token_identifier,
        "ContactPoint": _token_contact_point,
    },
    "string": {
        "string": _string,
        "markdown": _string,
        "HumanName": _string_parts(_NAME_PARTS),
        "Address": _string_parts(_ADDRESS_PARTS),
    },
    "date": {
        **dict.fromkeys(("date", "dateTime", "instant"), _date),
        "Period": _date_period,
        "Timing": _date_timing,
        # Procedure.performedString/Age/Range, CarePlan...scheduledString: not points in time.
        **dict.fromkeys(("string", "Age", "Range"), _skip),
    },
    "number": {
        **dict.fromkeys(("integer", "decimal", "positiveInt", "unsignedInt"), _number),
        "Range": _number_range,
    },
    "quantity": {
        **dict.fromkeys(("Quantity", "Age", "Duration", "Count", "Distance"), _quantity),
        "Money": _quantity_money,
        "Range": _quantity_range,
        "SampledData": _skip,  # a series of measurements, not one quantity
    },
    "reference": {
        "Reference": _reference,
        "canonical": _reference_canonical,
        "uri": _reference_canonical,
        "Resource": _reference_resource,
        "Attachment": _skip,  # Consent.sourceAttachment: a document, not a reference
    },
    "uri": dict.fromkeys(("uri", "url", "canonical", "oid", "uuid"), _uri),
}
