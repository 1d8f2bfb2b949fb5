"""The audit middleware of the chain (ARCHITECTURE.md): request id and access log at its start,
the audit trail after authentication."""

from __future__ import annotations

import logging
import re
import time
import uuid

from django.conf import settings
from django.db import connection, transaction
from django.urls import Resolver404, resolve
from psycopg.pq import TransactionStatus

from audit import trail
from audit.request_context import request_id
from smart_auth.middleware import FHIR_PREFIX, PUBLIC_PATHS

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


WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class AuditMiddleware:
    """One AuditEvent per FHIR request of a tenant (after AuthContextMiddleware, which records
    the requests it refuses itself). Writes run in one database transaction with their record,
    appended last, so no write is committed without it; other requests append theirs once the
    response is ready, before it is sent."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not _audited(request):
            return self.get_response(request)
        if request.method not in WRITE_METHODS:
            response = self.get_response(request)
            trail.record(request, response)
            return response
        return self._write(request)

    def _write(self, request):
        before = _deleted_patients(request)
        with transaction.atomic():
            response = self.get_response(request)
            if _usable():
                trail.record(request, response, before)
                return response
            # The interaction failed inside the transaction (a database error, rolled back):
            # its record is written alone, after the rollback.
            transaction.set_rollback(True)
        trail.record(request, response, before)
        return response


def _audited(request) -> bool:
    return (
        settings.AUDIT_ENABLED
        and getattr(request, "tenant", None) is not None
        and getattr(request, "auth_context", None) is not None
        and request.path_info.startswith(FHIR_PREFIX)
        and request.path_info not in PUBLIC_PATHS
    )


def _deleted_patients(request) -> set[str]:
    """A delete removes the index that says whose the resource was: ask it first."""
    if request.method != "DELETE":
        return set()
    try:
        request.resolver_match = resolve(request.path_info, urlconf=getattr(request, "urlconf", None))
    except Resolver404:
        return set()
    return trail.instance_patients(request)


def _usable() -> bool:
    status = connection.connection.info.transaction_status if connection.connection else None
    return not connection.needs_rollback and status != TransactionStatus.INERROR
