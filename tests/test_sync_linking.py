"""Linking a patient through a SMART standalone launch at the provider (sync/linking.py), over real
HTTP: an administrator's browser session on the live server (smart_server), the provider
simulator's /authorize and authorization_code grant, our callback, the sealed refresh token, and
the first sync run by the queue in this process with the refresh token the flow stored.
The simulator's own side (PKCE, single-use codes, redirect URIs, aud) is tested directly."""

from __future__ import annotations

import io
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from sync import secrets as sealed
from sync.models import LinkedPatient, Snapshot
from sync.runner import QUEUE
from sync.simulated_data import LIGHT_PATIENTS, Dataset
from sync.simulator import Behaviour, Credentials, Simulator
from tenants import jobs
from tenants.management.commands._tenant_command import in_tenant
from tests.smart_support import CSRF, PASSWORD, pkce_pair, tenant_admin

TENANT = "alpha"
DEFAULT_SCOPE = "launch/patient openid fhirUser offline_access patient/*.read"


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return Dataset.load(LIGHT_PATIENTS[:1])


@pytest.fixture
def simulators(dataset):
    started: list[Simulator] = []

    def start(behaviour: Behaviour | None = None, credentials: Credentials | None = None) -> Simulator:
        simulator = Simulator(behaviour or Behaviour(), credentials, dataset).start()
        started.append(simulator)
        return simulator

    yield start
    for simulator in started:
        simulator.stop()


@pytest.fixture(scope="module")
def administrator(smart_server, django_db_blocker) -> str:
    name = f"linker{uuid.uuid4().hex[:8]}"
    with django_db_blocker.unblock(), in_tenant(TENANT):
        User.objects.create_superuser(name, password=PASSWORD)
    return name


def add_provider(simulator: Simulator, secret: str = "sim-secret", authorize: bool = True) -> str:  # noqa: S107
    name = f"linking-{uuid.uuid4().hex[:8]}"
    query = f"client_id=sim-client&client_secret={secret}&token_url={simulator.token_url}"
    if authorize:
        query += f"&authorize_url={simulator.url}/authorize"
    url = simulator.base_url.replace("http://", "fhir+http://") + "?" + query
    call_command("add_provider", "--tenant", TENANT, "--name", name, url, stdout=io.StringIO())
    return name


def links_of(provider: str) -> list[LinkedPatient]:
    with in_tenant(TENANT):
        return list(LinkedPatient.objects.filter(provider__name=provider))


def tenant_url(server) -> str:
    return f"{server.url}/t/{TENANT}"


def start(browser: httpx.Client, server, provider: str) -> httpx.Response:
    """Our page, then its form's POST to sync/link/start (not followed)."""
    page = browser.get(f"{tenant_url(server)}/sync/link", params={"provider": provider})
    assert page.status_code == 200 and provider in page.text, page.text[:500]
    form = {"csrfmiddlewaretoken": CSRF.search(page.text).group(1), "provider": provider}
    return browser.post(f"{tenant_url(server)}/sync/link/start", data=form, follow_redirects=False)


def at_provider(started: httpx.Response) -> httpx.Response:
    """The provider's /authorize (approving at once or refusing): its redirect back to us."""
    assert started.status_code == 302, started.text[:500]
    answer = httpx.get(started.headers["location"], follow_redirects=False)
    assert answer.status_code == 302, answer.text[:500]
    return answer


def query_of(url: str) -> dict[str, str]:
    return {key: values[-1] for key, values in parse_qs(urlsplit(url).query).items()}


