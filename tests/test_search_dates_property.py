"""Property test of date search over real HTTP: random dates, precisions, zones and prefixes
against a Python reading of http://hl7.org/fhir/R4/search.html#prefix over the same stored
values (dates, dateTimes and Periods of every precision, open Periods included).

The reference works on [start, end) ranges: a value stands for the whole period its precision
names (search.html#date), and the prefixes compare those ranges as the spec's table says.
"""

import re
import uuid
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import MARK

EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, tzinfo=UTC)

# effective[x] of the stored Observations: every precision, boundaries, zones, open Periods.
STORED = [
    "2019",
    "2019-12",
    "2020-02",
    "2019-06-15",
    "2019-12-31",
    "2020-01-01",
    "2019-06-15T10:30:00Z",
    "2019-06-15T23:59:59+02:00",
    "2019-12-31T23:30:00-05:00",
    "2020-02-29T00:00:00Z",
    "2018-03-04T05:06:07.250Z",
    ("2019-03-01", "2019-09-30"),
    ("2019-06-15T08:00:00Z", "2019-06-15T09:00:00Z"),
    ("2018", "2020"),
    ("2019-07-01", None),
    (None, "2019-02"),
]


def period(text: str) -> tuple[datetime, datetime]:
    """[start, end) of a FHIR date/dateTime, written independently of the server's parser."""
    if "T" not in text:
        parts = [int(p) for p in text.split("-")]
        start = datetime(*parts, *([1] * (3 - len(parts))), tzinfo=UTC)
        if len(parts) == 1:
            return start, start.replace(year=start.year + 1)
        if len(parts) == 2:
            return start, (start + timedelta(days=32)).replace(day=1)
        return start, start + timedelta(days=1)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    clock = re.sub(r"(Z|[+-]\d\d:\d\d)$", "", text.split("T")[1])
    if "." in clock:
        unit = timedelta(microseconds=1)
    elif clock.count(":") == 2:
        unit = timedelta(seconds=1)
    else:
        unit = timedelta(minutes=1)
    return moment, moment + unit


def stored_range(value) -> tuple[datetime, datetime]:
    if isinstance(value, str):
        return period(value)
    start, end = value
    return (period(start)[0] if start else EARLIEST, period(end)[1] if end else LATEST)


def matches(prefix: str, query: tuple[datetime, datetime], target: tuple[datetime, datetime]) -> bool:
    """search.html#prefix on ranges."""
    (qs, qe), (s, e) = query, target
    contained = qs <= s and e <= qe
    return {
        "eq": contained,
        "ne": not contained,
        "gt": e > qe,
        "lt": s < qs,
        "ge": e > qe or contained,
        "le": s < qs or contained,
        "sa": s >= qe,
        "eb": e <= qs,
    }[prefix]


def effective(value) -> dict:
    if isinstance(value, str):
        return {"effectiveDateTime": value}
    start, end = value
    return {"effectivePeriod": {k: v for k, v in (("start", start), ("end", end)) if v}}


@pytest.fixture(scope="module")
def dated(fhir_server):
    """(client, marker, {id: stored range}) for one set of Observations made once."""
    marker = uuid.uuid4().hex
    client = httpx.Client(base_url=fhir_server.url + "/t/alpha/fhir", timeout=60)
    ranges = {}
    for value in STORED:
        body = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "dated"},
            "identifier": [{"system": MARK, "value": marker}],
            **effective(value),
        }
        response = client.post("/Observation", json=body)
        assert response.status_code == 201, response.text
        ranges[response.json()["id"]] = stored_range(value)
    yield client, marker, ranges
    client.close()


ZONES = st.sampled_from([None, "Z", "+02:00", "-05:00", "+14:00"])


@st.composite
def query_values(draw) -> str:
    moment = draw(st.datetimes(min_value=datetime(2017, 6, 1), max_value=datetime(2021, 6, 1)))
    precision = draw(st.sampled_from(["year", "month", "day", "minute", "second"]))
    if precision == "year":
        return f"{moment:%Y}"
    if precision == "month":
        return f"{moment:%Y-%m}"
    if precision == "day":
        return f"{moment:%Y-%m-%d}"
    zone = draw(ZONES) or "Z"
    text = f"{moment:%Y-%m-%dT%H:%M}" + (f":{moment:%S}" if precision == "second" else "")
    return text + zone


@settings(max_examples=80, deadline=None)
@given(prefix=st.sampled_from(["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"]), value=query_values())
def test_date_prefixes_match_the_reference(dated, prefix, value):
    client, marker, ranges = dated
    response = client.get(
        "/Observation", params={"identifier": f"{MARK}|{marker}", "date": prefix + value, "_count": "100"}
    )
    assert response.status_code == 200, response.text
    got = {e["resource"]["id"] for e in response.json().get("entry", [])}
    query = period(value)
    expected = {rid for rid, target in ranges.items() if matches(prefix, query, target)}
    assert got == expected, (prefix, value)


def test_reference_reads_precisions():
    assert period("2019") == (datetime(2019, 1, 1, tzinfo=UTC), datetime(2020, 1, 1, tzinfo=UTC))
    assert period("2019-12")[1] == datetime(2020, 1, 1, tzinfo=UTC)
    zone = timezone(timedelta(hours=2))
    assert period("2019-06-15T23:59:59+02:00") == (
        datetime(2019, 6, 15, 23, 59, 59, tzinfo=zone),
        datetime(2019, 6, 16, 0, 0, 0, tzinfo=zone),
    )
    assert period("2019-06-15T10:30Z")[1] - period("2019-06-15T10:30Z")[0] == timedelta(minutes=1)
