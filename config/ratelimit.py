"""Rate limits per client and endpoint class: 429 with Retry-After (RFC 6585 section 4).

Runs after authentication, so a FHIR request is counted against its token's client_id; requests
without one (the token endpoint, the login form) against the peer address. Classes: `read`
(GET of one resource or version), `search` (other GETs and POST _search), `write` (everything
else on the FHIR API) and `token` (token, introspection, revocation, login: brute-force targets).

Fixed windows of one minute, counted in Redis (REDIS_URL) with one round trip (INCR and EXPIRE
pipelined), so every worker and every server shares the counts. Without REDIS_URL each worker
counts for itself (development: no Redis needed), so the effective limit is multiplied by the
number of workers. If Redis fails, requests pass and the failure is logged: throttling is not
worth refusing clinical data.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time

import redis
from django.conf import settings
from django.http import HttpRequest, HttpResponse

from fhirserver.operation_outcome import outcome_response

logger = logging.getLogger(__name__)
WINDOW_SECONDS = 60
TOKEN_PATHS = frozenset({"/auth/token", "/auth/introspect", "/auth/revoke", "/auth/login"})
# /fhir/<Type>/<id> and /fhir/<Type>/<id>/_history/<vid>: reads of one resource.
_READ = re.compile(r"^/fhir/[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}(/_history/[A-Za-z0-9\-.]{1,64})?$")


def endpoint_class(method: str, path: str) -> str | None:
    """The class `method` on the tenant-relative `path` is counted in, or None (not limited)."""
    if path in TOKEN_PATHS:
        return "token" if method == "POST" else None
    if path != "/fhir" and not path.startswith("/fhir/"):
        return None
    if method in ("GET", "HEAD"):
        return "read" if _READ.match(path) else "search"
    return "search" if method == "POST" and path.endswith("/_search") else "write"


class Counter:
    """Requests per key in the current window: Redis when configured, else this process."""

    def __init__(self, url: str) -> None:
        self.redis = redis.Redis.from_url(url, socket_timeout=1) if url else None
        self.window = 0
        self.local: dict[str, int] = {}
        self.lock = threading.Lock()

    def hit(self, key: str, window: int) -> int:
        """Count one request under `key` in `window`; the count so far, this one included."""
        key = f"{key}:{window}"
        if self.redis is None:
            with self.lock:
                if window != self.window:  # only the current window's counts matter
                    self.window, self.local = window, {}
                self.local[key] = self.local.get(key, 0) + 1
                return self.local[key]
        pipeline = self.redis.pipeline(transaction=False)
        pipeline.incr(key)
        pipeline.expire(key, WINDOW_SECONDS * 2, nx=True)
        return pipeline.execute()[0]


class RateLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.counter = Counter(settings.REDIS_URL)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        tenant = getattr(request, "tenant", None)
        kind = endpoint_class(request.method, request.path_info) if tenant is not None else None
        limit = settings.RATE_LIMITS.get(kind, 0) if kind else 0
        if not limit:
            return self.get_response(request)
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        key = f"ratelimit:{tenant.slug}:{client_key(request)}:{kind}"
        try:
            count = self.counter.hit(key, window)
        except redis.RedisError:
            logger.warning("rate limit counter unavailable; request not counted", exc_info=True)
            return self.get_response(request)
        if count <= limit:
            return self.get_response(request)
        retry_after = max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))
        response = outcome_response(
            429, "throttled", f"More than {limit} {kind} requests a minute from this client; retry later"
        )
        response["Retry-After"] = str(retry_after)
        return response


def client_key(request: HttpRequest) -> str:
    """The token's client, else the peer address (behind a proxy: the proxy's)."""
    context = getattr(request, "auth_context", None)
    if context is not None and context.client_id:
        return "client:" + context.client_id
    return "ip:" + request.META.get("REMOTE_ADDR", "")
