"""The current request's id, readable from anywhere in the request (logging reads it)."""

from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
