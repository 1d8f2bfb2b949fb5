"""Per-provider request limiter, shared by every thread, worker, run and tenant through PostgreSQL.

A budget row (sync.budgets, public schema) keeps `next_request_at`: the earliest moment the next
request may start. Its key is the provider's FHIR base and client id, so every tenant syncing
from the same provider with the same client registration draws from one budget, as the
provider counts. Taking a slot is one upsert that moves the moment on by 60/rpm seconds and
returns the slot's start (the generic cell rate algorithm): requests leave evenly spaced, never
more than rpm in any minute plus one, whatever the number of workers, machines and tenants, and
the row lock orders them. A 429 pushes the moment to now + Retry-After for everyone. PostgreSQL
rather than Redis: the queue already needs it, and REDIS_URL is optional.
"""

from __future__ import annotations

import hashlib
import time

from sync.shared import SharedConnection

_TAKE = (
    "INSERT INTO public.sync_request_budget AS b (key, next_request_at)"
    " VALUES (%(key)s, clock_timestamp() + make_interval(secs => %(spacing)s))"
    " ON CONFLICT (key) DO UPDATE SET next_request_at ="
    " greatest(b.next_request_at, clock_timestamp()) + make_interval(secs => %(spacing)s)"
    " RETURNING extract(epoch FROM b.next_request_at - clock_timestamp()) - %(spacing)s"
)
_HOLD = (
    "INSERT INTO public.sync_request_budget AS b (key, next_request_at)"
    " VALUES (%(key)s, clock_timestamp() + make_interval(secs => %(seconds)s))"
    " ON CONFLICT (key) DO UPDATE SET next_request_at ="
    " greatest(b.next_request_at, clock_timestamp() + make_interval(secs => %(seconds)s))"
)


def budget_key(base_url: str, client_id: str) -> str:
    return hashlib.sha256(f"{base_url.rstrip('/')}\n{client_id}".encode()).hexdigest()


class Limiter:
    def __init__(self, key: str, requests_per_minute: int, database: SharedConnection) -> None:
        self.key = key
        self.spacing = 60.0 / requests_per_minute if requests_per_minute > 0 else 0.0
        self.database = database

    def wait(self) -> float:
        """Block until this request's slot; returns the seconds waited."""
        with self.database.cursor() as cursor:
            cursor.execute(_TAKE, {"key": self.key, "spacing": self.spacing})
            delay = float(cursor.fetchone()[0])
        if delay > 0:
            time.sleep(delay)
            return delay
        return 0.0

    def hold(self, seconds: float) -> None:
        """The provider said to wait (429 Retry-After): no request of anyone starts before then."""
        with self.database.cursor() as cursor:
            cursor.execute(_HOLD, {"key": self.key, "seconds": seconds})
