"""Paging links for history and search: `_count` within the server maximum, and an opaque
keyset cursor (`_cursor`) instead of offsets, so pages do not shift under concurrent writes."""

from __future__ import annotations

import base64
from urllib.parse import urlencode

import orjson
from django.conf import settings
from django.http import HttpRequest

from fhirserver import errors

CURSOR = "_cursor"  # the page after this position
BEFORE = "_before"  # the page before this position (previous links)


def page_size(request: HttpRequest) -> int:
    raw = request.GET.get("_count")
    if raw is None:
        return settings.FHIR_PAGE_SIZE
    if not raw.isdigit():
        raise errors.bad_request("_count must be a non-negative integer")
    return min(int(raw), settings.FHIR_MAX_PAGE_SIZE)


def split_page(rows: list, limit: int) -> tuple[list, bool]:
    """Rows fetched with LIMIT limit + 1: this page, and whether another follows (with
    _count=0 there is no page to follow)."""
    return rows[:limit], len(rows) > limit > 0


def cursor(request: HttpRequest, name: str = CURSOR) -> tuple | None:
    raw = request.GET.get(name)
    if raw is None:
        return None
    try:
        return tuple(orjson.loads(base64.urlsafe_b64decode(raw.encode() + b"==")))
    except (ValueError, orjson.JSONDecodeError):
        raise errors.bad_request("_cursor is not a cursor this server issued") from None


def encode_cursor(position: tuple) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(position))).decode().rstrip("=")


def link(
    request: HttpRequest,
    position: tuple | None = None,
    pairs: list[tuple[str, str]] | None = None,
    direction: str = CURSOR,
) -> str:
    """This request as a GET URL, with the cursor replaced by `position` (None: first page).
    `pairs` are the request's parameters when they did not all come in the query string
    (POST _search); the link then names the type, not _search."""
    if pairs is None:
        pairs = [(k, v) for k, values in request.GET.lists() for v in values]
    params = [(k, v) for k, v in pairs if k not in (CURSOR, BEFORE)]
    if position is not None:
        params.append((direction, encode_cursor(position)))
    query = urlencode(params)
    path = request.path.removesuffix("/_search")
    return request.build_absolute_uri(path) + (f"?{query}" if query else "")
