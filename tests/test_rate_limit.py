"""Rate limits over real HTTP: a two-worker server with tiny limits, counting in a Redis of its own."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from config.ratelimit import endpoint_class
from tests.smart_support import REDIRECT_URI, run_manage
from tests.support import free_port, start_server

LIMIT = 5
TOKEN_LIMIT = 3


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is needed (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path_factory.mktemp("redis"),
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def limited_server(django_db_setup, redis_url, tmp_path_factory):
    env = {
        "DEBUG": "1",
        "AUTH_MODE": "standalone",
        "REDIS_URL": redis_url,
        "RATE_LIMIT_PER_MINUTE": str(LIMIT),
        "RATE_LIMIT_TOKEN_PER_MINUTE": str(TOKEN_LIMIT),
    }
    running = start_server(tmp_path_factory.mktemp("limited") / "server.log", workers=2, env=env)
    yield running
    running.stop()


def _token(client_id: str) -> str:
    run_manage(
        "register_client", "--tenant", "alpha", "--client-id", client_id, "--confidential",
        "--redirect-uri", REDIRECT_URI, "--secret", uuid.uuid4().hex,
    )  # fmt: skip
    return run_manage("issue_token", "--tenant", "alpha", "--scopes", "system/*.*", "--client-id", client_id)


def _inside_one_window() -> None:
    """Counts restart each minute: start far enough from the next one."""
    if time.time() % 60 > 45:
        time.sleep(61 - time.time() % 60)


def _get(url: str, token: str) -> httpx.Response:
    # A new connection per request, so both workers serve them.
    return httpx.get(url, headers={"Authorization": f"Bearer {token}"})


def test_limit_is_shared_by_workers_per_client_and_class(limited_server):
    first, second = _token(f"rl-a-{uuid.uuid4().hex[:8]}"), _token(f"rl-b-{uuid.uuid4().hex[:8]}")
    read = f"{limited_server.url}/t/alpha/fhir/Patient/no-such-patient"
    _inside_one_window()
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda _: _get(read, first), range(2 * LIMIT)))
    statuses = sorted(response.status_code for response in answers)
    assert statuses == [404] * LIMIT + [429] * LIMIT  # per-worker counting would let more through
    throttled = next(response for response in answers if response.status_code == 429)
    assert 1 <= int(throttled.headers["retry-after"]) <= 60
    assert throttled.json()["issue"][0]["code"] == "throttled"
    # Another client, and another class of the same client, are counted apart.
    assert _get(read, second).status_code == 404
    assert _get(f"{limited_server.url}/t/alpha/fhir/Patient?_count=1", first).status_code == 200


def test_token_endpoint_is_limited_per_address(limited_server):
    url = f"{limited_server.url}/t/alpha/auth/token"
    _inside_one_window()
    guesses = [
        httpx.post(url, data={"grant_type": "client_credentials"}, auth=("nobody", f"guess{i}"))
        for i in range(TOKEN_LIMIT + 1)
    ]
    assert all(response.status_code in (400, 401) for response in guesses[:TOKEN_LIMIT])
    assert guesses[-1].status_code == 429 and "retry-after" in guesses[-1].headers


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/fhir/Patient/123", "read"),
        ("GET", "/fhir/Patient/123/_history/2", "read"),
        ("GET", "/fhir/Patient", "search"),
        ("POST", "/fhir/Patient/_search", "search"),
        ("GET", "/fhir/Patient/123/$everything", "search"),
        ("POST", "/fhir", "write"),
        ("PUT", "/fhir/Patient/123", "write"),
        ("POST", "/auth/token", "token"),
        ("GET", "/admin/", None),
    ],
)
def test_endpoint_classes(method, path, expected):
    assert endpoint_class(method, path) == expected
