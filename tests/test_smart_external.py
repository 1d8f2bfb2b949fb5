"""AUTH_MODE=external: tokens of an external OpenID Connect provider, verified against its JWKS
over HTTP, bound to the tenant by their audience, with key rotation picked up."""

from __future__ import annotations

import time
import uuid

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.smart_support import public_jwk
from tests.support import JsonServer, free_port, start_server


class Provider:
    """A stand-in identity provider on a real port: discovery document and a key set that the
    test can rotate."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.http = JsonServer(self.document)
        self.issuer = f"{self.http.url}/realms/test"

    def document(self, path: str) -> dict | None:
        if path.endswith("/.well-known/openid-configuration"):
            return {
                "issuer": self.issuer,
                "jwks_uri": self.issuer + "/certs",
                "authorization_endpoint": self.issuer + "/auth",
                "token_endpoint": self.issuer + "/token",
            }
        if path.endswith("/certs"):
            return {"keys": [public_jwk(key, kid, "RS256") for kid, key in self.keys.items()]}
        return None

    @property
    def jwks_fetches(self) -> int:
        return sum(path.endswith("/certs") for path in self.http.requests)

    def add_key(self) -> str:
        kid = uuid.uuid4().hex[:8]
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return kid

    def token(self, kid: str, aud: str, **claims) -> str:
        now = int(time.time())
        body = {
            "iss": self.issuer,
            "sub": "user-1",
            "aud": aud,
            "exp": now + 300,
            "iat": now,
            "scope": "openid user/*.cruds",
            **claims,
        }
        return jwt.encode(body, self.keys[kid], algorithm="RS256", headers={"kid": kid})


@pytest.fixture(scope="module")
def provider():
    running = Provider()
    yield running
    running.http.stop()


@pytest.fixture(scope="module")
def external_server(django_db_setup, provider, tmp_path_factory):
    env = {
        "AUTH_MODE": "external",
        "EXTERNAL_OIDC_ISSUER": provider.issuer,
        "EXTERNAL_OIDC_JWKS_MIN_REFETCH_SECONDS": "0",
        "WEB_CONCURRENCY": "1",
    }
    running = start_server(tmp_path_factory.mktemp("external") / "server.log", workers=1, env=env)
    yield running
    running.stop()


def test_provider_tokens_are_verified_and_tenant_bound(provider, external_server):
    kid = provider.add_key()
    alpha = f"{external_server.url}/t/alpha/fhir"
    good = {"Authorization": f"Bearer {provider.token(kid, alpha)}"}
    created = httpx.post(f"{alpha}/Patient", json={"resourceType": "Patient"}, headers=good)
    assert created.status_code == 201, created.text
    read = f"{alpha}/Patient/{created.json()['id']}"
    assert httpx.get(read, headers=good).status_code == 200

    beta_token = provider.token(kid, f"{external_server.url}/t/beta/fhir")
    assert httpx.get(read, headers={"Authorization": f"Bearer {beta_token}"}).status_code == 401
    foreign = provider.token(kid, alpha, iss="https://other-issuer.example")
    assert httpx.get(read, headers={"Authorization": f"Bearer {foreign}"}).status_code == 401
    expired = provider.token(kid, alpha, exp=int(time.time()) - 120)
    assert httpx.get(read, headers={"Authorization": f"Bearer {expired}"}).status_code == 401
    assert httpx.get(read).status_code == 401


def test_rotated_key_is_fetched_and_removed_key_refused(provider, external_server):
    alpha = f"{external_server.url}/t/alpha/fhir"
    old = provider.add_key()
    assert (
        httpx.get(
            f"{alpha}/Patient",
            params={"_count": 1},
            headers={"Authorization": f"Bearer {provider.token(old, alpha)}"},
        ).status_code
        == 200
    )
    fetches = provider.jwks_fetches
    new = provider.add_key()  # the provider rotates: a token arrives with a key id not yet cached
    rotated = httpx.get(
        f"{alpha}/Patient",
        params={"_count": 1},
        headers={"Authorization": f"Bearer {provider.token(new, alpha)}"},
    )
    assert rotated.status_code == 200 and provider.jwks_fetches == fetches + 1
    del provider.keys[old]
    unknown = provider.token(new, alpha)
    del provider.keys[new]
    provider.add_key()
    gone = httpx.get(f"{alpha}/Patient", headers={"Authorization": f"Bearer {unknown}"})
    assert gone.status_code == 200  # still cached: the provider's keys are trusted for the cache time
    forged_kid = jwt.encode(
        {"iss": provider.issuer, "sub": "x", "aud": alpha, "exp": int(time.time()) + 60},
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        algorithm="RS256",
        headers={"kid": "not-published"},
    )
    assert httpx.get(f"{alpha}/Patient", headers={"Authorization": f"Bearer {forged_kid}"}).status_code == 401


def test_discovery_points_to_the_provider(provider, external_server):
    config = httpx.get(f"{external_server.url}/t/alpha/fhir/.well-known/smart-configuration").json()
    assert config["authorization_endpoint"] == provider.issuer + "/auth"
    assert config["token_endpoint"] == provider.issuer + "/token"
    assert config["issuer"] == provider.issuer


def test_unreachable_provider_refuses_tokens_and_discovery_says_so(django_db_setup, tmp_path):
    issuer = f"http://127.0.0.1:{free_port()}/realms/gone"  # nothing listens there
    env = {"AUTH_MODE": "external", "EXTERNAL_OIDC_ISSUER": issuer, "WEB_CONCURRENCY": "1"}
    server = start_server(tmp_path / "server.log", workers=1, env=env)
    try:
        base = f"{server.url}/t/alpha/fhir"
        discovery = httpx.get(f"{base}/.well-known/smart-configuration")
        assert discovery.status_code == 503 and discovery.json()["error"] == "temporarily_unavailable"
        token = jwt.encode({"iss": issuer, "sub": "x", "aud": base, "exp": int(time.time()) + 60}, "k" * 32)
        assert httpx.get(f"{base}/Patient", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    finally:
        server.stop()
