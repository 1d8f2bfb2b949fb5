"""history at instance, type and system level (http://hl7.org/fhir/R4/http.html#history)."""

from __future__ import annotations

from datetime import datetime

from django.http import HttpRequest, HttpResponse
from django.utils.dateparse import parse_datetime

from fhirserver import errors
from fhirserver.api import paging
from fhirserver.api.authorization import Access, access
from fhirserver.api.bundles import Entry, bundle_response
from fhirserver.api.endpoint import base_url
from fhirserver.search.dates import parse_range
from fhirserver.storage import history
from fhirserver.storage.repository import format_instant, require_resource_type

STATUS = {"POST": "201 Created", "PUT": "200 OK", "PATCH": "200 OK", "DELETE": "204 No Content"}


def history_response(
    request: HttpRequest, resource_type: str | None = None, resource_id: str | None = None
) -> HttpResponse:
    if resource_type:
        require_resource_type(resource_type)
    condition = _reach(access(request), resource_type, resource_id)
    limit = paging.page_size(request)
    after = paging.cursor(request)
    if after is not None:
        after = (_instant(after[0]), *after[1:])
    rows = history.versions(
        resource_type,
        resource_id,
        since=_since(request),
        at=parse_range(request.GET["_at"], "_at") if "_at" in request.GET else None,
        after=after,
        limit=limit + 1,
        condition=condition,
    )
    if resource_id and not rows and after is None:
        raise errors.not_found(f"{resource_type}/{resource_id} is not known")
    base = base_url(request)
    links = [("self", paging.link(request, paging.cursor(request)))]
    rows, more = paging.split_page(rows, limit)
    if more:
        links.append(("next", paging.link(request, rows[-1].position)))
    return bundle_response(request, "history", [_entry(base, row) for row in rows], links=links)


def _reach(guard: Access, resource_type: str | None, resource_id: str | None) -> tuple[str, list] | None:
    """SMART: instance history is a read (`r`), type and system history a search (`s`)."""
    if resource_id is not None:
        guard.require(resource_type, "history-instance")
        guard.check_instance(resource_type, resource_id, "history-instance")
        return None
    if resource_type is not None:
        found = guard.require(resource_type, "history-type")
        return None if found is None else found.on(resource_type, "v.resource_id")
    return guard.types_condition("history-system", "v.resource_type", "v.resource_id")


def _since(request: HttpRequest) -> datetime | None:
    raw = request.GET.get("_since")
    return parse_range(raw, "_since")[0] if raw else None


def _instant(value: str) -> datetime:
    parsed = parse_datetime(value)
    if parsed is None:
        raise errors.bad_request("_cursor is not a cursor this server issued")
    return parsed


def _entry(base: str, row: history.Version) -> Entry:
    url = f"{row.resource_type}/{row.resource_id}"
    request_url = url if row.method != "POST" else row.resource_type
    return Entry(
        full_url=f"{base}/{url}",
        resource=row.content,
        fields={
            "request": {"method": row.method, "url": request_url},
            "response": {
                "status": STATUS[row.method],
                "etag": f'W/"{row.version_id}"',
                "lastModified": format_instant(row.last_updated),
            },
        },
    )
