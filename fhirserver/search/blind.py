"""Blind indexes: searching encrypted elements without storing their plaintext (issue 6).

A search parameter whose expression reads an encrypted element (settings.PHI_ENCRYPTED_ELEMENTS:
Patient `name`, `family`, `given`, `birthdate`, `identifier`, `telecom`, `email`, `phone`,
`address-postalcode`, ...) gets no rows in the plain index tables. Its values are stored
instead as keyed digests (keyring.blind_digest: HMAC-SHA256 under the tenant's index key) in
fhir_index_blind, one row per form a query can take:

- string: the exact text (`:exact`) and every prefix of the normalised text (lowercase, accents
  dropped; the empty one too, as `name=` matches any name), so FHIR's default starts-with match
  is one digest look-up (search.html#string);
- token: `system|code`, `code`, `|code` (no system) and `system|`; identifiers also
  `type-system|type-code|value` for `:of-type`;
- date: the year, year-month and full date it lies in, so `eq` at year, month or day precision
  matches exactly what the plaintext search would (a value is "eq" a query when it lies within it).

Every digest covers the parameter code too, so equal values of two parameters do not link.
What this leaks, and what it does not, is in docs/phi-encryption.md. Anything a digest cannot
answer (`:contains`, `:text`, date prefixes other than `eq`, sorting) is refused with 400
rather than answered wrongly.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import cache

from fhirserver import errors
from fhirserver.search.index_values import IndexRows, normalize
from fhirserver.search.query import Clause, parameters_for
from fhirserver.search.values import IdentifierTypeValue, RangeValue, TokenValue
from fhirserver.storage import keyring, phi

MAX_PREFIX = 64  # characters of normalised text given prefix digests; longer queries are refused
_PLAIN_KINDS = (
    "tokens",
    "identifier_types",
    "strings",
    "dates",
    "numbers",
    "quantities",
    "references",
    "uris",
)


@cache
def blind_parameters(resource_type: str) -> frozenset[str]:
    """Codes of the type's parameters that read an encrypted element."""
    elements = phi.encrypted_elements(resource_type)
    if not elements:
        return frozenset()
    reads = re.compile(rf"\b{resource_type}\.({'|'.join(map(re.escape, elements))})\b")
    return frozenset(
        code
        for code, parameter in parameters_for(resource_type).items()
        if parameter.expression and reads.search(parameter.expression)
    )


def is_blind(resource_type: str, code: str) -> bool:
    return code in blind_parameters(resource_type)


def _digest(code: str, form: str, value: str) -> bytes:
    return keyring.blind_digest(f"{code}\x1f{form}\x1f{value}")


def protect(resource_type: str, rows: IndexRows) -> IndexRows:
    """Replace the plain rows of blind parameters by their digests, in place."""
    blind = blind_parameters(resource_type)
    if not blind:
        return rows
    digests: list[tuple[str, bytes]] = []
    for kind in _PLAIN_KINDS:
        kept = []
        for row in getattr(rows, kind):
            if row[0] in blind:
                digests += [(row[0], _digest(row[0], form, value)) for form, value in _forms(kind, row[1:])]
            else:
                kept.append(row)
        setattr(rows, kind, kept)
    rows.blinds = list(dict.fromkeys(digests))
    return rows


def _forms(kind: str, values: tuple) -> list[tuple[str, str]]:
    """The (form, text) pairs a row is findable by; none for kinds no encrypted element yields."""
    if kind == "strings":
        normalized, original = values
        return [("exact", original)] + [
            ("prefix", normalized[:n]) for n in range(min(len(normalized), MAX_PREFIX) + 1)
        ]
    if kind == "tokens":
        system, code, _text = values
        forms = [("code", code)]
        forms += [("system|code", f"{system}|{code}"), ("system", system)] if system else [("|code", code)]
        return forms
    if kind == "identifier_types":
        type_system, type_code, value = values
        return [
            ("type|value", f"{type_code}|{value}"),
            ("typesystem|type|value", f"{type_system}|{type_code}|{value}"),
        ]
    if kind == "dates":
        return [("date", label) for label in _date_labels(*values)]
    return []


def _date_labels(start: datetime, end: datetime) -> list[str]:
    """The year, month and day a [start, end) period lies within, as far as it is that precise."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    labels = [f"{start:%Y}", f"{start:%Y-%m}", f"{start:%Y-%m-%d}"]
    if end - start <= timedelta(days=1) and (end - timedelta(microseconds=1)).date() == start.date():
        return labels
    midnight = start == datetime(start.year, start.month, start.day, tzinfo=UTC)
    if midnight and start.day == 1 and end == _next_month(start):
        return labels[:2]
    if midnight and (start.month, start.day) == (1, 1) and end == start.replace(year=start.year + 1):
        return labels[:1]
    return []


def _next_month(moment: datetime) -> datetime:
    return moment.replace(year=moment.year + moment.month // 12, month=moment.month % 12 + 1)


# ----- queries --------------------------------------------------------------------------------
def value_digest(clause: Clause, value: object) -> bytes:
    """The one digest that rows matching `value` of the clause carry; 400 for what has none."""
    code, modifier = clause.parameter.code, clause.modifier
    kind = clause.parameter.type
    if kind == "string" and modifier in (None, "exact"):
        if modifier == "exact":
            return _digest(code, "exact", value)
        text = normalize(value)
        if len(text) > MAX_PREFIX:
            raise _refusal(code, f"takes at most {MAX_PREFIX} characters")
        return _digest(code, "prefix", text)
    if isinstance(value, IdentifierTypeValue):
        if value.type_system:
            return _digest(
                code, "typesystem|type|value", f"{value.type_system}|{value.type_code}|{value.value}"
            )
        return _digest(code, "type|value", f"{value.type_code}|{value.value}")
    if isinstance(value, TokenValue):
        if value.any_system:
            return _digest(code, "code", value.code)
        if value.code is None:
            return _digest(code, "system", value.system)
        if value.system is None:
            return _digest(code, "|code", value.code)
        return _digest(code, "system|code", f"{value.system}|{value.code}")
    if isinstance(value, RangeValue) and kind == "date" and value.prefix == "eq":
        labels = _date_labels(value.low, value.high)
        if labels and (value.high - value.low) >= timedelta(days=1):
            return _digest(code, "date", labels[-1])
        raise _refusal(code, "takes a date of year, month or day precision")
    raise _refusal(code, "supports exact and starts-with matching only (no :contains, :text, ranges)")


def _refusal(code: str, detail: str) -> errors.FhirError:
    return errors.bad_request(
        f"Search parameter '{code}' reads encrypted data and {detail}", code="not-supported"
    )
