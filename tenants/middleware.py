"""Tenant middleware: resolves the tenant, points the connection (schema and RLS setting) at it."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import connection
from django.urls import get_script_prefix, set_script_prefix

from fhirserver.operation_outcome import outcome_response
from tenants.resolution import resolve

logger = logging.getLogger(__name__)


class TenantMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        # Every request sets its schema (public or the tenant) before its handler runs; the
        # backend skips the round trip when a reused connection is already set that way.
        request.tenant = None
        address = resolve(request.get_host(), request.path_info)
        if address is None:
            connection.set_schema_to_public()
            return self.get_response(request)
        tenant = address.tenant
        if tenant is None:
            logger.info("unknown tenant requested")
            return outcome_response(404, "not-found", "There is no tenant at this address.")
        if not tenant.is_active:
            return outcome_response(403, "forbidden", "This tenant is suspended.")

        request.tenant = tenant
        request.urlconf = settings.TENANT_URLCONF
        connection.set_tenant(tenant)
        outer_prefix = get_script_prefix()
        if address.path_prefix:
            # Route the rest of the path, and let reverse() build /t/<slug>/... URLs.
            request.path_info = address.path_info
            set_script_prefix(outer_prefix.rstrip("/") + address.path_prefix + "/")
        try:
            return self.get_response(request)
        finally:
            set_script_prefix(outer_prefix)
