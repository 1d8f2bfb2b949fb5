"""SQL of composite parameters (http://hl7.org/fhir/R4/search.html#composite) and of `near`
on Location (search.html#special), both indexed as groups of component rows
(fhirserver.search.extraction: parameter `code#i`, one group number per occurrence).

A composite value `a$b` matches a resource when one group has a row of component 0 meeting `a`
and a row of component 1 meeting `b`: each component by its own type's rules
(conditions.value_condition), all within the SAME occurrence of the base element, so
`code-value-quantity=8480-6$gt100` does not match a panel whose 8480-6 is 90 and whose other
component is 120. The first component's rows are found through the look-up index; the others
are tested per (resource, group), through the by-resource index.
"""

from __future__ import annotations

import math
from decimal import Decimal

from fhirserver.search.conditions import TABLES, value_condition
from fhirserver.search.extraction import COMBINED
from fhirserver.search.query import Clause
from fhirserver.search.values import CompositeValue, NearValue

EARTH_RADIUS_KM = 6371.0088  # mean radius (IUGG)


def condition(resource_type: str, clause: Clause, alias: str) -> tuple[str, list]:
    """`alias.resource_id IN (...)`: the resources one of the clause's values (ORed) matches."""
    branches, params = [], []
    for value in clause.values:
        if isinstance(value, NearValue):
            found = [_near(resource_type, value)]
        else:
            codes = COMBINED.get(clause.parameter.code, (clause.parameter.code,))
            found = [_group(resource_type, code, value) for code in codes]
        for sql, value_params in found:
            branches.append(sql)
            params += value_params
    return f"{alias}.resource_id IN ({' UNION ALL '.join(branches)})", params


def _group(resource_type: str, code: str, value: CompositeValue) -> tuple[str, list]:
    # Each component subquery names its row `i`, as value_condition expects; in the nested ones
    # `i` is the inner row, and the outer row's (resource_id, composite) is the one compared.
    parts, params = [], []
    for index, (definition, component) in enumerate(zip(value.components, value.values, strict=True)):
        sql, component_params = value_condition(Clause(definition, None, [component]), component)
        table = TABLES[definition.type]
        where = f"i.resource_type = %s AND i.param = %s AND ({sql})"
        if index == 0:
            parts.append(f"SELECT i.resource_id FROM {table} i WHERE {where}")
        else:
            rows = f"SELECT i.resource_id, i.composite FROM {table} i WHERE {where}"
            parts.append(f"(i.resource_id, i.composite) IN ({rows})")
        params += [resource_type, f"{code}#{index}", *component_params]
    return " AND ".join(parts), params


def _near(resource_type: str, value: NearValue) -> tuple[str, list]:
    """Locations whose position lies within the distance (great-circle, haversine). A box around
    the point bounds latitude through the number look-up index first; longitude is bounded too
    unless the box reaches a pole or crosses the antimeridian."""
    latitude, longitude = float(value.latitude), float(value.longitude)
    reach = float(value.kilometres) / EARTH_RADIUS_KM  # radians of arc
    low, high = latitude - math.degrees(reach), latitude + math.degrees(reach)
    box, box_params = "", []
    if -90 < low and high < 90:
        spread = math.degrees(reach / math.cos(math.radians(max(abs(low), abs(high)))))
        west, east = longitude - spread, longitude + spread
        if -180 <= west and east <= 180:
            box, box_params = " AND o.value BETWEEN %s AND %s", [_decimal(west), _decimal(east)]
    haversine = (
        "2 * asin(sqrt(power(sin(radians(a.value - %s) / 2), 2)"
        " + cos(radians(%s)) * cos(radians(a.value)) * power(sin(radians(o.value - %s) / 2), 2)))"
    )
    return (
        "SELECT a.resource_id FROM fhir_index_number a JOIN fhir_index_number o"
        " ON o.resource_type = a.resource_type AND o.resource_id = a.resource_id"
        " AND o.composite = a.composite AND o.param = 'near#1'"
        " WHERE a.resource_type = %s AND a.param = 'near#0' AND a.value BETWEEN %s AND %s"
        f"{box} AND {haversine} <= %s",
        [
            resource_type,
            _decimal(max(low, -90)),
            _decimal(min(high, 90)),
            *box_params,
            value.latitude,
            value.latitude,
            value.longitude,
            reach,
        ],
    )


def _decimal(number: float) -> Decimal:
    return Decimal(repr(number))
