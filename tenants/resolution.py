"""Which tenant a request is for: by path (/t/<slug>/..., works on localhost without DNS) or by
host (<slug>.<PARENT_DOMAIN>, or a custom Domain row)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.http.request import split_domain_port

from tenants.models import Tenant

_PATH = re.compile(r"^/" + re.escape(settings.TENANT_PATH_PREFIX) + r"/(?P<slug>[^/]*)(?P<rest>/.*)?\Z", re.S)


@dataclass(frozen=True)
class TenantAddress:
    """Where a request names a tenant. `tenant` is None when that tenant does not exist."""

    tenant: Tenant | None
    path_prefix: str  # "/t/<slug>" for path addressing, "" for host addressing
    path_info: str  # the path with the prefix removed


def resolve(host: str, path_info: str) -> TenantAddress | None:
    """The tenant address of a request, or None for the public (tenant-less) site.

    At most one query per request, in raw SQL: this runs before every FHIR read.
    """
    hostname, _port = split_domain_port(host)
    parent = settings.PARENT_DOMAIN
    if hostname.endswith("." + parent):
        label = hostname[: -len(parent) - 1]
        return TenantAddress(_tenant(TENANT_BY_SLUG, label) if "." not in label else None, "", path_info)
    if hostname != parent and not _is_ip(hostname):
        tenant = _tenant(TENANT_BY_DOMAIN, hostname)
        if tenant is not None:
            return TenantAddress(tenant, "", path_info)
    match = _PATH.match(path_info)
    if match is None:
        return None
    tenant = _tenant(TENANT_BY_SLUG, match["slug"])
    return TenantAddress(tenant, f"/{settings.TENANT_PATH_PREFIX}/{match['slug']}", match["rest"] or "/")


def without_path_prefix(path_info: str) -> str:
    """The path with a leading /t/<slug> removed, decided by the path alone (no look-up).

    For code that runs before the tenant is resolved and only needs the tenant-relative path.
    """
    match = _PATH.match(path_info)
    return path_info if match is None else match["rest"] or "/"


_COLUMNS = "t.id, t.schema_name, t.slug, t.name, t.status, t.created"
# Schema-qualified, so the lookup is right whatever search_path the (reused) connection has.
TENANT_BY_SLUG = f"SELECT {_COLUMNS} FROM public.tenants_tenant t WHERE t.slug = %s"
TENANT_BY_DOMAIN = (
    f"SELECT {_COLUMNS} FROM public.tenants_tenant t"
    " JOIN public.tenants_domain d ON d.tenant_id = t.id WHERE d.domain = %s"
)


def _tenant(query: str, key: str) -> Tenant | None:
    with connection.cursor() as cursor:
        cursor.execute(query, [key])
        row = cursor.fetchone()
    if row is None:
        return None
    return Tenant(**dict(zip(("id", "schema_name", "slug", "name", "status", "created"), row, strict=True)))


def _is_ip(hostname: str) -> bool:
    try:
        ipaddress.ip_address(hostname.strip("[]"))
    except ValueError:
        return False
    return True
