"""The $export endpoints (Bulk Data IG 2.0, http://hl7.org/fhir/uv/bulkdata/STU2/export.html):
kick-off at `[base]/$export`, `[base]/Patient/$export` and `[base]/Group/[id]/$export`, then
the status URL (poll, cancel) and the file URLs the manifest lists. Jobs run in bulk.worker.

Who may export: a token with `system/` scopes (Backend Services), or `user/` scopes of an
`admin`; only their read (`s`) permissions count, so a patient-level token is refused (403),
also when it holds other scopes. Types the token cannot search are left out of an export that
did not name them; naming one is 403. Status and files answer the client (and user) of the
kick-off token only: anyone else is 403, as any out-of-reach resource is here.
"""

from __future__ import annotations

import shutil
from datetime import timedelta

import orjson
from django.conf import settings
from django.http import FileResponse, HttpRequest, HttpResponse
from django.utils.http import http_date

from bulk import parameters
from bulk.models import Export
from bulk.selection import access_of
from bulk.worker import directory_of
from bulk.writer import ERROR_FILE, total
from fhirserver import errors
from fhirserver.api.endpoint import base_url
from fhirserver.api.negotiation import fhir_response
from fhirserver.operation_outcome import operation_outcome
from fhirserver.storage.repository import Repository, format_instant, now
from smart_auth.context import AuthContext
from smart_auth.scopes import InvalidScope, ResourceScope, parse_scope

NDJSON = "application/fhir+ndjson"
RETRY_AFTER_SECONDS = 2


# ----- kick-off -----------------------------------------------------------------------------
def kickoff(request: HttpRequest, level: str, group_id: str | None = None) -> HttpResponse:
    if request.method not in ("GET", "POST"):
        raise errors.FhirError.single(405, "not-supported", f"{request.method} is not allowed here")
    prefer = request.headers.get("Prefer", "")
    if "respond-async" not in prefer:
        raise errors.bad_request("$export runs asynchronously: send Prefer: respond-async")
    accept = request.headers.get("Accept")
    if accept and not any(kind in accept for kind in ("application/fhir+json", "*/*")):
        raise errors.bad_request("$export answers application/fhir+json: send Accept: application/fhir+json")
    context = request.auth_context
    scopes = export_scopes(context)
    found = parameters.parse(level, parameters.pairs_of(request), strict="handling=strict" in prefer)
    types = _authorized(scopes, found.types, explicit=found.explicit_types)
    patients = _members(scopes, group_id) if level == "group" else None
    moment = now()
    export = Export.objects.create(
        level=level,
        group_id=group_id or "",
        request_url=request.build_absolute_uri(),
        client_id=context.client_id or "",
        user=context.user or "",
        scopes=scopes,
        types=types,
        since=found.since,
        type_filters=found.type_filters,
        patients=patients,
        notes=found.notes,
        transaction_time=moment,
        created=moment,
    )
    response = HttpResponse(status=202)
    response["Content-Location"] = f"{base_url(request)}/$export-status/{export.id}"
    return response


def export_scopes(context: AuthContext | None) -> list[str]:
    """The token's scopes that may export: system-level, or user-level for an admin."""
    levels = {"system", "user"} if context is not None and "admin" in context.roles else {"system"}
    kept = []
    for text in sorted(context.scopes if context is not None else ()):
        try:
            scope = parse_scope(text)
        except InvalidScope:
            continue
        if isinstance(scope, ResourceScope) and scope.level in levels:
            kept.append(text)
    if not kept:
        raise errors.forbidden(
            "$export needs system-level read scopes (Backend Services), or user-level for an admin"
        )
    return kept


def _authorized(scopes: list[str], types: list[str], explicit: bool) -> list[str]:
    access = access_of(scopes)
    kept = []
    for resource_type in types:
        try:
            access.require(resource_type, "search-type")
        except errors.FhirError:
            if explicit:
                raise
            continue
        kept.append(resource_type)
    if not kept:
        raise errors.forbidden("The access token grants no search of the resource types to export")
    return kept


