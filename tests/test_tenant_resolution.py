"""Tenants are found by path (/t/<slug>/) and by host (<slug>.localhost), over real HTTP."""

import pytest

from tests.support import manage_command

FHIR_JSON = "application/fhir+json"


def assert_outcome(response, status: int, code: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == FHIR_JSON
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["severity"] == "error"
    assert body["issue"][0]["code"] == code


def test_path_resolution_reaches_the_tenant(http):
    response = http.get("/t/alpha/admin/login/")
    assert response.status_code == 200
    assert "Alpha Clinic administration" in response.text


def test_host_resolution_reaches_the_tenant(http):
    response = http.get("/admin/login/", headers={"Host": "beta.localhost"})
    assert response.status_code == 200
    assert "Beta Hospital administration" in response.text


def test_tenant_urls_are_built_under_the_tenant_prefix(http):
    response = http.get("/t/alpha/admin/")
    assert response.status_code == 302
    assert response.headers["location"].startswith("/t/alpha/admin/login/")


def test_public_site_is_not_a_tenant(http):
    response = http.get("/admin/login/")
    assert response.status_code == 200
    assert "Django administration" in response.text


@pytest.mark.parametrize(
    "path",
    ["/t/nosuchtenant/fhir/Patient", "/t/nosuchtenant", "/t/%2e%2e/admin/", "/t/Alpha/admin/", "/t//x"],
)
def test_unknown_tenant_by_path_is_404_operation_outcome(http, path):
    assert_outcome(http.get(path), 404, "not-found")


def test_unknown_tenant_by_host_is_404_operation_outcome(http):
    assert_outcome(http.get("/fhir/metadata", headers={"Host": "nosuchtenant.localhost"}), 404, "not-found")


def test_host_not_allowed_is_rejected(http):
    assert http.get("/healthz", headers={"Host": "evil.example"}).status_code == 400


def test_suspended_tenant_is_403_and_comes_back_when_activated(http, unique_slug):
    assert manage_command("create_tenant", unique_slug).returncode == 0
    assert manage_command("suspend_tenant", unique_slug).returncode == 0
    assert_outcome(http.get(f"/t/{unique_slug}/admin/login/"), 403, "forbidden")
    assert_outcome(http.get("/admin/login/", headers={"Host": f"{unique_slug}.localhost"}), 403, "forbidden")
    assert manage_command("activate_tenant", unique_slug).returncode == 0
    assert http.get(f"/t/{unique_slug}/admin/login/").status_code == 200