def test_an_administrator_links_a_patient_and_its_first_sync_uses_the_refresh_token(
    smart_server, administrator, simulators, owner_db
):
    simulator = simulators()
    provider = add_provider(simulator)
    with tenant_admin(smart_server.url, administrator) as browser:
        started = start(browser, smart_server, provider)
        authorize = query_of(started.headers["location"])
        assert started.headers["location"].startswith(f"{simulator.url}/authorize?")
        callback = f"{tenant_url(smart_server)}/sync/link/callback"
        assert authorize["redirect_uri"] == callback
        assert authorize["response_type"] == "code" and authorize["client_id"] == "sim-client"
        assert authorize["aud"] == simulator.base_url and authorize["scope"] == DEFAULT_SCOPE
        assert authorize["code_challenge_method"] == "S256" and len(authorize["code_challenge"]) == 43
        assert len(authorize["state"]) >= 22  # at least 128 random bits, base64url
        back = at_provider(started)
        assert back.headers["location"].startswith(callback + "?")
        assert query_of(back.headers["location"])["state"] == authorize["state"]
        done = browser.get(back.headers["location"], follow_redirects=False)
        assert done.status_code == 302, done.text[:500]
        assert "code" not in done.headers["location"] and LIGHT_PATIENTS[0] not in done.headers["location"]
        page = browser.get(str(done.url.join(done.headers["location"])))
    (link,) = links_of(provider)
    assert page.status_code == 200 and str(link.id) in page.text and "pending" in page.text
    assert link.provider_patient_id == simulator.launch_patient == LIGHT_PATIENTS[0]
    raw = owner_db.execute(
        f"SELECT refresh_token, access_token FROM {TENANT}.sync_linked_patient WHERE id = %s", [link.id]
    ).fetchone()
    assert raw[0].startswith("phi:") and raw[1].startswith("phi:")
    with in_tenant(TENANT):
        refresh = sealed.get(link, "refresh_token")
        (snapshot,) = Snapshot.objects.filter(patient=link)
    assert refresh and refresh not in raw[0] and refresh != simulator.credentials.refresh_token
    assert link.access_token_expires is not None
    # The sync's cached access token is refused from now on: it must renew with the flow's refresh token.
    simulator.expire_tokens()
    exchanges = sum(1 for _, path, _ in simulator.log if path == "/token")
    jobs.serve([QUEUE], poll_seconds=0.1, once=True)
    with in_tenant(TENANT):
        snapshot = Snapshot.objects.get(id=snapshot.id)
    assert snapshot.status == "complete", snapshot.description
    assert sum(snapshot.counts.values()) > 50
    assert sum(1 for _, path, status in simulator.log if path == "/token" and status == 200) > exchanges
    code = query_of(back.headers["location"])["code"]
    logged = "\n".join(smart_server.log_lines())
    assert code not in logged and refresh not in logged and LIGHT_PATIENTS[0] not in logged


def test_a_replayed_or_unknown_state_is_refused_and_stores_nothing(smart_server, administrator, simulators):
    simulator = simulators()
    provider = add_provider(simulator)
    with tenant_admin(smart_server.url, administrator) as browser:
        back = at_provider(start(browser, smart_server, provider))
        callback = back.headers["location"]
        forged = callback.replace("state=", "state=x")
        refused = browser.get(forged, follow_redirects=False)
        assert refused.status_code == 400 and "unknown, used or expired" in refused.text
        assert links_of(provider) == []
        assert browser.get(callback, follow_redirects=False).status_code == 302  # the real one still works
        replayed = browser.get(callback, follow_redirects=False)
        assert replayed.status_code == 400 and "unknown, used or expired" in replayed.text
    (link,) = links_of(provider)
    with in_tenant(TENANT):
        assert Snapshot.objects.filter(patient=link).count() == 1
    # a callback in another administrator session (someone else's browser) is unknown there
    with tenant_admin(smart_server.url, administrator) as other:
        back = at_provider(start(other, smart_server, provider))
    with tenant_admin(smart_server.url, administrator) as third:
        assert third.get(back.headers["location"], follow_redirects=False).status_code == 400


def test_the_provider_refusing_shows_why_and_stores_nothing(smart_server, administrator, simulators):
    simulator = simulators(Behaviour(deny_authorization=True))
    provider = add_provider(simulator)
    with tenant_admin(smart_server.url, administrator) as browser:
        back = at_provider(start(browser, smart_server, provider))
        assert query_of(back.headers["location"])["error"] == "access_denied"
        page = browser.get(back.headers["location"], follow_redirects=False)
    assert page.status_code == 400 and "did not authorize the link: access_denied" in page.text
    assert "The user refused the authorization" in page.text
    assert links_of(provider) == []
    assert not any(path == "/token" for _, path, _ in simulator.log)


