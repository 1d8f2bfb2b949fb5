"""Forwarded headers count only when a trusted reverse proxy sent them.

Behind a proxy, the URLs the server advertises (Location, paging links, the CapabilityStatement)
must carry the scheme and host the client used, which only the proxy knows: it says so in
X-Forwarded-Proto and X-Forwarded-Host, which Django reads (SECURE_PROXY_SSL_HEADER,
USE_X_FORWARDED_HOST). Any client can send those headers too, so this middleware deletes them
unless the connection comes from an address in TRUSTED_PROXIES. gunicorn trusts no peer for
them (config/gunicorn.py), so this is the only place that decides.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings

FORWARDED_HEADERS = ("HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST")


class TrustedProxyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.networks = settings.TRUSTED_PROXIES

    def __call__(self, request):
        if not self.is_trusted(request.META.get("REMOTE_ADDR", "")):
            for header in FORWARDED_HEADERS:
                request.META.pop(header, None)
        return self.get_response(request)

    def is_trusted(self, peer: str) -> bool:
        if not self.networks:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)
