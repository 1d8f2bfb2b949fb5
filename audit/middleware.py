"""The start of the middleware chain (ARCHITECTURE.md): request id, then the access log."""

from __future__ import annotations

import logging
import re
import time
import uuid

from audit.request_context import request_id

logger = logging.getLogger("fhirserver.access")

REQUEST_ID_HEADER = "X-Request-ID"
# A client's id is kept only if it is short and plain, so it is safe in logs and headers.
_ACCEPTABLE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")


class RequestIdMiddleware:
    """Honour X-Request-ID (or make one), expose it to logging, echo it on the response."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        offered = request.headers.get(REQUEST_ID_HEADER, "")
        rid = offered if _ACCEPTABLE_ID.match(offered) else uuid.uuid4().hex
        request.request_id = rid
        token = request_id.set(rid)
        try:
            response = self.get_response(request)
        finally:
            request_id.reset(token)
        response[REQUEST_ID_HEADER] = rid
        return response


class AccessLogMiddleware:
    """One log line per request. The query string is never logged: FHIR searches put PHI there."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        tenant = getattr(request, "tenant", None)
        logger.info(
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "tenant": tenant.slug if tenant is not None else None,
            },
        )
        return response
