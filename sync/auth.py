"""Outbound OAuth: access tokens for one linked patient at one provider.

Grants, in order of preference: the patient's refresh token (from a SMART launch at the
provider), else client credentials (SMART Backend Services). The client authenticates with a
JWT assertion (RS384/ES384, iss = sub = client id, aud = token URL, exp within five minutes, a
fresh jti) when the provider says so, else with its secret (HTTP Basic), else as a public client.
Tokens are refreshed before they expire and once more when the provider answers 401 (clocks and
revocations differ); a rotated refresh token and the access token are stored sealed at once.
Errors name the provider's OAuth error code, never a token or secret. `request_token` (the
client authentication and the POST) also exchanges the authorization code of a link made through
a SMART standalone launch (sync.linking).
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import jwt
from django.db import connection

from sync import secrets
from sync.models import LinkedPatient, Provider
from sync.shared import SharedConnection

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MARGIN_SECONDS = 30  # refresh this long before the provider's expiry (a tenth of short lifetimes)
ASSERTION_SECONDS = 240


def pkce_challenge(verifier: str) -> str:
    """The S256 code_challenge of a PKCE code_verifier (RFC 7636 4.2)."""
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class AuthFailed(Exception):
    pass


@dataclass
class Credentials:
    """Plaintext credentials of one run, opened from their sealed columns (never logged)."""

    client_secret: str
    private_key: str
    refresh_token: str
    access_token: str
    expires: float  # time.time() of expiry
    margin: float = MARGIN_SECONDS

    @classmethod
    def of(cls, provider: Provider, link: LinkedPatient) -> Credentials:
        expires = link.access_token_expires.timestamp() if link.access_token_expires else 0.0
        return cls(
            secrets.get(provider, "client_secret"),
            secrets.get(provider, "private_key"),
            secrets.get(link, "refresh_token"),
            secrets.get(link, "access_token"),
            expires,
        )


def client_assertion(provider: Provider, private_key: str) -> str:
    """SMART Backend Services authentication JWT."""
    now = int(time.time())
    claims = {
        "iss": provider.client_id,
        "sub": provider.client_id,
        "aud": provider.token_url,
        "exp": now + ASSERTION_SECONDS,
        "iat": now,
        "jti": uuid.uuid4().hex,
    }
    headers = {"kid": provider.key_id} if provider.key_id else None
    return jwt.encode(claims, private_key, algorithm=provider.jwt_alg, headers=headers)


class TokenSource:
    def __init__(
        self, provider: Provider, link: LinkedPatient, http: httpx.Client, database: SharedConnection
    ) -> None:
        self.provider, self.link, self.http, self.database = provider, link, http, database
        self.credentials = Credentials.of(provider, link)
        self.schema = connection.schema_name  # fetching threads seal rotated tokens for this tenant
        self._lock = threading.Lock()
        self.refreshes = 0

    def token(self) -> str:
        """A current access token (refreshed first when it is about to expire)."""
        current = self.credentials.access_token
        if current and self.credentials.expires - self.credentials.margin > time.time():
            return current
        return self.renew(current)

    def renew(self, stale: str) -> str:
        """A new access token, unless another thread already replaced `stale`."""
        with self._lock:
            credentials = self.credentials
            if credentials.access_token != stale and credentials.expires - credentials.margin > time.time():
                return credentials.access_token
            answer = self._grant()
            credentials.access_token = answer["access_token"]
            lifetime = float(answer.get("expires_in", 300))
            credentials.expires, credentials.margin = (
                time.time() + lifetime,
                min(MARGIN_SECONDS, lifetime / 10),
            )
            credentials.refresh_token = answer.get("refresh_token") or credentials.refresh_token
            self.refreshes += 1
            self._store()
            return credentials.access_token

    def _grant(self) -> dict:
        provider, credentials = self.provider, self.credentials
        if credentials.refresh_token:
            form = {"grant_type": "refresh_token", "refresh_token": credentials.refresh_token}
        else:
            form = {"grant_type": "client_credentials", "scope": provider.scope or "system/*.read"}
            if provider.audience:
                form["aud"] = provider.audience
        return request_token(provider, self.http, form, credentials.client_secret, credentials.private_key)

    def _store(self) -> None:
        link, credentials = self.link, self.credentials
        secrets.put(link, "refresh_token", credentials.refresh_token, self.schema)
        secrets.put(link, "access_token", credentials.access_token, self.schema)
        expires = datetime.fromtimestamp(credentials.expires, UTC)
        with self.database.cursor() as cursor:
            cursor.execute(
                "UPDATE sync_linked_patient SET refresh_token = %s, access_token = %s,"
                " access_token_expires = %s WHERE id = %s",
                [link.refresh_token, link.access_token, expires, link.id],
            )


def request_token(
    provider: Provider, http: httpx.Client, form: dict[str, str], client_secret: str, private_key: str
) -> dict:
    """POST `form` (a grant) to the provider's token URL with the client's authentication (JWT
    assertion, else HTTP Basic with its secret, else as a public client naming its client_id);
    the token response, or AuthFailed naming the grant and the provider's error code. The token
    renewal of a sync and the authorization code exchange of a link (sync.linking) both use it."""
    if not provider.token_url:
        raise AuthFailed(f"provider {provider.name} has no token URL")
    form, auth = dict(form), None
    if provider.use_jwt_assertion:
        form |= {
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(provider, private_key),
        }
    elif client_secret:
        auth = (provider.client_id, client_secret)
    else:
        form["client_id"] = provider.client_id
    try:
        response = http.post(provider.token_url, data=form, auth=auth)
    except httpx.HTTPError as exc:
        raise AuthFailed(f"token endpoint of {provider.name} unreachable ({type(exc).__name__})") from None
    if response.status_code != 200:
        code = _error_code(response)
        raise AuthFailed(f"token endpoint of {provider.name} refused the {form['grant_type']} grant: {code}")
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or not answer.get("access_token"):
        raise AuthFailed(f"token endpoint of {provider.name} answered without an access token")
    return answer


def _error_code(response: httpx.Response) -> str:
    try:
        code = response.json().get("error")
    except ValueError:
        code = None
    return f"HTTP {response.status_code}" + (
        f" {code}" if isinstance(code, str) and code.isascii() and len(code) < 40 else ""
    )