def test_a_refused_code_exchange_shows_the_error_code_and_stores_nothing(
    smart_server, administrator, simulators
):
    simulator = simulators()
    provider = add_provider(simulator, secret="not-the-secret")
    with tenant_admin(smart_server.url, administrator) as browser:
        back = at_provider(start(browser, smart_server, provider))
        page = browser.get(back.headers["location"], follow_redirects=False)
    assert (
        page.status_code == 502
        and "refused the authorization_code grant: HTTP 401 invalid_client" in page.text
    )
    assert "not-the-secret" not in page.text
    assert links_of(provider) == []


def test_a_token_response_without_a_patient_is_refused(smart_server, administrator, simulators):
    simulator = simulators()
    grant = simulator.authorization_code_grant

    def without_patient(form):  # a provider that answers no launch context
        status, answer = grant(form)
        answer.pop("patient", None)
        return status, answer

    simulator.authorization_code_grant = without_patient
    provider = add_provider(simulator)
    with tenant_admin(smart_server.url, administrator) as browser:
        back = at_provider(start(browser, smart_server, provider))
        page = browser.get(back.headers["location"], follow_redirects=False)
    assert page.status_code == 502 and "named no patient" in page.text
    assert links_of(provider) == []


def test_only_tenant_administrators_may_link(smart_server, simulators):
    simulator = simulators()
    provider = add_provider(simulator)
    base = tenant_url(smart_server)
    with httpx.Client(timeout=30) as anonymous:
        page = anonymous.get(f"{base}/sync/link", follow_redirects=False)
        assert page.status_code == 302 and "/admin/login/" in page.headers["location"]
        posted = anonymous.post(
            f"{base}/sync/link/start", data={"provider": provider}, follow_redirects=False
        )
        assert posted.status_code == 403 and "location" not in posted.headers
        callback = anonymous.get(f"{base}/sync/link/callback", params={"code": "c0de", "state": "s"})
        assert callback.status_code == 403 and "c0de" not in callback.text
    clerk, staff = f"clerk{uuid.uuid4().hex[:8]}", f"staff{uuid.uuid4().hex[:8]}"
    with in_tenant(TENANT):
        User.objects.create_user(clerk, password=PASSWORD)
        User.objects.create_user(staff, password=PASSWORD, is_staff=True)  # staff, without the permission
    for name in (clerk, staff):
        with httpx.Client(timeout=30) as browser:
            login = browser.get(f"{base}/auth/login")
            form = {
                "csrfmiddlewaretoken": CSRF.search(login.text).group(1),
                "username": name,
                "password": PASSWORD,
            }
            assert browser.post(f"{base}/auth/login", data=form, follow_redirects=False).status_code == 302
            assert browser.get(f"{base}/sync/link").status_code == 403
            token = browser.cookies["csrftoken"]
            form = {"csrfmiddlewaretoken": token, "provider": provider}
            refused = browser.post(f"{base}/sync/link/start", data=form, follow_redirects=False)
            assert refused.status_code == 403 and "tenant administrator" in refused.text
    assert not any(path.startswith("/authorize") for _, path, _ in simulator.log)


def test_the_page_lists_only_providers_that_can_link(smart_server, administrator, simulators):
    simulator = simulators()
    linkable, backend_only = add_provider(simulator), add_provider(simulator, authorize=False)
    with tenant_admin(smart_server.url, administrator) as browser:
        page = browser.get(f"{tenant_url(smart_server)}/sync/link")
        token = CSRF.search(page.text).group(1)
        refused = browser.post(
            f"{tenant_url(smart_server)}/sync/link/start",
            data={"csrfmiddlewaretoken": token, "provider": backend_only},
            follow_redirects=False,
        )
    assert linkable in page.text and backend_only not in page.text
    assert refused.status_code == 400


