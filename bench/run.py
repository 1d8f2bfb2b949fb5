"""`make bench`: a fresh benchmark database and a real server, then every bench/bench_*.py.

`make bench ARGS=tenancy` runs only bench_tenancy.py. Figures are printed, never asserted.
`BENCH_REUSE=1` keeps the database of an earlier run (and the secrets its data was written
under, saved in .data/bench/<database>.env), so a long load (bench_scale) is measured again
without loading it again.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import tempfile
from pathlib import Path

import django

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import BenchContext  # noqa: E402
from config.database import app_db_user, replace_credentials  # noqa: E402
from tests.support import configure_environment, create_fresh_database, start_server  # noqa: E402

# BENCH_DATABASE: another name, when several checkouts bench on one PostgreSQL server.
BENCH_DATABASE = os.environ.get("BENCH_DATABASE", "fhirserver_bench")
BENCH_TENANT = "bench"


# What data written by one run needs to be read by the next (PHI keys, the runtime role's password).
KEPT_SECRETS = ("PHI_MASTER_KEY", "PHI_INDEX_KEY", "APP_DB_PASSWORD", "SECRET_KEY")


def main(selected: list[str]) -> None:
    configure_environment(BENCH_DATABASE)
    kept = ROOT / ".data" / "bench" / f"{BENCH_DATABASE}.env"
    reuse = os.environ.get("BENCH_REUSE") == "1" and kept.exists()
    if reuse:
        os.environ.update(line.split("=", 1) for line in kept.read_text().splitlines() if "=" in line)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()  # benchmarks may use the project's modules (search compilation, ...)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the figures
    if not reuse:
        create_fresh_database(BENCH_DATABASE, {BENCH_TENANT: "Bench Clinic"})
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text("".join(f"{name}={os.environ[name]}\n" for name in KEPT_SECRETS))
        kept.chmod(0o600)
    # The unauthenticated baseline; bench_auth.py starts its own standalone-auth server to compare.
    server = start_server(
        Path(tempfile.mkdtemp()) / "server.log", workers=2, env={"DEBUG": "1", "AUTH_MODE": "development"}
    )
    owner = os.environ["DATABASE_URL"]
    context = BenchContext(
        server_url=server.url,
        owner_url=owner,
        runtime_url=replace_credentials(owner, app_db_user(), os.environ["APP_DB_PASSWORD"]),
        tenant=BENCH_TENANT,
    )
    try:
        for path in sorted((ROOT / "bench").glob("bench_*.py")):
            name = path.stem.removeprefix("bench_")
            if selected and name not in selected:
                continue
            print(f"\n== {name}")
            importlib.import_module(f"bench.{path.stem}").run(context)
    finally:
        server.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
