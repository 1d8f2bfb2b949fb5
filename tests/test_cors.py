"""CORS for browser SMART apps, over real HTTP (Fetch standard, CORS protocol)."""

from __future__ import annotations

import httpx
import pytest

from config.cors import ALLOWED_HEADERS, EXPOSED_HEADERS
from tests.support import manage_command, start_server

APP = "https://app.example.org"
STRANGER = "https://elsewhere.example.net"


def header_set(value: str) -> set[str]:
    return {item.strip().lower() for item in value.split(",")}


@pytest.fixture(scope="module")
def cors_server(django_db_setup, tmp_path_factory):
    # AUTH_MODE=standalone (the suite's default): the FHIR API answers 401 without a token.
    env = {"CORS_ALLOWED_ORIGINS": f"{APP}, http://localhost:3000"}
    running = start_server(tmp_path_factory.mktemp("cors") / "server.log", env=env)
    yield running
    running.stop()


@pytest.fixture
def browser(cors_server):
    with httpx.Client(base_url=cors_server.url, timeout=30) as client:
        yield client


def preflight(client: httpx.Client, path: str, origin: str, **headers: str) -> httpx.Response:
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
            **headers,
        },
    )


def assert_varies_on_origin(response: httpx.Response) -> None:
    assert "origin" in header_set(response.headers.get("Vary", ""))


def test_preflight_from_an_allowed_origin(browser):
    answer = preflight(browser, "/t/alpha/fhir/Patient", APP)
    assert answer.status_code == 204
    assert answer.headers["Access-Control-Allow-Origin"] == APP
    methods = header_set(answer.headers["Access-Control-Allow-Methods"])
    assert {"get", "post", "put", "patch", "delete"} <= methods
    listed = header_set(answer.headers["Access-Control-Allow-Headers"])
    assert listed == header_set(ALLOWED_HEADERS)
    assert {"authorization", "content-type", "prefer", "if-none-exist", "x-request-id"} <= listed
    assert int(answer.headers["Access-Control-Max-Age"]) > 0
    assert "Access-Control-Allow-Credentials" not in answer.headers
    assert_varies_on_origin(answer)


def test_preflight_from_a_configured_origin_with_a_port(browser):
    answer = preflight(browser, "/t/alpha/fhir/Observation", "http://localhost:3000")
    assert answer.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"


def test_preflight_from_another_origin_is_not_allowed(browser):
    answer = preflight(browser, "/t/alpha/fhir/Patient", STRANGER)
    assert answer.status_code == 204  # never a 401: but without the headers, the browser stops
    assert "Access-Control-Allow-Origin" not in answer.headers
    assert "Access-Control-Allow-Methods" not in answer.headers
    assert_varies_on_origin(answer)


def test_host_addressed_tenant(browser):
    answer = preflight(browser, "/fhir/Patient", APP, Host="alpha.localhost")
    assert answer.headers["Access-Control-Allow-Origin"] == APP
    response = browser.get("/fhir/Patient", headers={"Origin": APP, "Host": "alpha.localhost"})
    assert response.status_code == 401
    assert response.headers["Access-Control-Allow-Origin"] == APP


def test_metadata_answers_any_origin(browser):
    for origin in (APP, STRANGER):
        response = browser.get("/t/alpha/fhir/metadata", headers={"Origin": origin})
        assert response.status_code == 200
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert header_set(response.headers["Access-Control-Expose-Headers"]) == header_set(EXPOSED_HEADERS)
        assert_varies_on_origin(response)


def test_an_unauthorized_response_is_readable_by_the_app(browser):
    response = browser.get("/t/alpha/fhir/Patient", headers={"Origin": APP})
    assert response.status_code == 401
    assert response.headers["Access-Control-Allow-Origin"] == APP
    exposed = header_set(response.headers["Access-Control-Expose-Headers"])
    assert {"www-authenticate", "location", "etag", "x-request-id", "retry-after"} <= exposed


def test_a_response_to_another_origin_has_no_cors_headers(browser):
    response = browser.get("/t/alpha/fhir/Patient", headers={"Origin": STRANGER})
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Expose-Headers" not in response.headers
    assert_varies_on_origin(response)


@pytest.mark.parametrize(
    "path",
    ["/t/alpha/auth/token", "/t/alpha/auth/register", "/t/alpha/fhir/.well-known/smart-configuration"],
)
def test_token_and_discovery_preflights_answer_any_origin(browser, path):
    answer = preflight(browser, path, STRANGER)
    assert answer.status_code == 204
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    assert "authorization" in header_set(answer.headers["Access-Control-Allow-Headers"])


@pytest.mark.parametrize("path", ["/t/alpha/auth/authorize", "/t/alpha/auth/login", "/t/alpha/admin/"])
def test_browser_pages_take_no_part_in_cors(browser, path):
    answer = preflight(browser, path, APP)
    assert answer.status_code != 204
    assert "Access-Control-Allow-Origin" not in answer.headers


def test_requests_without_origin_get_no_cors_headers(browser):
    response = browser.get("/t/alpha/fhir/metadata")
    assert "Access-Control-Allow-Origin" not in response.headers
    assert_varies_on_origin(response)  # a cache must not hand this answer to a browser


def allowed_origins_setting(env: dict[str, str]) -> str:
    shell = "from django.conf import settings; print(settings.CORS_ALLOWED_ORIGINS)"
    result = manage_command("shell", "-c", shell, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_default_origins_any_with_tokens_none_without_authentication():
    assert allowed_origins_setting({"CORS_ALLOWED_ORIGINS": ""}) == "('*',)"
    no_auth = {"CORS_ALLOWED_ORIGINS": "", "DEBUG": "1", "AUTH_MODE": "development"}
    assert allowed_origins_setting(no_auth) == "()"


def test_configured_origins_are_kept_as_browsers_send_them():
    configured = "HTTPS://App.Example.org:443, http://[::1]:8080"
    assert allowed_origins_setting({"CORS_ALLOWED_ORIGINS": configured}) == (
        "('https://app.example.org', 'http://[::1]:8080')"
    )
