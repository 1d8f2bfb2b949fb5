"""HTTP to a provider's FHIR API: limits, retries, token refresh and paging in one place.

Every request waits for its slot (sync.limiter), carries a current token, and has a timeout.
429 holds every requester for Retry-After (capped) and tries again; 5xx, timeouts and broken
connections try again after a jittered exponential backoff; a 401 renews the token once. After
MAX_ATTEMPTS (or MAX_THROTTLED 429s) the request fails with FetchFailed, whose message names the
request kind and the last answer: never a token, query value or patient id. Searches follow
`next` links to the end, but only on the provider's own origin (the token goes nowhere else).
Binary reads ask for FHIR JSON and accept the raw content too (servers that ignore Accept).
"""

from __future__ import annotations

import base64
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx
import orjson

from sync.auth import TokenSource
from sync.limiter import Limiter

MAX_ATTEMPTS = 5
MAX_THROTTLED = 30
MAX_RETRY_AFTER = 120.0
BACKOFF_BASE, BACKOFF_CAP = 0.5, 20.0
TIMEOUT = httpx.Timeout(30.0, connect=10.0)
FHIR_JSON = frozenset({"application/fhir+json", "application/json+fhir", "application/json"})


class FetchFailed(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the provider's refusal (4xx), None when it kept failing


@dataclass
class Stats:
    """What a run did, for the snapshot row and the progress display; thread-safe."""

    requests: int = 0
    retries: int = 0
    waited: float = 0.0
    fetched: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **amounts: float) -> None:
        with self._lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)


class Client:
    def __init__(self, base_url: str, http: httpx.Client, tokens: TokenSource, limiter: Limiter) -> None:
        self.base_url = base_url.rstrip("/")
        self.http, self.tokens, self.limiter = http, tokens, limiter
        self.stats = Stats()
        self._origin = _origin(self.base_url)

    def get(self, url: str, params: dict | None = None, kind: str = "request") -> httpx.Response:
        """The provider's answer to GET `url` (relative to the base, or absolute on its origin):
        any status below 500 except 429 and a second 401; FetchFailed when it keeps failing."""
        if "://" not in url:
            url = f"{self.base_url}/{url}"
        if _origin(url) != self._origin:
            raise FetchFailed(f"{kind}: the provider linked to another origin, not followed")
        attempts = throttled = 0
        renewed = False
        last = "no answer"
        while attempts < MAX_ATTEMPTS and throttled < MAX_THROTTLED:
            self.stats.add(waited=self.limiter.wait())
            token = self.tokens.token()
            self.stats.add(requests=1)
            try:
                response = self.http.get(url, params=params, headers=_headers(token))
            except httpx.TimeoutException:
                last, attempts = "timed out", attempts + 1
                self._back_off(attempts)
                continue
            except httpx.TransportError as exc:
                last, attempts = f"connection failed ({type(exc).__name__})", attempts + 1
                self._back_off(attempts)
                continue
            status = response.status_code
            if status == 429:
                throttled += 1
                pause = _retry_after(response)
                self.limiter.hold(pause)
                self.stats.add(retries=1)  # the wait itself is counted by the limiter
                last = "429 Too Many Requests"
                continue
            if status == 401 and not renewed:
                renewed = True
                self.tokens.renew(token)
                self.stats.add(retries=1)
                continue
            if status >= 500:
                last, attempts = f"HTTP {status}", attempts + 1
                self._back_off(attempts)
                continue
            return response
        raise FetchFailed(f"{kind} failed after {attempts + throttled} tries: {last}")

    def _back_off(self, attempt: int) -> None:
        if attempt >= MAX_ATTEMPTS:
            return
        pause = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)  # noqa: S311 (jitter, not a secret)
        self.stats.add(retries=1)
        time.sleep(pause)

    def json(self, url: str, params: dict | None = None, kind: str = "request") -> dict | None:
        """The JSON body of a 2xx answer; None for 404/410 (gone or never there); FetchFailed else."""
        response = self.get(url, params, kind)
        if response.status_code in (404, 410):
            return None
        if response.status_code >= 300:
            raise FetchFailed(f"{kind} refused: HTTP {response.status_code}", response.status_code)
        try:
            body = orjson.loads(response.content)  # 3-5x json's speed, and fetch threads share the GIL
        except orjson.JSONDecodeError:
            raise FetchFailed(f"{kind}: the answer is not JSON") from None
        if not isinstance(body, dict):
            raise FetchFailed(f"{kind}: the answer is not a JSON object")
        return body

    def binary(self, url: str, kind: str = "Binary read") -> dict | None:
        """A Binary resource: the FHIR JSON the request asks for (Accept: application/fhir+json),
        or, from a server that answers the raw content anyway, a Binary made of it (contentType
        from Content-Type, data base64). None for 404/410; FetchFailed else."""
        response = self.get(url, kind=kind)
        if response.status_code in (404, 410):
            return None
        if response.status_code >= 300:
            raise FetchFailed(f"{kind} refused: HTTP {response.status_code}", response.status_code)
        content_type = response.headers.get("Content-Type", "") or "application/octet-stream"
        if content_type.split(";")[0].strip().lower() in FHIR_JSON:
            try:
                body = orjson.loads(response.content)
            except orjson.JSONDecodeError:
                body = None
            if isinstance(body, dict) and body.get("resourceType") == "Binary":
                return body
        return {
            "resourceType": "Binary",
            "contentType": content_type,
            "data": base64.b64encode(response.content).decode(),
        }

    def search(self, url: str, params: dict | None = None, kind: str = "search") -> Iterator[dict]:
        """Every resource of a search (or $everything), page after page through `next` links."""
        pages = 0
        while url:
            bundle = self.json(url, params, kind)
            if bundle is None or bundle.get("resourceType") != "Bundle":
                raise FetchFailed(f"{kind}: the answer is not a Bundle")
            pages += 1
            for entry in bundle.get("entry") or []:
                resource = entry.get("resource") if isinstance(entry, dict) else None
                if (
                    isinstance(resource, dict)
                    and (entry.get("search") or {}).get("mode", "match") != "outcome"
                ):
                    if resource.get("resourceType") != "OperationOutcome":
                        self.stats.add(fetched=1)
                        yield resource
            url = next(
                (link.get("url") for link in bundle.get("link") or [] if link.get("relation") == "next"), ""
            )
            params = None  # a next link carries the whole query
            if pages > 10_000:
                raise FetchFailed(f"{kind}: more than 10000 pages, the provider's paging loops")


def _headers(token: str) -> dict:
    return {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _retry_after(response: httpx.Response) -> float:
    """Retry-After in seconds (delta or HTTP date), 1 s when absent or unreadable, capped."""
    value = response.headers.get("Retry-After", "")
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            seconds = 1.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
