"""FHIR date, dateTime and instant values as time ranges (http://hl7.org/fhir/R4/search.html#date):
a value of lower precision stands for the whole period it names (2026 = all of 2026)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from fhirserver import errors

_PATTERN = re.compile(
    r"^(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?P<fraction>\.\d+)?)?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def parse_range(value: str, name: str) -> tuple[datetime, datetime]:
    """[start, end) of the period `value` names; 400 if it is not a FHIR date/dateTime/instant."""
    match = _PATTERN.match(value.strip())
    if not match:
        raise errors.bad_request(f"{name} is not a valid FHIR date or dateTime")
    parts = match.groupdict()
    try:
        start = datetime(
            int(parts["year"]),
            int(parts["month"] or 1),
            int(parts["day"] or 1),
            int(parts["hour"] or 0),
            int(parts["minute"] or 0),
            int(parts["second"] or 0),
            int(float(parts["fraction"] or 0) * 1_000_000),
            tzinfo=_zone(parts["zone"]),
        )
    except ValueError:
        raise errors.bad_request(f"{name} is not a valid date") from None
    return start, start + _precision(parts)


def _zone(zone: str | None) -> timezone:
    if zone in (None, "Z"):
        return UTC
    sign = 1 if zone[0] == "+" else -1
    hours, minutes = int(zone[1:3]), int(zone[4:6])
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _precision(parts: dict) -> timedelta:
    if parts["fraction"]:
        return timedelta(microseconds=1)
    if parts["second"]:
        return timedelta(seconds=1)
    if parts["minute"]:
        return timedelta(minutes=1)
    if parts["day"]:
        return timedelta(days=1)
    if parts["month"]:
        month = int(parts["month"])
        year = int(parts["year"])
        following = datetime(year + month // 12, month % 12 + 1, 1)
        return following - datetime(year, month, 1)
    year = int(parts["year"])
    return datetime(year + 1, 1, 1) - datetime(year, 1, 1)
