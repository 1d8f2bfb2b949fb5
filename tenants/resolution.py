"""Which tenant a request is for: by path (/t/<slug>/..., works on localhost without DNS) or by
host (<slug>.<PARENT_DOMAIN>, or a custom Domain row)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.conf import settings
from django.http.request import split_domain_port

from tenants.models import Domain, Tenant

_PATH = re.compile(r"^/" + re.escape(settings.TENANT_PATH_PREFIX) + r"/(?P<slug>[^/]*)(?P<rest>/.*)?\Z", re.S)


@dataclass(frozen=True)
class TenantAddress:
    """Where a request names a tenant. `tenant` is None when that tenant does not exist."""

    tenant: Tenant | None
    path_prefix: str  # "/t/<slug>" for path addressing, "" for host addressing
    path_info: str  # the path with the prefix removed


def resolve(host: str, path_info: str) -> TenantAddress | None:
    """The tenant address of a request, or None for the public (tenant-less) site."""
    hostname, _port = split_domain_port(host)
    parent = settings.PARENT_DOMAIN
    if hostname.endswith("." + parent):
        label = hostname[: -len(parent) - 1]
        tenant = Tenant.objects.filter(slug=label).first() if "." not in label else None
        return TenantAddress(tenant, "", path_info)
    domain = Domain.objects.select_related("tenant").filter(domain=hostname).first()
    if domain is not None:
        return TenantAddress(domain.tenant, "", path_info)
    match = _PATH.match(path_info)
    if match is None:
        return None
    tenant = Tenant.objects.filter(slug=match["slug"]).first()
    return TenantAddress(tenant, f"/{settings.TENANT_PATH_PREFIX}/{match['slug']}", match["rest"] or "/")
