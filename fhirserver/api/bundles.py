"""Bundles in responses (history, searchset, transaction-response). Stored resources are spliced
into the JSON as stored text, never parsed, unless the response needs another format."""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import orjson
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.middleware.gzip import re_accepts_gzip
from django.utils.cache import patch_vary_headers

from fhirserver import errors
from fhirserver.api.negotiation import (
    CONTENT_TYPES,
    JSON,
    fhir_response,
    response_format,
    shape,
    wants_shaping,
)
from fhirserver.operation_outcome import outcome_from_issues
from fhirserver.storage import phi
from fhirserver.storage.repository import format_instant, now


@dataclass
class Entry:
    full_url: str | None = None
    resource: str | dict | None = None  # stored JSON text, or a dict built here
    fields: dict = field(default_factory=dict)  # search, request, response


def search_entry(base: str, resource_type: str, resource_id: str, content: str, mode: str = "match") -> Entry:
    """A searchset entry of a stored resource (search.mode `match` or `include`), decrypted."""
    return Entry(
        f"{base}/{resource_type}/{resource_id}",
        phi.reveal(resource_type, resource_id, content),
        {"search": {"mode": mode}},
    )


def ignored_parameters_entry(names: list[str]) -> Entry:
    """The OperationOutcome entry listing parameters a search ignored (search.html#errors)."""
    issues = [
        errors.Issue(
            "not-supported", f"Parameter '{name}' is not supported and was ignored", severity="warning"
        )
        for name in names
    ]
    return Entry(resource=outcome_from_issues(issues), fields={"search": {"mode": "outcome"}})


def bundle_response(
    request: HttpRequest,
    bundle_type: str,
    entries: list[Entry],
    total: int | None = None,
    links: list[tuple[str, str]] = (),
    status: int = 200,
) -> HttpResponse:
    header = bundle_header(bundle_type, total, links)
    fmt = response_format(request)
    if fmt != JSON or wants_shaping(request, fmt):
        if entries:
            header["entry"] = [_entry_dict(request, entry) for entry in entries]
        return fhir_response(request, header, status, shaped=False)
    response = HttpResponse(_json_bytes(header, entries), status=status)
    response["Content-Type"] = CONTENT_TYPES[JSON]
    return response


def bundle_header(bundle_type: str, total: int | None = None, links: Iterable[tuple[str, str]] = ()) -> dict:
    header: dict = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": format_instant(now())},
        "type": bundle_type,
    }
    if total is not None:
        header["total"] = total
    if links:
        header["link"] = [{"relation": relation, "url": url} for relation, url in links]
    return header


def streamed_bundle_response(
    request: HttpRequest, header: dict, batches: Iterable[list[Entry]]
) -> StreamingHttpResponse:
    """A JSON Bundle sent as it is read: `header`, then each batch of entries as one chunk, so
    the server holds one batch at a time however large the Bundle. Errors after the first chunk
    can no longer change the status: they cut the body short, which a client sees as invalid
    JSON, never as a complete Bundle.

    Compressed here, at zlib level 1, for clients that accept gzip (the gzip middleware then
    leaves it): these are the largest answers (a 25,000-resource record is ~45 MB of JSON), and
    level 6, the middleware's, added 0.24 s to the 0.57 s of producing that record, for a
    quarter fewer bytes (3.6 MB against 4.8 MB); level 1 adds 0.11 s."""
    chunks = _stream_bytes(header, batches)
    gzipped = bool(re_accepts_gzip.search(request.headers.get("Accept-Encoding", "")))
    response = StreamingHttpResponse(_gzip_level_1(chunks) if gzipped else chunks)
    response["Content-Type"] = CONTENT_TYPES[JSON]
    patch_vary_headers(response, ("Accept-Encoding",))
    if gzipped:
        response["Content-Encoding"] = "gzip"
    return response


def _gzip_level_1(chunks: Iterator[bytes]) -> Iterator[bytes]:
    compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # 16+: the gzip format
    for chunk in chunks:
        if compressed := compressor.compress(chunk):
            yield compressed
    yield compressor.flush()


def _stream_bytes(header: dict, batches: Iterable[list[Entry]]) -> Iterator[bytes]:
    yield orjson.dumps(header)[:-1]
    opened = False
    for batch in batches:
        if batch:  # "entry" is left out rather than empty: JSON arrays may not be empty (json.html)
            yield (b"," if opened else b',"entry":[') + b",".join(map(_entry_bytes, batch))
            opened = True
    yield b"]}" if opened else b"}"


def _entry_dict(request: HttpRequest, entry: Entry) -> dict:
    result: dict = {}
    if entry.full_url:
        result["fullUrl"] = entry.full_url
    if entry.resource is not None:
        resource = orjson.loads(entry.resource) if isinstance(entry.resource, str) else entry.resource
        # _summary and _elements shape the matched resources of a search (search.html#summary).
        if entry.fields.get("search", {}).get("mode") == "match":
            resource = shape(request, resource)
        result["resource"] = resource
    return {**result, **entry.fields}


def _json_bytes(header: dict, entries: list[Entry]) -> bytes:
    if not entries:
        return orjson.dumps(header)
    parts = [orjson.dumps(header)[:-1], b',"entry":[']
    for index, entry in enumerate(entries):
        if index:
            parts.append(b",")
        parts.append(_entry_bytes(entry))
    parts.append(b"]}")
    return b"".join(parts)


def _entry_bytes(entry: Entry) -> bytes:
    pieces = []
    if entry.full_url:
        pieces.append(b'"fullUrl":' + orjson.dumps(entry.full_url))
    if entry.resource is not None:
        raw = entry.resource.encode() if isinstance(entry.resource, str) else orjson.dumps(entry.resource)
        pieces.append(b'"resource":' + raw)
    if entry.fields:
        pieces.append(orjson.dumps(entry.fields)[1:-1])
    return b"{" + b",".join(pieces) + b"}"