# ----- the simulator's side -----------------------------------------------------------------


def authorize(simulator: Simulator, challenge: str, redirect_uri: str = "http://127.0.0.1:9/cb", **extra):
    params = {
        "response_type": "code",
        "client_id": "sim-client",
        "redirect_uri": redirect_uri,
        "scope": "launch/patient offline_access patient/*.read",
        "state": "s-1",
        "aud": simulator.base_url,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    return httpx.get(simulator.url + "/authorize", params=params, follow_redirects=False)


def exchange(simulator: Simulator, code: str, verifier: str, redirect_uri: str = "http://127.0.0.1:9/cb"):
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
    }
    return httpx.post(simulator.token_url, data=form, auth=("sim-client", "sim-secret"))


def test_simulator_checks_the_code_verifier_and_uses_each_code_once(simulators):
    simulator = simulators()
    verifier, challenge = pkce_pair()
    code = query_of(authorize(simulator, challenge).headers["location"])["code"]
    assert exchange(simulator, code, verifier + "x").json() == {"error": "invalid_grant"}
    assert exchange(simulator, code, verifier).status_code == 400  # spent by the failed try
    code = query_of(authorize(simulator, challenge).headers["location"])["code"]
    assert exchange(simulator, code, verifier, redirect_uri="http://127.0.0.1:9/other").status_code == 400
    code = query_of(authorize(simulator, challenge).headers["location"])["code"]
    granted = exchange(simulator, code, verifier)
    assert granted.status_code == 200, granted.text
    answer = granted.json()
    assert answer["patient"] == LIGHT_PATIENTS[0] and answer["refresh_token"] and answer["expires_in"] > 0
    assert exchange(simulator, code, verifier).status_code == 400  # single use
    refreshed = httpx.post(
        simulator.token_url,
        data={"grant_type": "refresh_token", "refresh_token": answer["refresh_token"]},
        auth=("sim-client", "sim-secret"),
    )
    assert refreshed.status_code == 200 and refreshed.json()["access_token"]
    patient = httpx.get(
        f"{simulator.base_url}/Patient/{LIGHT_PATIENTS[0]}",
        headers={"Authorization": f"Bearer {answer['access_token']}"},
    )
    assert patient.status_code == 200


def test_simulator_authorize_refuses_bad_requests(simulators):
    simulator = simulators(credentials=Credentials(redirect_uris=("https://app.example/cb",)))
    _, challenge = pkce_pair()
    assert authorize(simulator, challenge).status_code == 400  # loopback, but not the registered one
    assert authorize(simulator, challenge, client_id="other").status_code == 400
    cases = {
        "unsupported_response_type": {"response_type": "token"},
        "invalid_request": {"aud": "https://elsewhere.example/fhir"},
    }
    for error, extra in cases.items():
        answer = authorize(simulator, challenge, redirect_uri="https://app.example/cb", **extra)
        assert answer.status_code == 302 and query_of(answer.headers["location"])["error"] == error
        assert query_of(answer.headers["location"])["state"] == "s-1"
    plain = authorize(
        simulator, challenge, redirect_uri="https://app.example/cb", code_challenge_method="plain"
    )
    assert query_of(plain.headers["location"])["error"] == "invalid_request"
    approved = authorize(simulator, challenge, redirect_uri="https://app.example/cb")
    assert approved.headers["location"].startswith("https://app.example/cb?code=")
    discovery = httpx.get(f"{simulator.base_url}/.well-known/smart-configuration").json()
    assert discovery["authorization_endpoint"] == simulator.url + "/authorize"
    assert discovery["code_challenge_methods_supported"] == ["S256"]


def test_simulator_codes_expire(simulators):
    simulator = simulators()
    verifier, challenge = pkce_pair()
    code = query_of(authorize(simulator, challenge).headers["location"])["code"]
    simulator._codes[code]["expires"] = time.time() - 1
    assert exchange(simulator, code, verifier).status_code == 400
