"""Search figures on the Synthea data: US Core-style searches (median latency of a first page)
and the plan PostgreSQL chooses for the hottest one."""

from __future__ import annotations

from pathlib import Path

import httpx
import psycopg

from bench.harness import BenchContext, report, time_calls, vacuum_tenant
from fhirserver.search import query, sql
from tests.support import manage_command

SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthea"
TENANT = "searchbench"
BIG_PATIENT_IDENTIFIER = "https://github.com/synthetichealth/synthea|ff4188f6-12eb-419f-68a6-a0a245aa4b92"


def run(context: BenchContext) -> None:
    if not _load():
        print("Synthea data not found; search benchmarks skipped")
        return
    vacuum_tenant(context, TENANT)
    base = f"{context.server_url}/t/{TENANT}/fhir"
    with httpx.Client(base_url=base, timeout=120) as client:
        patient = client.get("/Patient", params={"identifier": BIG_PATIENT_IDENTIFIER}).json()["entry"][0]
        patient_id = patient["resource"]["id"]
        for label, path, params in _searches(patient_id):
            first = client.get(path, params=params)
            count = len([e for e in first.json().get("entry", []) if e["search"]["mode"] == "match"])
            report(
                f"{label} ({count} on page)",
                time_calls(lambda p=path, q=params: client.get(p, params=q), 30, 3),
            )
    _explain(context, patient_id)


def _load() -> bool:
    blaze = sorted((SYNTHEA / "blaze-synthea-2021").glob("*.json.gz"))
    big = SYNTHEA / "blaze-big-tx"
    files = [*blaze, *sorted(big.glob("0-missing-*.json.gz")), *sorted(big.glob("ff*.json.gz"))]
    if not files:
        return False
    manage_command("create_tenant", TENANT)
    result = manage_command("load_bundles", "--tenant", TENANT, *map(str, files))
    print(result.stdout.strip().splitlines()[-1])
    return result.returncode == 0


def _searches(patient_id: str) -> list[tuple[str, str, dict]]:
    patient = f"Patient/{patient_id}"
    return [
        ("Patient?identifier=system|value", "/Patient", {"identifier": BIG_PATIENT_IDENTIFIER}),
        ("Patient?family=...&birthdate=...", "/Patient", {"family": "Bogisich", "birthdate": "1914-06-15"}),
        (
            "Observation?patient&category=laboratory (8k-obs patient)",
            "/Observation",
            {"patient": patient, "category": "laboratory"},
        ),
        (
            "Observation?patient&category=vital-signs&date=ge2015",
            "/Observation",
            {"patient": patient, "category": "vital-signs", "date": "ge2015"},
        ),
        (
            "Observation?patient&code=loinc|8867-4 (heart rate)",
            "/Observation",
            {"patient": patient, "code": "http://loinc.org|8867-4"},
        ),
        ("Condition?patient", "/Condition", {"patient": patient}),
        (
            "MedicationRequest?patient&_include=medication",
            "/MedicationRequest",
            {"patient": patient, "_include": "MedicationRequest:medication"},
        ),
        (
            "Observation?code=loinc|2339-0 (glucose, all patients)",
            "/Observation",
            {"code": "http://loinc.org|2339-0"},
        ),
        ("Observation?value-quantity=gt100 (wide range)", "/Observation", {"value-quantity": "gt100"}),
        (
            "Observation?patient&_sort=-date&_count=100",
            "/Observation",
            {"patient": patient, "_sort": "-date", "_count": "100"},
        ),
    ]


def _explain(context: BenchContext, patient_id: str) -> None:
    """EXPLAIN the SQL search compiles for the US Core vital-signs query, as the runtime role."""
    parsed = query.parse(
        "Observation",
        [("patient", f"Patient/{patient_id}"), ("category", "vital-signs"), ("date", "ge2015")],
        sql.SUPPORTED_TYPES,
    )
    conditions, params = sql.where("Observation", parsed.clauses)
    where = " AND ".join(["r.resource_type = %s", "NOT r.deleted", *conditions])
    statement = (
        f"EXPLAIN SELECT r.resource_id FROM fhir_resource r WHERE {where} ORDER BY r.resource_id LIMIT 51"
    )
    with psycopg.connect(context.runtime_url) as conn:
        conn.execute(
            "SELECT set_config('search_path', %s, false), set_config('app.current_tenant', %s, false)",
            [f"{TENANT},public", TENANT],
        )
        plan = conn.execute(statement, ["Observation", *params]).fetchall()
    print("plan of Observation?patient&category=vital-signs&date=ge2015:")
    for (line,) in plan:
        print("    " + line)
