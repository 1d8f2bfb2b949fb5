"""What tenancy costs: resolving the tenant per request, and row-level security per query."""

from __future__ import annotations

import uuid

import httpx
import psycopg

from bench.harness import BenchContext, report, report_ratio, time_calls

ROWS = 20_000


def run(context: BenchContext) -> None:
    http_overhead(context)
    rls_overhead(context)


def http_overhead(context: BenchContext) -> None:
    with httpx.Client(base_url=context.server_url) as client:
        public = report("GET /healthz (no tenant, no query)", time_calls(lambda: client.get("/healthz"), 500))
        missing = f"/t/{context.tenant}/fhir/Patient/missing"
        tenant = report(
            "GET a missing resource in a tenant (resolve, set, 1 read)",
            time_calls(lambda: client.get(missing), 500),
        )
        report_ratio("tenant read / healthz", tenant, public)


def rls_overhead(context: BenchContext) -> None:
    schema = context.tenant
    ids = [uuid.uuid4().hex for _ in range(ROWS)]
    with psycopg.connect(context.owner_url, autocommit=True) as owner:
        owner.execute(f"SET search_path TO {schema}")
        owner.execute("SELECT set_config('app.current_tenant', %s, false)", [schema])
        with (
            owner.cursor() as cursor,
            cursor.copy(
                "COPY fhir_resource (resource_type, resource_id, version_id, last_updated, deleted, content)"
                " FROM STDIN"
            ) as copy,
        ):
            for rid in ids:
                copy.write_row(
                    ("Patient", rid, 1, "2026-01-01T00:00:00Z", False, '{"resourceType":"Patient"}')
                )
        owner.execute("ANALYZE fhir_resource")
        probe = ids[::10]
        query = "SELECT content FROM fhir_resource WHERE resource_type = 'Patient' AND resource_id = %s"
        bypass = report("primary-key read, owner (superuser: RLS bypassed)", time_reads(owner, query, probe))
    with psycopg.connect(context.runtime_url, autocommit=True) as runtime:
        runtime.execute(f"SET search_path TO {schema}")
        runtime.execute("SELECT set_config('app.current_tenant', %s, false)", [schema])
        policed = report(
            "primary-key read, runtime role (RLS policy applied)", time_reads(runtime, query, probe)
        )
        plan = runtime.execute("EXPLAIN " + query, [probe[0]]).fetchall()
    report_ratio("RLS / no RLS", policed, bypass)
    print("plan as the runtime role:")
    for (line,) in plan:
        print("    " + line)


def time_reads(conn: psycopg.Connection, query: str, ids: list[str]) -> list[float]:
    cursor = conn.cursor()
    position = iter(ids * 3)
    return time_calls(lambda: cursor.execute(query, [next(position)]).fetchone(), repeat=len(ids) * 2)
