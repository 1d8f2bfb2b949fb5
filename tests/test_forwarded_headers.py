"""The URLs the server advertises follow X-Forwarded-Proto/-Host only from TRUSTED_PROXIES."""

from __future__ import annotations

import ipaddress

import httpx
import pytest
from django.http import HttpResponse
from django.test import RequestFactory, override_settings

from config.proxy import TrustedProxyMiddleware
from tests.conftest import DEVELOPMENT_AUTH
from tests.support import make_marked, start_server

PUBLIC_HOST = "fhir.example.org"
FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": PUBLIC_HOST}
# gunicorn's own scheme headers, which it would otherwise believe from loopback peers.
GUNICORN_SCHEME_HEADERS = {"X-Forwarded-Ssl": "on", "X-Forwarded-Protocol": "ssl"}


def forwarded_headers_kept(trusted: list[str], peer: str) -> bool:
    seen = {}

    def view(request):
        seen.update(request.META)
        return HttpResponse()

    with override_settings(TRUSTED_PROXIES=tuple(ipaddress.ip_network(n) for n in trusted)):
        middleware = TrustedProxyMiddleware(view)
    request = RequestFactory().get(
        "/", REMOTE_ADDR=peer, HTTP_X_FORWARDED_PROTO="https", HTTP_X_FORWARDED_HOST=PUBLIC_HOST
    )
    middleware(request)
    kept = {"HTTP_X_FORWARDED_PROTO" in seen, "HTTP_X_FORWARDED_HOST" in seen}
    assert len(kept) == 1  # both or neither
    return kept.pop()


@pytest.mark.parametrize(
    ("peer", "kept"),
    [
        ("192.0.2.7", True),  # inside the CIDR
        ("198.51.100.7", False),
        ("2001:db8::1", True),  # an exact IPv6 address
        ("2001:db8::2", False),
        ("::ffff:192.0.2.7", True),  # an IPv4 peer on a dual-stack socket
        ("", False),  # no address (a Unix socket)
        ("not an address", False),
    ],
)
def test_only_peers_in_trusted_proxies_may_forward(peer, kept):
    assert forwarded_headers_kept(["192.0.2.0/24", "2001:db8::1"], peer) is kept


def test_no_peer_is_trusted_by_default():
    assert forwarded_headers_kept([], "127.0.0.1") is False


def test_untrusted_peer_cannot_change_advertised_urls(fhir, fhir_server):
    headers = {**FORWARDED, **GUNICORN_SCHEME_HEADERS}
    created = fhir.post("/Patient", json={"resourceType": "Patient"}, headers=headers)
    assert created.status_code == 201, created.text
    assert created.headers["Location"].startswith(f"{fhir_server.url}/t/alpha/fhir/Patient/")


@pytest.fixture(scope="module")
def proxied_server(django_db_setup, tmp_path_factory):
    env = {
        **DEVELOPMENT_AUTH,
        "TRUSTED_PROXIES": "192.0.2.0/24, 127.0.0.1",
        "ALLOWED_HOSTS": f".localhost,localhost,127.0.0.1,{PUBLIC_HOST}",
    }
    running = start_server(tmp_path_factory.mktemp("proxied") / "server.log", env=env)
    yield running
    running.stop()


@pytest.fixture
def proxied(proxied_server):
    with httpx.Client(base_url=proxied_server.url, timeout=30) as client:
        yield client


def test_trusted_proxy_sets_scheme_and_host_of_location(proxied):
    created = proxied.post("/t/alpha/fhir/Patient", json={"resourceType": "Patient"}, headers=FORWARDED)
    assert created.status_code == 201, created.text
    assert created.headers["Location"].startswith(f"https://{PUBLIC_HOST}/t/alpha/fhir/Patient/")


def test_trusted_proxy_sets_scheme_and_host_of_bundle_links(proxied, marker):
    with httpx.Client(base_url=str(proxied.base_url) + "/t/alpha/fhir", timeout=30) as fhir:
        for _ in range(2):
            make_marked(fhir, marker, {"resourceType": "Patient"})
    params = {"identifier": f"urn:test:marker|{marker}", "_count": "1"}
    bundle = proxied.get("/t/alpha/fhir/Patient", params=params, headers=FORWARDED).json()
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    assert set(links) >= {"self", "next"}
    assert all(url.startswith(f"https://{PUBLIC_HOST}/t/alpha/fhir/Patient?") for url in links.values())


def test_trusted_proxy_without_forwarded_headers_gets_direct_urls(proxied, proxied_server):
    created = proxied.post("/t/alpha/fhir/Patient", json={"resourceType": "Patient"})
    assert created.headers["Location"].startswith(f"{proxied_server.url}/t/alpha/fhir/Patient/")


def test_forwarded_host_selects_a_host_addressed_tenant(proxied):
    headers = {**FORWARDED, "X-Forwarded-Host": "alpha.localhost"}
    created = proxied.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=headers)
    assert created.status_code == 201, created.text
    assert created.headers["Location"].startswith("https://alpha.localhost/fhir/Patient/")


def test_forwarded_host_must_be_an_allowed_host(proxied):
    headers = {**FORWARDED, "X-Forwarded-Host": "evil.example.net"}
    assert proxied.get("/t/alpha/fhir/metadata", headers=headers).status_code == 400
