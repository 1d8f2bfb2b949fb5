"""The provider simulator's side of a SMART standalone launch: /authorize (PKCE, redirect URIs,
aud, refusals) and the authorization_code grant (single-use codes, code_verifier)."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from sync.simulator import LIGHT_PATIENTS, Behaviour, Credentials, Dataset, Simulator
from tests.smart_support import pkce_pair

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


def query_of(url: str) -> dict[str, str]:
    return {key: values[-1] for key, values in parse_qs(urlsplit(url).query).items()}


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
