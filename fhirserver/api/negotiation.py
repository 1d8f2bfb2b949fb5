"""Formats in and out (http://hl7.org/fhir/R4/http.html#mime-type): JSON and XML bodies,
`_format` and Accept, `_pretty`, `_summary` / `_elements`.

The fast path serves stored JSON text as it is; anything that changes the bytes (XML, pretty
printing, summaries) parses it first.
"""

from __future__ import annotations

import orjson
from django.http import HttpRequest, HttpResponse

from fhirserver import errors

JSON = "json"
XML = "xml"
CONTENT_TYPES = {JSON: "application/fhir+json; charset=utf-8", XML: "application/fhir+xml; charset=utf-8"}
_MIME_FORMATS = {
    "json": JSON,
    "application/json": JSON,
    "application/fhir+json": JSON,
    "application/json+fhir": JSON,
    "xml": XML,
    "text/xml": XML,
    "application/xml": XML,
    "application/fhir+xml": XML,
    "application/xml+fhir": XML,
}
SUMMARY_MODES = ("true", "false", "text", "data", "count")


def response_format(request: HttpRequest) -> str:
    """`_format` wins over Accept; an Accept without a FHIR type (a browser's) gets JSON."""
    requested = request.GET.get("_format")
    if requested:
        fmt = _MIME_FORMATS.get(requested.split(";", 1)[0].strip().lower())
        if fmt is None:
            raise errors.FhirError.single(406, "not-supported", "_format must be json or xml")
        return fmt
    best, best_q = JSON, -1.0
    for part in request.headers.get("Accept", "").split(","):
        mime, _, params = part.strip().partition(";")
        fmt = _MIME_FORMATS.get(mime.strip().lower())
        q = _quality(params)
        if fmt and q > best_q:
            best, best_q = fmt, q
    return best


def _quality(params: str) -> float:
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def request_format(request: HttpRequest) -> str:
    mime = (request.content_type or "").lower()
    if mime in _MIME_FORMATS:
        return _MIME_FORMATS[mime]
    if not mime or mime == "application/octet-stream" or mime == "text/plain":
        return XML if request.body.lstrip()[:1] == b"<" else JSON
    raise errors.FhirError.single(415, "not-supported", f"Unsupported Content-Type '{mime}'")


def parse_body(request: HttpRequest) -> dict:
    """The request's resource as a dict; 400 with an OperationOutcome if it cannot be parsed."""
    if not request.body:
        raise errors.bad_request("The request has no body", code="required")
    if request_format(request) == XML:
        from fhirserver.formats.xml import XmlFormatError, xml_to_resource

        try:
            return xml_to_resource(request.body)
        except XmlFormatError as exc:
            raise errors.bad_request(f"The XML body cannot be parsed: {exc}", code="structure") from None
    return parse_json(request.body)


def parse_json(body: bytes) -> dict:
    parsed = errors.load_json(body, "JSON body")
    if not isinstance(parsed, dict):
        raise errors.bad_request("The JSON body must be an object", code="structure")
    return parsed


def wants_shaping(request: HttpRequest, fmt: str) -> bool:
    return (
        fmt == XML
        or request.GET.get("_pretty") == "true"
        or request.GET.get("_summary", "false") != "false"
        or "_elements" in request.GET
    )


def shape(request: HttpRequest, resource: dict) -> dict:
    """Apply _summary or _elements (http://hl7.org/fhir/R4/search.html#summary)."""
    from fhirserver.formats.summary import select_elements, summarize

    mode = request.GET.get("_summary")
    if mode is not None and mode not in SUMMARY_MODES:
        raise errors.bad_request(f"_summary must be one of {', '.join(SUMMARY_MODES)}")
    if mode and mode not in ("false", "count"):
        return summarize(resource, mode)
    if "_elements" in request.GET:
        names = [n.strip() for n in request.GET["_elements"].split(",") if n.strip()]
        return select_elements(resource, names)
    return resource


def serialize(request: HttpRequest, resource: dict, fmt: str) -> bytes:
    pretty = request.GET.get("_pretty") == "true"
    if fmt == XML:
        from fhirserver.formats.xml import resource_to_xml

        return resource_to_xml(resource, pretty=pretty)
    return orjson.dumps(resource, option=orjson.OPT_INDENT_2 if pretty else 0)


def fhir_response(
    request: HttpRequest, body: str | bytes | dict | None, status: int = 200, shaped: bool = True
) -> HttpResponse:
    """A response carrying `body` (stored JSON text, or a dict) in the negotiated format."""
    fmt = response_format(request)
    if body is None:
        response = HttpResponse(status=status)
    elif isinstance(body, dict) or wants_shaping(request, fmt):
        resource = body if isinstance(body, dict) else orjson.loads(body)
        response = HttpResponse(serialize(request, shape(request, resource) if shaped else resource, fmt))
    else:
        response = HttpResponse(body)
    response.status_code = status
    if body is not None:
        response["Content-Type"] = CONTENT_TYPES[fmt]
    return response
