"""Serving snapshots: `[base]/$snapshots?link=<link id>` lists a linked patient's snapshots (a
Parameters resource), `[base]/$snapshot?link=<link id>[&snapshot=<id>]` serves a complete one
(the latest by default) as one `collection` Bundle of the versions its manifest names.

The Bundle is streamed (fhirserver.api.bundles.streamed_bundle_response, which also compresses
it for clients that accept gzip): manifest rows are read in keyset batches joined with their
stored version text, which goes out as stored (PHI revealed), never parsed. Only administrators reach these: a
`system/*` read scope (Backend Services), or a `user/*` one of an `admin`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from django.db import connection
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from fhirserver import errors
from fhirserver.api.bundles import Entry, streamed_bundle_response
from fhirserver.api.endpoint import base_url
from fhirserver.api.negotiation import fhir_response
from fhirserver.storage import phi
from fhirserver.storage.repository import format_instant
from smart_auth.context import AuthContext
from smart_auth.scopes import InvalidScope, ResourceScope, parse_scope
from sync.models import Snapshot

BATCH = 1000


def require_administrator(context: AuthContext | None) -> None:
    levels = {"system", "user"} if context is not None and "admin" in context.roles else {"system"}
    for text in context.scopes if context is not None else ():
        try:
            scope = parse_scope(text)
        except InvalidScope:
            continue
        if (
            isinstance(scope, ResourceScope) and scope.level in levels and scope.resource_type == "*"
            and "r" in scope.permissions and not scope.restriction
        ):  # fmt: skip
            return
    raise errors.forbidden("Snapshots need a system/*.read scope, or user/*.read for an admin")


def _uuid(request: HttpRequest, name: str, required: bool = True) -> str | None:
    value = request.GET.get(name)
    if value is None and not required:
        return None
    try:
        return str(uuid.UUID(value or ""))
    except ValueError:
        raise errors.bad_request(
            f"'{name}' must be the id of a {'link' if name == 'link' else name}"
        ) from None


def _require_get(request: HttpRequest) -> None:
    if request.method not in ("GET", "HEAD"):
        raise errors.FhirError.single(405, "not-supported", f"{request.method} is not allowed here")


def listing(request: HttpRequest) -> HttpResponse:
    _require_get(request)
    require_administrator(request.auth_context)
    link = _uuid(request, "link")
    parameters = [
        {
            "name": "snapshot",
            "part": [
                {"name": "id", "valueString": str(snapshot.id)},
                {"name": "status", "valueCode": snapshot.status},
                {"name": "created", "valueInstant": format_instant(snapshot.created)},
                *(
                    [{"name": "finished", "valueInstant": format_instant(snapshot.finished)}]
                    if snapshot.finished
                    else []
                ),
                {"name": "resources", "valueInteger": sum(snapshot.counts.values())},
                {"name": "newVersions", "valueInteger": snapshot.written},
                *(
                    [{"name": "description", "valueString": snapshot.description}]
                    if snapshot.description
                    else []
                ),
            ],
        }
        for snapshot in Snapshot.objects.filter(patient_id=link).order_by("-created")[:1000]
    ]
    return fhir_response(request, {"resourceType": "Parameters", "parameter": parameters}, shaped=False)


def bundle(request: HttpRequest) -> StreamingHttpResponse:
    _require_get(request)
    require_administrator(request.auth_context)
    link, chosen = _uuid(request, "link"), _uuid(request, "snapshot", required=False)
    complete = Snapshot.objects.filter(patient_id=link, status=Snapshot.Status.COMPLETE)
    snapshot = (complete.filter(id=chosen) if chosen else complete.order_by("-finished")).first()
    if snapshot is None:
        raise errors.not_found("No complete snapshot of this link" + (" with that id" if chosen else ""))
    head = {
        "resourceType": "Bundle",
        "id": str(snapshot.id),
        "meta": {"lastUpdated": format_instant(snapshot.finished)},
        "type": "collection",
        "timestamp": format_instant(snapshot.finished),
    }
    response = streamed_bundle_response(request, head, _entries(snapshot, base_url(request)))
    response["Last-Modified"] = snapshot.finished.strftime("%a, %d %b %Y %H:%M:%S GMT")
    return response


def _entries(snapshot: Snapshot, base: str) -> Iterator[list[Entry]]:
    """The manifest's versions in keyset batches, as stored (PHI revealed)."""
    after = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT e.id, e.resource_type, e.resource_id, v.content FROM sync_snapshot_entry e"
                " JOIN fhir_resource_version v ON v.resource_type = e.resource_type"
                " AND v.resource_id = e.resource_id AND v.version_id = e.version_id"
                " WHERE e.snapshot_id = %s AND e.id > %s ORDER BY e.id LIMIT %s",
                [snapshot.id, after, BATCH],
            )
            rows = cursor.fetchall()
        if not rows:
            return
        yield [
            Entry(f"{base}/{kind}/{ident}", phi.reveal(kind, ident, content))
            for _, kind, ident, content in rows
        ]
        after = rows[-1][0]
