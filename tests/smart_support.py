"""Driving the SMART authorization pages over real HTTP, as a browser would: follow redirects,
fill the login form, pick a patient, approve the consent screen."""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlparse

import httpx
import jwt

from sync.auth import pkce_challenge
from tests.support import manage_command

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
REDIRECT_URI = "http://app.example/callback"
PASSWORD = "correct-horse-battery"  # of the test logins (tests/conftest.py `world`)
CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, pkce_challenge(verifier)


def public_jwk(private_key, kid: str, alg: str) -> dict:
    """The public JWK of `private_key`, as a client registers it for private_key_jwt."""
    public = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(private_key.public_key()))
    return {**public, "kid": kid, "alg": alg}


def client_assertion(private_key, kid: str, alg: str, client_id: str, token_url: str, **claims) -> str:
    """A client assertion as SMART Backend Services clients sign it (iss = sub = client id,
    aud = token URL, exp 4 minutes ahead, a fresh jti); `claims` override any of these."""
    body = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "exp": int(time.time()) + 240,
        "jti": secrets.token_hex(32),
        **claims,
    }
    return jwt.encode(body, private_key, algorithm=alg, headers={"kid": kid, "typ": "JWT"})


def run_manage(*args: str) -> str:
    result = manage_command(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@dataclass
class SmartApp:
    """A registered client of a tenant, and a browser session (cookies) for its user."""

    server_url: str
    tenant: str
    client_id: str
    secret: str | None = None
    browser: httpx.Client = field(default=None)

    @property
    def tenant_url(self) -> str:
        return f"{self.server_url}/t/{self.tenant}"

    @property
    def fhir_base(self) -> str:
        return f"{self.tenant_url}/fhir"

    def new_browser(self) -> httpx.Client:
        self.browser = httpx.Client(timeout=30)
        return self.browser

    def authorize_url_params(self, scope: str, **extra) -> dict:
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": REDIRECT_URI,
            "scope": scope,
            "state": uuid.uuid4().hex,
            "aud": self.fhir_base,
        }
        params.update(extra)
        return {key: value for key, value in params.items() if value is not None}

    def start(self, params: dict, method: str = "GET") -> httpx.Response:
        url = f"{self.tenant_url}/auth/authorize"
        if method == "POST":
            return self.browser.post(url, data=params)
        return self.browser.get(url, params=params)

    def follow(
        self, response: httpx.Response, username: str, password: str, patient_name: str = ""
    ) -> httpx.Response:
        """Follow the server's redirects through login, patient picker and consent (approving
        every offered scope that is ticked), until the redirect back to the app."""
        for _ in range(12):
            if response.status_code != 302:
                return response
            location = str(response.headers["location"])
            if location.startswith(REDIRECT_URI):
                return response
            url = str(response.url.join(location))
            page = self.browser.get(url)
            if "/auth/login" in url:
                response = self._post_form(page, {"username": username, "password": password})
            elif "/auth/authorize/patient" in url:
                picked = self.browser.get(url, params={"name": patient_name})
                patient = re.search(r'name="patient" value="([^"]+)"', picked.text).group(1)
                response = self._post_form(picked, {"patient": patient, "name": patient_name})
            elif "/auth/authorize/consent" in url:
                response = self.approve(page)
            else:
                response = page
        raise AssertionError("too many redirects")

    def approve(self, consent_page: httpx.Response, scopes: list[str] | None = None, decision: str = "allow"):
        ticked = (
            scopes
            if scopes is not None
            else re.findall(r'name="scope" value="([^"]+)" checked', consent_page.text)
        )
        return self._post_form(
            consent_page, {"scope": [s.replace("&amp;", "&") for s in ticked], "decision": decision}
        )

    def _post_form(self, page: httpx.Response, data: dict) -> httpx.Response:
        token = CSRF.search(page.text).group(1)
        return self.browser.post(str(page.url), data={"csrfmiddlewaretoken": token, **data})

    def token(self, data: dict, auth: bool = True, **kwargs) -> httpx.Response:
        basic = (self.client_id, self.secret) if auth and self.secret else None
        if self.secret is None:
            data = {"client_id": self.client_id, **data}
        return httpx.post(f"{self.tenant_url}/auth/token", data=data, auth=basic, timeout=30, **kwargs)

    def exchange(self, redirect: httpx.Response, verifier: str | None = None) -> httpx.Response:
        code = redirect_params(redirect)["code"]
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}
        if verifier is not None:
            data["code_verifier"] = verifier
        return self.token(data)


def redirect_params(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text[:500]
    location = str(response.headers["location"])
    assert location.startswith(REDIRECT_URI), location
    return {key: values[0] for key, values in parse_qs(urlparse(location).query).items()}


@contextmanager
def tenant_admin(server_url: str, username: str, tenant: str = "alpha") -> Iterator[httpx.Client]:
    """A browser session logged into the tenant's Django admin as `username` (password PASSWORD;
    DEBUG servers only: the CSRF cookie travels over plain HTTP)."""
    admin = f"{server_url}/t/{tenant}/admin"
    with httpx.Client(base_url=admin, follow_redirects=True, timeout=30) as browser:
        login = browser.get("/login/")
        form = {
            "csrfmiddlewaretoken": CSRF.search(login.text).group(1),
            "username": username,
            "password": PASSWORD,
            "next": f"/t/{tenant}/admin/",
        }
        assert browser.post("/login/", data=form).status_code == 200
        yield browser
