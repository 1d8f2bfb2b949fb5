"""The SMART authorization server over real HTTP: discovery, standalone and EHR launches,
tokens, OpenID Connect, refresh, introspection, revocation, and the refusals."""

from __future__ import annotations

import base64
import json
import uuid

import httpx
import jwt
import pytest

from tests.smart_support import PASSWORD, REDIRECT_URI, SmartApp, pkce_pair, redirect_params, run_manage

PATIENT_SCOPES = "launch/patient openid fhirUser offline_access patient/*.rs"


def standalone_launch(world, app: SmartApp, scope: str = PATIENT_SCOPES, method: str = "GET") -> dict:
    app.new_browser()
    verifier, challenge = pkce_pair()
    params = app.authorize_url_params(scope, code_challenge=challenge, code_challenge_method="S256")
    redirect = app.follow(app.start(params, method), world["patient_user"], PASSWORD)
    assert redirect_params(redirect)["state"] == params["state"]
    response = app.exchange(redirect, verifier)
    assert response.status_code == 200, response.text
    return response.json() | {"_headers": dict(response.headers)}


def test_discovery_documents(smart_server):
    base = f"{smart_server.url}/t/alpha/fhir"
    smart = httpx.get(f"{base}/.well-known/smart-configuration", headers={"Accept": "application/json"})
    assert smart.status_code == 200
    assert smart.headers["content-type"].startswith("application/json")
    config = smart.json()
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert "authorization_code" in config["grant_types_supported"]
    for capability in (
        "launch-standalone",
        "launch-ehr",
        "sso-openid-connect",
        "context-ehr-encounter",
        "permission-v1",
        "permission-v2",
        "authorize-post",
        "client-confidential-asymmetric",
    ):
        assert capability in config["capabilities"]
    oidc = httpx.get(f"{config['issuer']}/.well-known/openid-configuration").json()
    assert oidc["issuer"] == base
    assert "RS256" in oidc["id_token_signing_alg_values_supported"]
    for name in (
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "response_types_supported",
        "subject_types_supported",
    ):
        assert oidc[name]
    keys = httpx.get(config["jwks_uri"]).json()["keys"]
    assert keys and all(key["kty"] == "RSA" and key["kid"] for key in keys)


def test_standalone_patient_launch_with_openid(world):
    app = world["confidential"]
    body = standalone_launch(world, app)
    assert body["token_type"] == "Bearer"
    assert isinstance(body["expires_in"], int)
    assert body["patient"] == world["patient"]
    assert set(body["scope"].split()) == set(PATIENT_SCOPES.split())
    assert body["refresh_token"] and body["need_patient_banner"] in (True, False)
    assert "no-store" in body["_headers"]["cache-control"] and "no-cache" in body["_headers"]["pragma"]
    assert httpx.get(body["smart_style_url"]).json()

    # The id token verifies with the published key and names a readable fhirUser.
    header = jwt.get_unverified_header(body["id_token"])
    assert header["alg"] == "RS256"
    jwks = httpx.get(f"{app.tenant_url}/auth/jwks").json()
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    claims = jwt.decode(body["id_token"], jwt.PyJWK(key).key, algorithms=["RS256"], audience=app.client_id)
    assert claims["iss"] == app.fhir_base
    assert claims["fhirUser"] == f"Patient/{world['patient']}"
    fhir_user = httpx.get(
        f"{app.fhir_base}/{claims['fhirUser']}", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert fhir_user.status_code == 200 and fhir_user.json()["resourceType"] == "Patient"


def test_authorize_by_form_post(world):
    body = standalone_launch(world, world["confidential"], method="POST")
    assert body["patient"] == world["patient"]


def test_refresh_with_and_without_narrower_scope(world):
    app = world["confidential"]
    body = standalone_launch(world, app)
    refreshed = app.token({"grant_type": "refresh_token", "refresh_token": body["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    assert "no-store" in refreshed.headers["cache-control"] and "no-cache" in refreshed.headers["pragma"]
    first = refreshed.json()
    assert first["patient"] == world["patient"]
    assert set(first["scope"].split()) <= set(body["scope"].split())
    assert first["refresh_token"] != body["refresh_token"]  # this client rotates

    narrower = app.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": first["refresh_token"],
            "scope": "patient/*.rs offline_access",
        }
    )
    assert narrower.status_code == 200, narrower.text
    assert set(narrower.json()["scope"].split()) == {"patient/*.rs", "offline_access"}

    wider = app.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": narrower.json()["refresh_token"],
            "scope": "user/*.cruds",
        }
    )
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"

    # The rotated-away refresh token is dead.
    replay = app.token({"grant_type": "refresh_token", "refresh_token": body["refresh_token"]})
    assert replay.status_code == 400


