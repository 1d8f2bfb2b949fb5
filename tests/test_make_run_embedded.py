"""`make run` from an empty data folder, on the embedded PostgreSQL: start, migrate, create the
demo tenant, answer /readyz, stop with Ctrl-C, start again with everything kept."""

import os
import signal
import subprocess
import sys

import httpx
import psutil
import pytest

from config.environment import BASE_DIR
from tests.support import free_port, manage_command, wait_until_answers

pytestmark = pytest.mark.slow

# Only what a fresh machine has: no DATABASE_URL, no secrets; the run creates its own.
STRIPPED = {
    "DATABASE_URL",
    "APP_DATABASE_URL",
    "SECRET_KEY",
    "PHI_MASTER_KEY",
    "PHI_INDEX_KEY",
    "APP_DB_PASSWORD",
    "SMART_SIGNING_KEY_FILE",
    "DEBUG",
    "AUTH_MODE",
    "DB_ROLE",
    "ALLOWED_HOSTS",
    "TEST_SERVER_URL",
}


def fresh_machine_env(data_dir, port: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in STRIPPED}
    return {**env, "FHIR_DATA_DIR": str(data_dir), "PORT": str(port), "WEB_CONCURRENCY": "1"}


def postgres_running_on(data_dir) -> bool:
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "postgres" and str(data_dir) in " ".join(process.info["cmdline"] or []):
            return True
    return False


def start(env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(BASE_DIR / "scripts" / "run_server.py")],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    return output


def count_patients(base: str, env: dict) -> int:
    issued = manage_command(
        "issue_token", "--tenant", "demo", "--scopes", "user/*.rs", env=env, inherit=False
    )
    assert issued.returncode == 0, issued.stderr
    headers = {"Authorization": f"Bearer {issued.stdout.strip()}"}
    return httpx.get(base + "/t/demo/fhir/Patient", params={"_summary": "count"}, headers=headers).json()[
        "total"
    ]


def test_run_from_empty_data_folder_then_restart_keeps_data(tmp_path):
    data_dir = tmp_path / "data"
    port = free_port()
    env = fresh_machine_env(data_dir, port)
    base = f"http://127.0.0.1:{port}"

    first = start(env)
    try:
        wait_until_answers(base + "/readyz", first, timeout=180)
        assert httpx.get(base + "/t/demo/admin/login/").status_code == 200
        assert httpx.get(base + "/t/demo/fhir/Patient").status_code == 401  # standalone SMART auth
        patients = count_patients(base, env)
        assert patients >= 3  # the demo patients were loaded
        # manage.py, run by hand beside the server, reaches the same embedded database.
        created = manage_command("create_tenant", "kept", env=env, inherit=False)
        assert created.returncode == 0, created.stderr
        dev_env = (data_dir / "dev.env").read_text()
    finally:
        output = stop(first)
        print(output)  # pytest shows it when the test fails
    assert first.returncode == 0, output
    assert "demo login:" in output
    assert not postgres_running_on(data_dir)

    second = start(env)
    try:
        wait_until_answers(base + "/readyz", second, timeout=180)
        assert httpx.get(base + "/t/kept/admin/login/").status_code == 200
        again = count_patients(base, env)
        assert again == patients  # kept, and not loaded twice
        listed = manage_command("list_tenants", env=env, inherit=False)
        assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == ["demo", "kept"]
    finally:
        print(stop(second))
    assert (data_dir / "dev.env").read_text() == dev_env  # secrets reused, not regenerated
    assert not postgres_running_on(data_dir)
