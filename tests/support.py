"""Helpers shared by the test suite and the benchmarks: choosing and preparing a database,
running `manage.py`, and starting a real server."""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

from config.database import replace_database_name
from config.environment import BASE_DIR, new_rsa_private_key_pem

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def local_server_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def database_server_url() -> str:
    """DATABASE_URL, else the PostgreSQL on 127.0.0.1:5432 if it answers, else an embedded one."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    if local_server_answers():
        return LOCAL_SERVER
    from config import embedded_postgres

    return embedded_postgres.ensure_running(BASE_DIR / ".data" / "test-postgres")


def configure_environment(database: str) -> None:
    """Point this process (and its children) at `database` with freshly generated secrets.

    Must run before Django reads its settings. A developer's .data/dev.env is never read.
    """
    scratch = Path(tempfile.mkdtemp(prefix="fhirserver-"))
    server = database_server_url()
    key_file = scratch / "smart_signing_key.pem"
    key_file.write_bytes(new_rsa_private_key_pem())
    os.environ.update(
        {
            "TEST_SERVER_URL": server,
            "DATABASE_URL": replace_database_name(server, database),
            "FHIR_DATA_DIR": str(scratch),
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "PHI_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "PHI_INDEX_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "SMART_SIGNING_KEY_FILE": str(key_file),
            "APP_DB_PASSWORD": secrets.token_urlsafe(16),
            "AUTH_MODE": "standalone",
            "ALLOWED_HOSTS": ".localhost,localhost,127.0.0.1",
        }
    )


def create_fresh_database(name: str, tenants: dict[str, str]) -> None:
    """Drop and create `name`, then set it up with the real commands, as an operator would."""
    maintenance = replace_database_name(os.environ["TEST_SERVER_URL"], "postgres")
    with psycopg.connect(maintenance, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    steps = [("setup_database",)] + [("create_tenant", slug, "--name", n) for slug, n in tenants.items()]
    for args in steps:
        result = manage_command(*args)
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr}")


def manage_command(
    *args: str, env: dict | None = None, input: str | None = None, inherit: bool = True, timeout: float = 300
):
    """Run `manage.py` as a separate process, the way operators and `make run` do. `env` is
    added to this process's environment, or replaces it when `inherit` is false."""
    return subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), *args],
        cwd=BASE_DIR,
        env={**(os.environ if inherit else {}), **(env or {})},
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_answers(
    url: str, process: subprocess.Popen, timeout: float = 60, verify: ssl.SSLContext | bool = True
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering {url}")
        try:
            if httpx.get(url, timeout=2, verify=verify).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


@dataclass
class RunningServer:
    url: str
    log_path: Path
    process: subprocess.Popen

    def log_lines(self) -> list[str]:
        return self.log_path.read_text().splitlines()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def start_server(
    log_path: Path, workers: int = 2, env: dict | None = None, verify: ssl.SSLContext | bool = True
) -> RunningServer:
    """gunicorn serving the project on a free port, as the runtime role; over HTTPS when `env`
    has TLS_CERT_FILE (`verify` then trusts its certificate)."""
    port = free_port()
    scheme = "https" if (env or {}).get("TLS_CERT_FILE") else "http"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"],
            cwd=BASE_DIR,
            env={**os.environ, "PORT": str(port), "WEB_CONCURRENCY": str(workers), **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = RunningServer(f"{scheme}://127.0.0.1:{port}", log_path, process)
    try:
        wait_until_answers(server.url + "/healthz", process, verify=verify)
    except RuntimeError:
        server.stop()
        raise
    return server


MARK = "urn:test:marker"  # identifier system of the resources a test creates for itself


def make_marked(fhir: httpx.Client, marker: str, resource: dict) -> dict:
    """Create `resource` with an identifier (MARK|marker) that the test searches with, so
    tests never see each other's data."""
    body = {**resource, "identifier": [*resource.get("identifier", []), {"system": MARK, "value": marker}]}
    response = fhir.post(f"/{resource['resourceType']}", json=body)
    assert response.status_code == 201, response.text
    return response.json()


class JsonServer:
    """JSON documents over real HTTP on a free port, for the outside services our server calls
    (an identity provider's discovery and keys, a client's jwks_uri). `documents` maps a
    request path to its JSON body, or None for 404; it is called on every request, so the
    test may change what it serves."""

    def __init__(self, documents: Callable[[str], dict | None]) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = documents(self.path)
                if body is None:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        port = int(self.url.rsplit(":", 1)[1])
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
