"""The outermost safety net: an exception nothing else handled still answers in FHIR.

Django turns an exception escaping a view or middleware into its 500 page (with DEBUG, a page
holding the traceback and request data) at whichever layer it crossed. DEBUG_PROPAGATE_EXCEPTIONS
(config/settings.py) lets it travel up instead, to here: the client gets a 500 OperationOutcome
naming only the request id, which is what an operator searches the log for; the log line has the
traceback, the method and the path, never the query string or body (they may hold patient data).
Http404, PermissionDenied and SuspiciousOperation are still answered by Django on the way.
"""

from __future__ import annotations

import logging
import uuid

from django.http import HttpRequest, HttpResponse

from audit.middleware import REQUEST_ID_HEADER
from audit.request_context import request_id
from fhirserver.operation_outcome import outcome_response

logger = logging.getLogger("fhirserver.recovery")


class RecoveryMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            return self.get_response(request)
        except Exception:
            return server_error(request)


def server_error(request: HttpRequest) -> HttpResponse:
    """Log the exception being handled and answer 500 with the request id."""
    # RequestIdMiddleware has reset the log context on the way out: bring the id back for the log.
    rid = getattr(request, "request_id", None) or uuid.uuid4().hex
    token = request_id.set(rid)
    try:
        logger.exception(
            "unhandled error", extra={"method": request.method, "path": request.path, "status": 500}
        )
    finally:
        request_id.reset(token)
    response = outcome_response(
        500, "exception", f"Internal server error; the server log has the details under request id {rid}"
    )
    response[REQUEST_ID_HEADER] = rid
    return response
