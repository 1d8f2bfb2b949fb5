"""History queries: versions newest first, paged by keyset so pages stay stable while new
versions are written (http://hl7.org/fhir/R4/http.html#history)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import connection

from fhirserver.storage import phi


@dataclass(frozen=True)
class Version:
    resource_type: str
    resource_id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    method: str
    content: str | None

    @property
    def position(self) -> tuple:
        """Where this version sits in the order; the next page starts after it."""
        return (self.last_updated.isoformat(), self.resource_type, self.resource_id, self.version_id)


def versions(
    resource_type: str | None = None,
    resource_id: str | None = None,
    since: datetime | None = None,
    at: tuple[datetime, datetime] | None = None,
    after: tuple | None = None,
    limit: int = 50,
    condition: tuple[str, list] | None = None,
) -> list[Version]:
    """Versions newest first; `condition` (SQL on `v`, and its parameters) narrows them further."""
    conditions, params = [], []
    if condition is not None:
        conditions.append(condition[0])
        params += condition[1]
    if resource_type:
        conditions.append("v.resource_type = %s")
        params.append(resource_type)
    if resource_id:
        conditions.append("v.resource_id = %s")
        params.append(resource_id)
    if since:
        conditions.append("v.last_updated >= %s")
        params.append(since)
    if at:
        # Current at some moment of [start, end): written before the end, and not yet
        # replaced at the start (version ids are consecutive per resource).
        conditions.append(
            "v.last_updated < %s AND NOT EXISTS (SELECT 1 FROM fhir_resource_version n"
            " WHERE n.resource_type = v.resource_type AND n.resource_id = v.resource_id"
            " AND n.version_id = v.version_id + 1 AND n.last_updated <= %s)"
        )
        params += [at[1], at[0]]
    if after:
        conditions.append("(v.last_updated, v.resource_type, v.resource_id, v.version_id) < (%s, %s, %s, %s)")
        params += list(after)
    where = ("WHERE " + " AND ".join(conditions)) if conditions else ""
    sql = (
        "SELECT v.resource_type, v.resource_id, v.version_id, v.last_updated, v.deleted, v.method, v.content"
        f" FROM fhir_resource_version v {where}"
        " ORDER BY v.last_updated DESC, v.resource_type DESC, v.resource_id DESC, v.version_id DESC LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, limit])
        rows = cursor.fetchall()
    return [Version(*row[:6], row[6] and phi.reveal(row[0], row[1], row[6])) for row in rows]
