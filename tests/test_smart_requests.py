"""OAuth requests at the edges: client_secret_post, userinfo, duplicated and missing parameters."""

from __future__ import annotations

import httpx
import pytest
from django.core.exceptions import ValidationError

from smart_auth.models import Client
from tests.smart_support import PASSWORD, REDIRECT_URI, redirect_params, run_manage
from tests.support import manage_command
from tests.test_smart_launch import PATIENT_SCOPES


def test_client_secret_post_and_userinfo(world):
    app = world["confidential"]
    app.new_browser()
    redirect = app.follow(
        app.start(app.authorize_url_params(PATIENT_SCOPES)), world["patient_user"], PASSWORD
    )
    code = redirect_params(redirect)["code"]
    response = httpx.post(
        f"{app.tenant_url}/auth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "client_id": app.client_id,
            "client_secret": app.secret,
        },
    )
    assert response.status_code == 200, response.text
    bearer = {"Authorization": f"Bearer {response.json()['access_token']}"}
    userinfo = httpx.get(f"{app.tenant_url}/auth/userinfo", headers=bearer)
    assert userinfo.status_code == 200
    assert userinfo.json()["fhirUser"] == f"Patient/{world['patient']}" and userinfo.json()["sub"]
    assert httpx.get(f"{app.tenant_url}/auth/userinfo").status_code == 401


def test_wrong_client_secret_is_invalid_client(world):
    app = world["confidential"]
    response = httpx.post(
        f"{app.tenant_url}/auth/token",
        auth=(app.client_id, "wrong"),
        data={"grant_type": "refresh_token", "refresh_token": "whatever"},
    )
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    assert "no-store" in response.headers["cache-control"]


def test_duplicated_parameters_are_refused(world):
    app = world["confidential"]
    app.new_browser()
    params = [*app.authorize_url_params(PATIENT_SCOPES).items(), ("client_id", app.client_id)]
    response = app.browser.get(f"{app.tenant_url}/auth/authorize", params=params)
    assert response.status_code == 400 and "location" not in response.headers
    state_twice = [*app.authorize_url_params(PATIENT_SCOPES).items(), ("state", "other")]
    answer = app.browser.get(f"{app.tenant_url}/auth/authorize", params=state_twice)
    assert answer.status_code == 400 and "location" not in answer.headers


def test_missing_response_type_and_unknown_client(world):
    app = world["confidential"]
    app.new_browser()
    params = app.authorize_url_params(PATIENT_SCOPES)
    del params["response_type"]
    missing = app.browser.get(f"{app.tenant_url}/auth/authorize", params=params)
    assert "code=" not in missing.headers.get("location", "")
    unknown = app.authorize_url_params(PATIENT_SCOPES, client_id="nobody")
    answer = app.browser.get(f"{app.tenant_url}/auth/authorize", params=unknown)
    assert answer.status_code == 400 and "location" not in answer.headers


def test_token_endpoint_refuses_get_and_unknown_grant(world):
    app = world["confidential"]
    assert httpx.get(f"{app.tenant_url}/auth/token").status_code == 405
    unknown = app.token({"grant_type": "password", "username": world["patient_user"], "password": PASSWORD})
    assert unknown.status_code in (400, 401) and "access_token" not in unknown.json()


def test_introspection_by_a_bearer_token_of_the_tenant(world):
    app = world["confidential"]
    caller = run_manage("issue_token", "--tenant", "alpha", "--scopes", "system/*.rs")
    subject = run_manage(
        "issue_token", "--tenant", "alpha", "--scopes", "patient/*.rs", "--patient", world["patient"]
    )
    url = f"{app.tenant_url}/auth/introspect"
    answer = httpx.post(url, data={"token": subject}, headers={"Authorization": f"Bearer {caller}"})
    assert answer.status_code == 200 and answer.json()["active"] is True
    assert answer.json()["patient"] == world["patient"]
    forged = httpx.post(url, data={"token": subject}, headers={"Authorization": "Bearer not-a-token"})
    assert forged.status_code == 401


def test_commands_refuse_bad_scopes_and_fhir_users():
    bad_scope = manage_command(
        "register_client",
        "--tenant",
        "alpha",
        "--client-id",
        "never-made",
        "--public",
        "--redirect-uri",
        REDIRECT_URI,
        "--scopes",
        "patient/Observation.sr",
    )
    assert bad_scope.returncode != 0 and "Observation.sr" in bad_scope.stderr
    bad_user = manage_command(
        "create_user",
        "--tenant",
        "alpha",
        "--username",
        "never-made",
        "--password",
        PASSWORD,
        "--fhir-user",
        "Observation/1",
    )
    assert bad_user.returncode != 0 and "--fhir-user" in bad_user.stderr
    token = manage_command(
        "issue_token", "--tenant", "alpha", "--client-id", "never-made", "--scopes", "user/*.rs"
    )
    assert token.returncode != 0  # the client was not registered


def test_admin_refuses_malformed_allowed_scopes():
    client = Client(client_id="x", allowed_scopes="patient/*.rs user/Nonsense.r")
    with pytest.raises(ValidationError) as refused:
        client.clean()
    assert "allowed_scopes" in refused.value.message_dict
