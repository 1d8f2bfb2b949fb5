"""Per-provider request limiter, shared by every thread, worker and run through PostgreSQL.

The provider row keeps `next_request_at`: the earliest moment the next request may start. Taking
a slot is one UPDATE that moves it on by 60/rpm seconds and returns the slot's start (the
generic cell rate algorithm): requests leave evenly spaced, never more than rpm in any minute
plus one, whatever the number of workers and machines, and the row lock orders them. A 429
pushes the moment to now + Retry-After for everyone. PostgreSQL rather than Redis: the queue
already needs it, the state then lives (and is cleaned up) with the provider, and REDIS_URL is
optional.
"""

from __future__ import annotations

import time

from sync.shared import SharedConnection

_TAKE = (
    "UPDATE sync_provider SET next_request_at ="
    " greatest(coalesce(next_request_at, clock_timestamp()), clock_timestamp()) + make_interval(secs => %s)"
    " WHERE id = %s RETURNING extract(epoch FROM next_request_at - clock_timestamp()) - %s"
)
_HOLD = (
    "UPDATE sync_provider SET next_request_at ="
    " greatest(coalesce(next_request_at, clock_timestamp()), clock_timestamp() + make_interval(secs => %s))"
    " WHERE id = %s"
)


class Limiter:
    def __init__(self, provider_id: object, requests_per_minute: int, database: SharedConnection) -> None:
        self.provider_id = provider_id
        self.spacing = 60.0 / requests_per_minute if requests_per_minute > 0 else 0.0
        self.database = database

    def wait(self) -> float:
        """Block until this request's slot; returns the seconds waited."""
        with self.database.cursor() as cursor:
            cursor.execute(_TAKE, [self.spacing, self.provider_id, self.spacing])
            delay = float(cursor.fetchone()[0])
        if delay > 0:
            time.sleep(delay)
            return delay
        return 0.0

    def hold(self, seconds: float) -> None:
        """The provider said to wait (429 Retry-After): no request of anyone starts before then."""
        with self.database.cursor() as cursor:
            cursor.execute(_HOLD, [seconds, self.provider_id])
