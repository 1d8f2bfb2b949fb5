"""Asymmetric client authentication (private_key_jwt) at the token endpoint: Backend Services
client_credentials and an app's authorization code exchange, and every refused assertion."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.smart_support import (
    ASSERTION_TYPE,
    PASSWORD,
    REDIRECT_URI,
    SmartApp,
    client_assertion,
    pkce_pair,
    public_jwk,
    redirect_params,
    run_manage,
)
from tests.support import JsonServer
from tests.test_smart_launch import PATIENT_SCOPES


@pytest.fixture(scope="module")
def keys():
    return {
        "RS384": (rsa.generate_private_key(public_exponent=65537, key_size=2048), "rsa-1"),
        "ES384": (ec.generate_private_key(ec.SECP384R1()), "ec-1"),
    }


@pytest.fixture(scope="module")
def clients(world, keys, tmp_path_factory):
    jwks_file = tmp_path_factory.mktemp("jwks") / "jwks.json"
    jwks_file.write_text(
        json.dumps({"keys": [public_jwk(key, kid, alg) for alg, (key, kid) in keys.items()]})
    )
    suffix = uuid.uuid4().hex[:8]
    backend, app = f"backend{suffix}", f"asym{suffix}"
    run_manage(
        "register_client",
        "--tenant",
        "alpha",
        "--client-id",
        backend,
        "--backend",
        "--jwks-file",
        str(jwks_file),
        "--scopes",
        "system/*.rs",
    )
    run_manage(
        "register_client",
        "--tenant",
        "alpha",
        "--client-id",
        app,
        "--confidential",
        "--redirect-uri",
        REDIRECT_URI,
        "--jwks-file",
        str(jwks_file),
    )
    return {"backend": backend, "app": app}


def assertion(keys, client_id: str, token_url: str, alg: str = "ES384", **changes) -> str:
    """An assertion signed with the registered key of `alg`; `changes` tamper with it: claims,
    kid, key (another signing key) or sign_alg (another algorithm)."""
    key, kid = keys[alg]
    return client_assertion(
        changes.get("key", key),
        changes.get("kid", kid),
        changes.get("sign_alg", alg),
        client_id,
        token_url,
        **changes.get("claims", {}),
    )


def backend_request(world, data: dict) -> httpx.Response:
    url = f"{world['server']}/t/alpha/auth/token"
    return httpx.post(url, data=data, headers={"Accept": "application/json"}, timeout=30)


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_backend_services_token(world, keys, clients, alg):
    token_url = f"{world['server']}/t/alpha/auth/token"
    response = backend_request(
        world,
        {
            "grant_type": "client_credentials",
            "scope": "system/*.rs",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion(keys, clients["backend"], token_url, alg),
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"].lower() == "bearer" and isinstance(body["expires_in"], int)
    assert body["scope"] == "system/*.rs" and "refresh_token" not in body
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert (
        httpx.get(f"{world['server']}/t/alpha/fhir/Patient/{world['patient']}", headers=bearer).status_code
        == 200
    )


@pytest.mark.parametrize("scope", ["system/*.cruds", "patient/*.rs", "system/Observation.sr"])
def test_backend_scope_beyond_registration_is_invalid_scope(world, keys, clients, scope):
    token_url = f"{world['server']}/t/alpha/auth/token"
    response = backend_request(
        world,
        {
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion(keys, clients["backend"], token_url),
        },
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_scope"


def test_bad_grant_type_and_assertion_type(world, keys, clients):
    token_url = f"{world['server']}/t/alpha/auth/token"
    good = {"scope": "system/*.rs", "client_assertion_type": ASSERTION_TYPE}
    bad_grant = backend_request(
        world,
        {
            **good,
            "grant_type": "not_a_grant_type",
            "client_assertion": assertion(keys, clients["backend"], token_url),
        },
    )
    assert bad_grant.status_code == 400
    bad_type = backend_request(
        world,
        {
            **good,
            "grant_type": "client_credentials",
            "client_assertion_type": "not_an_assertion_type",
            "client_assertion": assertion(keys, clients["backend"], token_url),
        },
    )
    assert bad_type.status_code in (400, 401)


REFUSALS = {
    "wrong aud": {"claims": {"aud": "https://elsewhere.example/token"}},
    "expired": {"claims": {"exp": int(time.time()) - 60}},
    "exp too far ahead": {"claims": {"exp": int(time.time()) + 3600}},
    "iss differs from sub": {"claims": {"sub": "someone-else"}},
    "unknown kid": {"kid": "no-such-key"},
    "bad signature": {"key": ec.generate_private_key(ec.SECP384R1())},
    "unsupported alg": {"sign_alg": "HS256", "key": "a-shared-secret-that-is-long-enough-for-hs256"},
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refused_assertions(world, keys, clients, case):
    token_url = f"{world['server']}/t/alpha/auth/token"
    signed = assertion(keys, clients["backend"], token_url, **dict(REFUSALS[case]))
    response = backend_request(
        world,
        {
            "grant_type": "client_credentials",
            "scope": "system/*.rs",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": signed,
        },
    )
    assert response.status_code in (400, 401), case
    assert response.json()["error"] == "invalid_client"


def test_replayed_jti_is_refused(world, keys, clients):
    token_url = f"{world['server']}/t/alpha/auth/token"
    signed = assertion(keys, clients["backend"], token_url)
    data = {
        "grant_type": "client_credentials",
        "scope": "system/*.rs",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": signed,
    }
    assert backend_request(world, data).status_code == 200
    assert backend_request(world, data).status_code in (400, 401)


def test_asymmetric_app_launch_and_refresh(world, keys, clients):
    app = SmartApp(world["server"], "alpha", clients["app"])
    app.new_browser()
    verifier, challenge = pkce_pair()
    params = app.authorize_url_params(PATIENT_SCOPES, code_challenge=challenge, code_challenge_method="S256")
    redirect = app.follow(app.start(params), world["patient_user"], PASSWORD)
    token_url = f"{app.tenant_url}/auth/token"
    exchange = httpx.post(
        token_url,
        data={
            "grant_type": "authorization_code",
            "code": redirect_params(redirect)["code"],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion(keys, app.client_id, token_url, "RS384"),
        },
    )
    assert exchange.status_code == 200, exchange.text
    body = exchange.json()
    assert body["patient"] == world["patient"] and body["id_token"]
    refreshed = httpx.post(
        token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": body["refresh_token"],
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion(keys, app.client_id, token_url),
        },
    )
    assert refreshed.status_code == 200, refreshed.text


def test_keys_published_at_a_jwks_uri(world, keys):
    """A client may register a JWKS URL instead of its keys; the server fetches them."""
    published = {"keys": [public_jwk(key, kid, alg) for alg, (key, kid) in keys.items()]}
    jwks_server = JsonServer(lambda path: published if path == "/jwks.json" else None)
    client_id = f"byurl{uuid.uuid4().hex[:8]}"
    try:
        run_manage(
            "register_client",
            "--tenant",
            "alpha",
            "--client-id",
            client_id,
            "--backend",
            "--jwks-url",
            f"{jwks_server.url}/jwks.json",
            "--scopes",
            "system/*.rs",
        )
        token_url = f"{world['server']}/t/alpha/auth/token"
        response = backend_request(
            world,
            {
                "grant_type": "client_credentials",
                "scope": "system/*.rs",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion(keys, client_id, token_url),
            },
        )
        assert response.status_code == 200, response.text
        assert "/jwks.json" in jwks_server.requests
    finally:
        jwks_server.stop()
