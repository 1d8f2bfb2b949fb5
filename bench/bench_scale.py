"""Search at scale: the Synthea set loaded again and again (`make bench ARGS=scale`).

Every patient bundle is a transaction of POSTs with `urn:uuid:` fullUrls, so each load through
`manage.py load_bundles` makes a new copy with new ids (the shared Organization/Practitioner
bundles are loaded once; conditional references resolve to them). Loading stops at
BENCH_SCALE_RESOURCES (default 1,000,000) or after BENCH_SCALE_MINUTES (default 15) of loading,
whichever comes first; the size reached and the load rate are printed. With BENCH_REUSE=1
(bench/run.py) a tenant loaded by an earlier run is topped up to the target, not reloaded.
Then, after a VACUUM (this machine's PostgreSQL runs without autovacuum): p50/p99 of the
searches below over HTTP, EXPLAIN ANALYZE of each one's page SQL as the runtime role, and
`$everything` of the heaviest patient read to the last byte, with and without gzip.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import httpx
import psycopg
from django.conf import settings
from django.db import connection

from bench.harness import BenchContext, time_calls, vacuum_tenant
from fhirserver.api.search import page_statement
from fhirserver.search import query, sorting, sql
from tests.support import manage_command

SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthea"
TENANT = "scalebench"
BIG_PATIENT_IDENTIFIER = "https://github.com/synthetichealth/synthea|ff4188f6-12eb-419f-68a6-a0a245aa4b92"
MEDIAN_PATIENT_IDENTIFIER = "https://github.com/synthetichealth/synthea|99e6bacf-7def-f6b6-5f1b-888241c8729a"


def run(context: BenchContext) -> None:
    shared = sorted((SYNTHEA / "blaze-synthea-2021").glob("0-*.json.gz"))
    patients = sorted((SYNTHEA / "blaze-synthea-2021").glob("[!0]*.json.gz"))
    patients += sorted((SYNTHEA / "blaze-big-tx").glob("*.json.gz"))
    if not patients:
        print("Synthea data not found; scale benchmark skipped")
        return
    target = int(os.environ.get("BENCH_SCALE_RESOURCES", "1000000"))
    budget = float(os.environ.get("BENCH_SCALE_MINUTES", "15")) * 60
    manage_command("create_tenant", TENANT, "--if-missing")
    total = _stored(context)
    if total == 0:
        total = _load(shared)
    started, loaded, copies = time.perf_counter(), 0, 0
    while total < target and time.perf_counter() - started < budget:
        count = _load(patients)
        total, loaded, copies = total + count, loaded + count, copies + 1
        elapsed = time.perf_counter() - started
        print(f"copy {copies}: {total:,} resources, {loaded / elapsed:.0f} resources/s over {elapsed:.0f} s")
    print(f"{total:,} resources in the tenant")
    vacuum_tenant(context, TENANT)
    measure(context)


def _stored(context: BenchContext) -> int:
    with psycopg.connect(context.owner_url) as db:
        found = db.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", [TENANT]).fetchone()[0]
        if not found:
            return 0
        return db.execute(f'SELECT count(*) FROM "{TENANT}".fhir_resource').fetchone()[0]


def measure(context: BenchContext) -> None:
    """p50/p99 and plans of the searches on the loaded tenant, about the heaviest patient (8,344
    Observations) and about a median one (576 resources, 115 Observations), and each one's
    `$everything`."""
    base = f"{context.server_url}/t/{TENANT}/fhir"
    with httpx.Client(base_url=base, timeout=300) as client:
        for identifier, only_patient in ((BIG_PATIENT_IDENTIFIER, False), (MEDIAN_PATIENT_IDENTIFIER, True)):
            found = client.get("/Patient", params={"identifier": identifier}).json()
            subject = found["entry"][0]["resource"]
            print(f"-- {identifier.rsplit('|', 1)[1]}")
            for label, resource_type, pairs in _searches(subject):
                if not only_patient or "patient=X" in label:
                    _time_search(context, client, label, resource_type, pairs)
            _everything(client, subject["id"])


def _time_search(
    context: BenchContext, client: httpx.Client, label: str, resource_type: str, pairs: list[tuple[str, str]]
) -> None:
    first = client.get(f"/{resource_type}", params=pairs)
    count = len([e for e in first.json().get("entry", []) if e["search"]["mode"] == "match"])
    samples = sorted(time_calls(lambda: client.get(f"/{resource_type}", params=pairs), 100, 5))
    p50, p99 = samples[len(samples) // 2], samples[int(len(samples) * 0.99) - 1]
    print(f"{label:<62} ({count:>3} on page) p50 {p50 * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms")
    _explain(context, resource_type, pairs)


def _everything(client: httpx.Client, patient_id: str) -> None:
    """Time to the last byte of the heavy patient's whole record, as one response, with and
    without gzip: median of 5 after one warm-up each, and the bytes on the wire."""
    for encoding in ("identity", "gzip"):
        sizes, samples = [], []
        for attempt in range(6):
            started, size = time.perf_counter(), 0
            with client.stream(
                "GET", f"/Patient/{patient_id}/$everything", headers={"Accept-Encoding": encoding}
            ) as response:
                for chunk in response.iter_raw():
                    size += len(chunk)
            if attempt:
                samples.append(time.perf_counter() - started)
                sizes.append(size)
        entries = client.get(f"/Patient/{patient_id}/$everything").json().get("entry", [])
        print(
            f"Patient/$everything ({len(entries):,} entries, {encoding}): last byte median"
            f" {sorted(samples)[2] * 1000:7.1f} ms, {sizes[-1] / 1e6:.1f} MB on the wire"
        )


def _load(files: list[Path]) -> int:
    result = manage_command("load_bundles", "--tenant", TENANT, *map(str, files))
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    found = re.findall(r"loaded (\d+) resources", result.stdout)
    return int(found[-1].replace(",", "")) if found else 0


def _searches(subject: dict) -> list[tuple[str, str, list[tuple[str, str]]]]:
    patient = f"Patient/{subject['id']}"
    name, birthdate = subject["name"][0]["family"][:3].lower(), subject["birthDate"]
    return [
        (
            "Observation?patient=X&category=laboratory&date=ge2015",
            "Observation",
            [("patient", patient), ("category", "laboratory"), ("date", "ge2015")],
        ),
        (
            "Observation?patient=X&category=laboratory",
            "Observation",
            [("patient", patient), ("category", "laboratory")],
        ),
        (
            "Observation?code=loinc|2339-0&_sort=-date&_count=50",
            "Observation",
            [("code", "http://loinc.org|2339-0"), ("_sort", "-date"), ("_count", "50")],
        ),
        (
            f"Patient?name={name}&birthdate={birthdate} (blind digests)",
            "Patient",
            [("name", name), ("birthdate", birthdate)],
        ),
        (
            "Condition?patient=X&_include=Condition:encounter",
            "Condition",
            [("patient", patient), ("_include", "Condition:encounter")],
        ),
        (
            "Observation?_content=glucose&_count=50",
            "Observation",
            [("_content", "glucose"), ("_count", "50")],
        ),
        (
            "Observation?code-value-quantity=loinc|2339-0$gt100",
            "Observation",
            [("code-value-quantity", "http://loinc.org|2339-0$gt100")],
        ),
    ]


def _explain(context: BenchContext, resource_type: str, pairs: list[tuple[str, str]]) -> None:
    """EXPLAIN ANALYZE of the page SQL the server runs for `pairs` (the first page)."""
    connection.set_schema(TENANT)  # blind digests are per tenant (storage/keyring.py)
    parsed = query.parse(resource_type, pairs, sql.SUPPORTED_TYPES)
    conditions, params = sql.where(resource_type, parsed.clauses)
    keys = sorting.sort_keys(resource_type, dict(pairs).get("_sort"))
    limit = int(dict(pairs).get("_count", settings.FHIR_PAGE_SIZE)) + 1
    statement, statement_params = page_statement(resource_type, conditions, params, keys, None, limit)
    with psycopg.connect(context.runtime_url) as conn:
        conn.execute(
            "SELECT set_config('search_path', %s, false), set_config('app.current_tenant', %s, false)",
            [f"{TENANT},public", TENANT],
        )
        plan = conn.execute(f"EXPLAIN (ANALYZE, COSTS OFF) {statement}", statement_params).fetchall()
    for (line,) in plan:
        print("    " + line)