def _members(scopes: list[str], group_id: str) -> list[str]:
    """Patient ids of the Group's active members (member.entity), as of the kick-off."""
    access = access_of(scopes)
    access.require("Group", "read")
    stored = Repository().read("Group", group_id)
    access.check_instance("Group", group_id, "read")
    group = orjson.loads(stored.content)  # the repository's reads are decrypted already
    members = set()
    for member in group.get("member", []):
        reference = (member.get("entity") or {}).get("reference", "")
        kind, _, patient_id = "/".join(reference.rstrip("/").split("/")[-2:]).partition("/")
        if kind == "Patient" and patient_id and not member.get("inactive"):
            members.add(patient_id)
    return sorted(members)


# ----- status -------------------------------------------------------------------------------
def status(request: HttpRequest, export_id: str) -> HttpResponse:
    export = _owned(request, export_id)
    if request.method == "DELETE":
        # IG "Delete a Bulk Data Request": 202, and the files are removed.
        Export.objects.filter(id=export.id).update(status=Export.Status.CANCELLED, finished=now())
        shutil.rmtree(directory_of(request.tenant.schema_name, export.id), ignore_errors=True)
        body = operation_outcome("informational", "The export was cancelled", severity="information")
        return fhir_response(request, body, 202, shaped=False)
    if request.method != "GET":
        raise errors.FhirError.single(405, "not-supported", f"{request.method} is not allowed here")
    if export.status == Export.Status.FAILED:
        raise errors.FhirError.single(500, "exception", export.error or "The export failed")
    if export.status != Export.Status.COMPLETED:
        response = HttpResponse(status=202)
        response["X-Progress"] = _progress_text(export)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    response = fhir_response(request, manifest(request, export), 200, shaped=False)
    response["Content-Type"] = "application/json"  # IG: the manifest is plain JSON
    response["Expires"] = http_date(_expiry(export).timestamp())
    return response


def _progress_text(export: Export) -> str:
    if export.status == Export.Status.QUEUED:
        return "queued"
    done = sum(1 for state in export.progress.values() if state.get("done"))
    return f"{total(export.progress)} resources written, {done} of {len(export.types)} types done"


def manifest(request: HttpRequest, export: Export) -> dict:
    """IG "Response - Complete Status": one output entry per file, errors as OperationOutcome
    NDJSON."""
    files_url = f"{base_url(request)}/$export-file/{export.id}"
    output = [
        {"type": resource_type, "url": f"{files_url}/{entry['name']}", "count": entry["count"]}
        for resource_type in export.types
        for entry in export.progress.get(resource_type, {}).get("files", [])
    ]
    error = [{"type": "OperationOutcome", "url": f"{files_url}/{ERROR_FILE}"}] if export.notes else []
    return {
        "transactionTime": format_instant(export.transaction_time),
        "request": export.request_url,
        "requiresAccessToken": True,
        "output": output,
        "error": error,
    }


# ----- files --------------------------------------------------------------------------------
def download(request: HttpRequest, export_id: str, file_name: str) -> HttpResponse:
    if request.method != "GET":
        raise errors.FhirError.single(405, "not-supported", f"{request.method} is not allowed here")
    export = _owned(request, export_id)
    names = {entry["name"] for state in export.progress.values() for entry in state.get("files", [])}
    if export.notes:
        names.add(ERROR_FILE)
    if export.status != Export.Status.COMPLETED or file_name not in names:
        raise errors.not_found(f"No file {file_name} in this export")
    request.audit_query = _audit_query(export, file_name)
    path = directory_of(request.tenant.schema_name, export.id) / file_name
    return FileResponse(open(path, "rb"), content_type=NDJSON)


def _audit_query(export: Export, file_name: str) -> str:
    """What a download is, for the audit trail: the file, and the kick-off that made it."""
    return f"file={file_name}&request={export.request_url}"


def _owned(request: HttpRequest, export_id: str) -> Export:
    export = Export.objects.filter(id=export_id).first()
    if export is None or export.status == Export.Status.CANCELLED or _expiry(export) < now():
        raise errors.not_found("No such export (expired, cancelled or never started)")
    context = request.auth_context
    if (export.client_id, export.user) != ((context.client_id or ""), (context.user or "")):
        raise errors.forbidden("This export belongs to another client")
    return export


def _expiry(export: Export):
    return export.created + timedelta(hours=settings.EXPORT_RETENTION_HOURS)
