"""`make run`: development secrets, database, migrations, demo tenant and data, then the server.

Without DATABASE_URL the database is the embedded PostgreSQL under .data/postgres; this process
keeps it running and it stops when this process ends (Ctrl-C), keeping its data.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config import embedded_postgres  # noqa: E402
from config.environment import data_dir, ensure_dev_env, env_str, load_dev_env, tls_files  # noqa: E402

DEMO_TENANT = "demo"
SHARED_DEMO_DATA = ROOT.parent / "shared" / "data" / "synthea" / "smart-synthea-2019"
BUNDLED_DEMO_DATA = ROOT / "data" / "demo"


def manage(*args: str) -> None:
    subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], check=True, cwd=ROOT)


def main() -> int:
    folder = data_dir()
    ensure_dev_env(folder)
    load_dev_env(folder)
    scheme = "https" if tls_files() else "http"  # checked before anything starts
    if not env_str("DATABASE_URL"):
        embedded_postgres.ensure_running(folder)  # held by this process until it exits

    manage("setup_database")
    manage("create_tenant", DEMO_TENANT, "--name", "Demo Clinic", "--if-missing")
    manage("seed_demo", "--tenant", DEMO_TENANT)
    demo_data = SHARED_DEMO_DATA if SHARED_DEMO_DATA.is_dir() else BUNDLED_DEMO_DATA
    manage("load_bundles", "--tenant", DEMO_TENANT, "--if-empty", str(demo_data))

    port = os.environ.get("PORT", "8000")
    print_banner(scheme, port)
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"]
        + (["--reload"] if os.environ.get("DEBUG") == "1" else []),
        cwd=ROOT,
        env={**os.environ, "PORT": port},
    )
    # The background worker ($export and sync jobs, tenants/jobs.py), beside the web server.
    worker = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "worker"], cwd=ROOT)
    try:
        return server.wait()
    except KeyboardInterrupt:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
        return 0
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def print_banner(scheme: str, port: str) -> None:
    base = f"{scheme}://127.0.0.1:{port}"
    print(
        "\n".join(
            [
                "",
                "FHIR server (development)",
                f"  tenant '{DEMO_TENANT}' by path:  {base}/t/{DEMO_TENANT}/",
                f"  tenant '{DEMO_TENANT}' by host:  {scheme}://{DEMO_TENANT}.localhost:{port}/",
                f"  FHIR base:             {base}/t/{DEMO_TENANT}/fhir  (try /metadata, /Patient)",
                f"  tenant admin:          {base}/t/{DEMO_TENANT}/admin/",
                f"  platform admin:        {base}/admin/",
                f"  probes:                {base}/healthz  {base}/readyz",
                f"  demo login:            admin / {os.environ['DEMO_PASSWORD']}",
                f"  SMART discovery:       {base}/t/{DEMO_TENANT}/fhir/.well-known/smart-configuration",
                '  a bearer token:        make manage ARGS="issue_token --tenant demo --scopes system/*.*"',
                "  Ctrl-C stops the server (and the embedded database).",
                "",
            ]
        ),
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
