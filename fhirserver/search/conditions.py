"""The condition one search value puts on one index row `i`, per parameter type
(http://hl7.org/fhir/R4/search.html#ptypes): shared by plain clauses (sql.py) and by the
components of composite parameters (composite.py), which evaluate each component by its own
type's rules.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from fhirserver.search.index_values import normalize
from fhirserver.search.query import Clause
from fhirserver.search.values import IdentifierTypeValue, RangeValue, ReferenceValue, TokenValue

# Parameter type -> its index table
TABLES = {
    "token": "fhir_index_token",
    "string": "fhir_index_string",
    "date": "fhir_index_date",
    "number": "fhir_index_number",
    "quantity": "fhir_index_quantity",
    "reference": "fhir_index_reference",
    "uri": "fhir_index_uri",
}


def value_condition(clause: Clause, value: object) -> tuple[str, list]:
    kind = clause.parameter.type
    if kind == "token":
        return _token(clause.modifier, value)
    if kind == "string":
        return _string(clause.modifier, value)
    if kind == "uri":
        return _uri(clause.modifier, value)
    if kind == "reference" and clause.modifier == "identifier":
        return _token(None, value)
    if kind == "reference":
        return _reference(clause.modifier, value)
    if kind == "date":
        return _date(value)
    return _number(value, quantity=kind == "quantity")


def like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _token(modifier: str | None, value: object) -> tuple[str, list]:
    if modifier == "text":
        return "lower(i.text) LIKE %s", [like_prefix(normalize(value)) + "%"]
    if isinstance(value, IdentifierTypeValue):
        system = "i.type_system = %s" if value.type_system else "TRUE"
        params = [value.type_system] if value.type_system else []
        return f"{system} AND i.type_code = %s AND i.value = %s", [*params, value.type_code, value.value]
    assert isinstance(value, TokenValue)
    if value.any_system:
        return "i.code = %s", [value.code]
    if value.code is None:
        return "i.system = %s", [value.system]
    if value.system is None:
        return "i.system IS NULL AND i.code = %s", [value.code]
    return "i.system = %s AND i.code = %s", [value.system, value.code]


def _string(modifier: str | None, value: str) -> tuple[str, list]:
    if modifier == "exact":
        return "i.original = %s", [value]
    if modifier == "contains":
        return "i.normalized LIKE %s", ["%" + like_prefix(normalize(value)) + "%"]
    return "i.normalized LIKE %s", [like_prefix(normalize(value)) + "%"]


def _uri(modifier: str | None, value: str) -> tuple[str, list]:
    if modifier == "below":
        return "i.uri LIKE %s", [like_prefix(value) + "%"]
    if modifier == "above":
        return "%s LIKE replace(replace(i.uri, '%%', '\\%%'), '_', '\\_') || '%%'", [value]
    return "i.uri = %s", [value]


def _reference(modifier: str | None, value: ReferenceValue) -> tuple[str, list]:
    if value.target_id is None:
        return "i.url = %s", [value.url]
    conditions, params = ["i.target_id = %s"], [value.target_id]
    if value.target_type:
        conditions.append("i.target_type = %s")
        params.append(value.target_type)
    sql = " AND ".join(conditions)
    if value.url:  # an absolute URL naming Type/id matches either form
        return f"({sql}) OR i.url = %s", [*params, value.url]
    return sql, params


def _date(value: RangeValue) -> tuple[str, list]:
    """Ranges are [start, end); comparisons per search.html#prefix."""
    start, end = value.low, value.high
    contained = "(i.start >= %s AND i.end <= %s)"
    formulas = {
        "eq": (contained, [start, end]),
        "ne": (f"NOT {contained}", [start, end]),
        "gt": ("i.end > %s", [end]),
        "lt": ("i.start < %s", [start]),
        "ge": (f"(i.end > %s OR {contained})", [end, start, end]),
        "le": (f"(i.start < %s OR {contained})", [start, start, end]),
        "sa": ("i.start >= %s", [end]),
        "eb": ("i.end <= %s", [start]),
    }
    if value.prefix == "ap":
        slack = _approximation(start)
        return "(i.start < %s AND i.end > %s)", [end + slack, start - slack]
    return formulas[value.prefix]


def _approximation(moment: datetime) -> timedelta:
    """`ap`: 10% of the distance from now (search.html#prefix), at least a day."""
    return max(abs(datetime.now(UTC) - moment) / 10, timedelta(days=1))


def _number(value: RangeValue, quantity: bool) -> tuple[str, list]:
    number: Decimal = value.value
    formulas = {
        "eq": ("i.value >= %s AND i.value < %s", [value.low, value.high]),
        "ne": ("NOT (i.value >= %s AND i.value < %s)", [value.low, value.high]),
        "gt": ("i.value > %s", [number]),
        "lt": ("i.value < %s", [number]),
        "ge": ("i.value >= %s", [number]),
        "le": ("i.value <= %s", [number]),
        "sa": ("i.value > %s", [number]),
        "eb": ("i.value < %s", [number]),
        "ap": ("i.value >= %s AND i.value <= %s", [number - abs(number) / 10, number + abs(number) / 10]),
    }
    sql, params = formulas[value.prefix]
    if quantity and value.code:
        if value.system:
            sql += " AND i.system = %s AND i.code = %s"
            params = [*params, value.system, value.code]
        else:
            sql += " AND (i.code = %s OR i.unit = %s)"
            params = [*params, value.code, value.code]
    return sql, params
