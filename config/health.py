"""Liveness and readiness probes, outside any tenant."""

from __future__ import annotations

import logging

from django.db import DatabaseError, connection
from django.http import JsonResponse

from tenants.migration_status import unmigrated_schemas

logger = logging.getLogger(__name__)

_ready = False  # once every schema was migrated, stays so for this process's life


def healthz(request):
    """The process is alive and answering; nothing else is checked."""
    return JsonResponse({"status": "ok"})


def readyz(request):
    """The database answers and every schema has all migrations applied."""
    global _ready
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        if not _ready:
            pending = unmigrated_schemas()
            if pending:
                return JsonResponse({"status": "migrations pending", "schemas": len(pending)}, status=503)
            _ready = True
    except DatabaseError:
        logger.warning("readiness check: database unavailable", exc_info=True)
        return JsonResponse({"status": "database unavailable"}, status=503)
    return JsonResponse({"status": "ready"})