def test_refresh_without_rotation_keeps_the_token(world):
    app = world["keeping"]
    body = standalone_launch(world, app)
    refreshed = app.token({"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}).json()
    assert refreshed.get("refresh_token", body["refresh_token"]) == body["refresh_token"]
    again = app.token({"grant_type": "refresh_token", "refresh_token": body["refresh_token"]})
    assert again.status_code == 200


def test_random_refresh_token_is_refused(world):
    response = world["confidential"].token(
        {"grant_type": "refresh_token", "refresh_token": str(uuid.uuid4())}
    )
    assert response.status_code in (400, 401)


def test_introspection(world):
    app = world["confidential"]
    body = standalone_launch(world, app)
    url = f"{app.tenant_url}/auth/introspect"
    active = httpx.post(url, data={"token": body["access_token"]}, auth=(app.client_id, app.secret)).json()
    assert active["active"] is True
    assert active["client_id"] == app.client_id
    assert set(active["scope"].split()) == set(body["scope"].split())
    assert active["patient"] == world["patient"]
    id_claims = jwt.decode(body["id_token"], options={"verify_signature": False})
    assert active["iss"] == id_claims["iss"] and active["sub"] == id_claims["sub"]
    inactive = httpx.post(url, data={"token": "invalid_token_value"}, auth=(app.client_id, app.secret))
    assert inactive.status_code == 200 and inactive.json() == {"active": False}
    anonymous = httpx.post(url, data={"token": body["access_token"]})
    assert anonymous.status_code == 401


def test_revocation_kills_access_and_refresh_tokens(world):
    app = world["confidential"]
    body = standalone_launch(world, app)
    read = f"{app.fhir_base}/Patient/{world['patient']}"
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert httpx.get(read, headers=bearer).status_code == 200
    revoke = f"{app.tenant_url}/auth/revoke"
    auth = (app.client_id, app.secret)
    assert httpx.post(revoke, data={"token": body["access_token"]}, auth=auth).status_code == 200
    assert httpx.post(revoke, data={"token": body["refresh_token"]}, auth=auth).status_code == 200
    assert httpx.get(read, headers=bearer).status_code == 401
    refresh = app.token({"grant_type": "refresh_token", "refresh_token": body["refresh_token"]})
    assert refresh.status_code in (400, 401)


def test_public_client_needs_pkce_s256(world):
    app = world["public"]
    app.new_browser()
    no_pkce = redirect_params(app.start(app.authorize_url_params(PATIENT_SCOPES)))
    assert no_pkce["error"] == "invalid_request" and "code" not in no_pkce
    _, challenge = pkce_pair()
    plain = app.authorize_url_params(PATIENT_SCOPES, code_challenge=challenge, code_challenge_method="plain")
    assert redirect_params(app.start(plain))["error"] == "invalid_request"
    body = standalone_launch(world, app)
    assert body["patient"] == world["patient"] and body["id_token"]


@pytest.mark.parametrize("verifier", [None, "", "wrong", "challenge"])
def test_bad_pkce_verifier_is_refused(world, verifier):
    app = world["confidential"]
    app.new_browser()
    _, challenge = pkce_pair()
    params = app.authorize_url_params(PATIENT_SCOPES, code_challenge=challenge, code_challenge_method="S256")
    redirect = app.follow(app.start(params), world["patient_user"], PASSWORD)
    sent = {"wrong": pkce_pair()[0], "challenge": challenge}.get(verifier, verifier)
    response = app.exchange(redirect, sent)
    assert response.status_code in (400, 401), response.text


def test_wrong_aud_gets_no_code(world):
    app = world["confidential"]
    app.new_browser()
    params = app.authorize_url_params(PATIENT_SCOPES, aud="https://inferno.healthit.gov/invalid_aud")
    answer = redirect_params(app.start(params))
    assert "code" not in answer and answer["error"] == "invalid_request"
    assert answer["state"] == params["state"]


def test_unregistered_redirect_uri_is_not_followed(world):
    app = world["confidential"]
    app.new_browser()
    response = app.start(app.authorize_url_params(PATIENT_SCOPES, redirect_uri="http://evil.example/cb"))
    assert response.status_code == 400 and "location" not in response.headers


def test_bad_code_and_bad_client(world):
    app = world["confidential"]
    bad_code = app.token(
        {"grant_type": "authorization_code", "code": "BAD_CODE", "redirect_uri": REDIRECT_URI}
    )
    assert bad_code.status_code == 400
    app.new_browser()
    params = app.authorize_url_params(PATIENT_SCOPES)
    redirect = app.follow(app.start(params), world["patient_user"], PASSWORD)
    code = redirect_params(redirect)["code"]
    bad_client = httpx.post(
        f"{app.tenant_url}/auth/token",
        auth=("BAD_CLIENT_ID", app.secret),
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI},
    )
    assert bad_client.status_code in (400, 401)


def test_code_is_single_use(world):
    app = world["confidential"]
    app.new_browser()
    redirect = app.follow(
        app.start(app.authorize_url_params(PATIENT_SCOPES)), world["patient_user"], PASSWORD
    )
    first = app.exchange(redirect)
    assert first.status_code == 200
    assert app.exchange(redirect).status_code == 400


def test_denied_consent_redirects_access_denied(world):
    app = world["confidential"]
    app.new_browser()
    params = app.authorize_url_params(PATIENT_SCOPES)
    response = app.start(params)
    for _ in range(6):
        location = str(response.headers["location"])
        page = app.browser.get(str(response.url.join(location)))
        if "/auth/login" in location:
            response = app._post_form(page, {"username": world["patient_user"], "password": PASSWORD})
        elif "/consent" in location:
            answer = redirect_params(app.approve(page, decision="deny"))
            assert answer["error"] == "access_denied" and answer["state"] == params["state"]
            return
        else:
            response = page
    raise AssertionError("never reached the consent screen")


def test_consent_can_narrow_to_categories(world):
    app = world["confidential"]
    app.new_browser()
    scope = "launch/patient openid fhirUser patient/Observation.rs patient/Patient.rs"
    response = app.start(app.authorize_url_params(scope))
    while "/consent" not in str(response.headers["location"]):
        location = str(response.headers["location"])
        page = app.browser.get(str(response.url.join(location)))
        if "/auth/login" in location:
            response = app._post_form(page, {"username": world["patient_user"], "password": PASSWORD})
        else:
            response = page
    page = app.browser.get(str(response.url.join(str(response.headers["location"]))))
    laboratory = "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
    assert laboratory in page.text
    chosen = ["launch/patient", "openid", "fhirUser", "patient/Patient.rs", laboratory]
    body = app.exchange(app.approve(page, chosen)).json()
    assert set(body["scope"].split()) == set(chosen)


def test_practitioner_picks_the_patient(world):
    app = world["confidential"]
    app.new_browser()
    params = app.authorize_url_params("launch/patient openid fhirUser user/*.rs")
    redirect = app.follow(app.start(params), world["doctor_user"], PASSWORD, patient_name=world["family"])
    body = app.exchange(redirect).json()
    assert body["patient"] == world["patient"]
    claims = jwt.decode(body["id_token"], options={"verify_signature": False})
    assert claims["fhirUser"] == f"Practitioner/{world['practitioner']}"


def test_ehr_launch_carries_patient_and_encounter(world):
    app = world["confidential"]
    output = run_manage(
        "create_launch",
        "--tenant",
        "alpha",
        "--patient",
        world["patient"],
        "--encounter",
        world["encounter"],
        "--client",
        app.client_id,
        "--fhir-base",
        app.fhir_base,
    )
    launch, launch_url = output.splitlines()
    assert launch_url.startswith("http://app.example/launch?iss=")
    app.new_browser()
    params = app.authorize_url_params("launch openid fhirUser offline_access user/*.rs", launch=launch)
    body = app.exchange(app.follow(app.start(params), world["doctor_user"], PASSWORD)).json()
    assert body["patient"] == world["patient"] and body["encounter"] == world["encounter"]
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert httpx.get(f"{app.fhir_base}/Encounter/{body['encounter']}", headers=bearer).status_code == 200


def test_unknown_launch_is_refused(world):
    app = world["confidential"]
    app.new_browser()
    params = app.authorize_url_params("launch openid user/*.rs", launch="not-a-launch")
    assert redirect_params(app.start(params))["error"] == "invalid_request"


def test_fhir_api_needs_a_token_of_this_tenant(world):
    base = f"{world['server']}/t/alpha/fhir"
    missing = httpx.get(f"{base}/Patient/{world['patient']}")
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    beta_token = run_manage("issue_token", "--tenant", "beta", "--scopes", "system/*.*")
    foreign = httpx.get(
        f"{base}/Patient/{world['patient']}", headers={"Authorization": f"Bearer {beta_token}"}
    )
    assert foreign.status_code == 401 and 'error="invalid_token"' in foreign.headers["www-authenticate"]


def test_tampered_and_unsigned_tokens_are_refused(world):
    base = f"{world['server']}/t/alpha/fhir"
    token = run_manage(
        "issue_token", "--tenant", "alpha", "--scopes", "patient/*.rs", "--patient", world["patient"]
    )
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = "system/*.*"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    unsigned = jwt.encode(claims, key=None, algorithm="none")
    for bad in (f"{header}.{forged}.{signature}", unsigned, token[:-4] + "AAAA"):
        response = httpx.get(f"{base}/Patient/{world['patient']}", headers={"Authorization": f"Bearer {bad}"})
        assert response.status_code == 401


def test_capability_statement_names_the_oauth_endpoints(world):
    app = world["confidential"]
    statement = httpx.get(f"{app.fhir_base}/metadata").json()
    security = statement["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    extension = next(e for e in security["extension"] if e["url"].endswith("/oauth-uris"))
    uris = {item["url"]: item["valueUri"] for item in extension["extension"]}
    config = httpx.get(f"{app.fhir_base}/.well-known/smart-configuration").json()
    assert uris["authorize"] == config["authorization_endpoint"]
    assert uris["token"] == config["token_endpoint"]
    assert uris["introspect"] == config["introspection_endpoint"]
    assert uris["revoke"] == config["revocation_endpoint"]


def test_scopes_are_narrowed_to_what_the_client_may_have(world):
    suffix = uuid.uuid4().hex[:8]
    app = SmartApp(world["server"], "alpha", f"narrow{suffix}", uuid.uuid4().hex)
    run_manage(
        "register_client",
        "--tenant",
        "alpha",
        "--client-id",
        app.client_id,
        "--confidential",
        "--redirect-uri",
        REDIRECT_URI,
        "--secret",
        app.secret,
        "--scopes",
        "patient/Patient.rs patient/Observation.rs",
    )
    app.new_browser()
    asked = "launch/patient openid patient/*.rs patient/Patient.r system/*.rs"
    body = app.exchange(
        app.follow(app.start(app.authorize_url_params(asked)), world["patient_user"], PASSWORD)
    )
    assert body.status_code == 200, body.text
    assert set(body.json()["scope"].split()) == {"launch/patient", "openid", "patient/Patient.r"}


def test_malformed_scope_is_invalid_scope(world):
    app = world["confidential"]
    app.new_browser()
    answer = redirect_params(app.start(app.authorize_url_params("launch/patient patient/Observation.sr")))
    assert answer["error"] == "invalid_scope" and "code" not in answer
