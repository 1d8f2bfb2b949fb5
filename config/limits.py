"""Request body limits per endpoint: 413 (RFC 9110 15.5.14) as an OperationOutcome, decided
from Content-Length before a byte of the body is read.

Most requests carry one resource: FHIR_MAX_BODY_MB (1 MB by default). Batch/transaction Bundles
posted to the FHIR base and Binary uploads may be far larger (a Synthea transaction is 60 MB):
FHIR_MAX_BUNDLE_MB. The declared length is the whole story: Django reads at most Content-Length
bytes (a body without one, e.g. chunked, reads as empty), so a body cannot outgrow what was
checked here. Django's own DATA_UPLOAD_MAX_MEMORY_SIZE stays as a backstop at the larger limit.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from fhirserver.operation_outcome import outcome_response
from tenants.resolution import without_path_prefix

FHIR_BASES = frozenset({"/fhir", "/fhir/"})
BINARY = "/fhir/Binary"
MB = 1024 * 1024


def body_limit(method: str, path: str) -> int:
    """The largest body, in bytes, `method` on the tenant-relative `path` may carry."""
    if method == "POST" and path in FHIR_BASES:
        return settings.FHIR_MAX_BUNDLE_BYTES
    if method in ("POST", "PUT") and (path == BINARY or path.startswith(BINARY + "/")):
        return settings.FHIR_MAX_BUNDLE_BYTES
    return settings.FHIR_MAX_BODY_BYTES


def declared_length(request: HttpRequest) -> int:
    try:
        return max(int(request.META.get("CONTENT_LENGTH") or 0), 0)
    except ValueError:
        return 0  # Django reads an unparseable length as no body at all


class BodyLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = body_limit(request.method, without_path_prefix(request.path_info))
        if declared_length(request) <= limit:
            return self.get_response(request)
        # Answered unread: gunicorn's sync workers close the connection after every response.
        return outcome_response(
            413, "too-costly", f"The request body is larger than the {limit // MB} MB allowed here"
        )
