"""The fetch's database connection, shared with the threads that fetch in parallel.

Fetching threads need the database for small things: the rate limiter's shared state, progress,
and rotated tokens, which must be stored at once (a rotated refresh token lost with a crash
would unlink the patient). A thread's own Django connection would start in the public schema,
outside the tenant and its row-level security; so they use the connection of the thread that
runs the crawl, which the runner sets to the tenant, one statement at a time under a lock (Django
allows sharing a connection between threads once told: inc_thread_sharing). Statements
autocommit: that connection is not the one holding the import's transaction (sync.runner).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import DEFAULT_DB_ALIAS, connections


class SharedConnection:
    def __init__(self) -> None:
        # The wrapper object itself: `django.db.connection` would resolve per calling thread.
        self._connection = connections[DEFAULT_DB_ALIAS]
        self._lock = threading.Lock()

    @contextmanager
    def cursor(self) -> Iterator:
        with self._lock:
            with self._connection.cursor() as cursor:
                yield cursor

    @contextmanager
    def shared(self) -> Iterator[SharedConnection]:
        """While the block runs, other threads may use this connection (through `cursor`)."""
        self._connection.inc_thread_sharing()
        try:
            yield self
        finally:
            self._connection.dec_thread_sharing()
