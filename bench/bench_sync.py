"""Sync throughput: one Synthea patient (BENCH_SYNC_PATIENT, default the heaviest: 25,000
resources) served by the provider simulator (sync/simulator.py, pages of 100), synced into a
fresh tenant by the sync queue in this process, at each rate of BENCH_SYNC_RATES (requests a
minute, 0 for unlimited; default 60,600,0: the 60/min run alone takes about five minutes), then
re-synced unchanged. At r/min the lower bound is (requests - 1) x 60/r s; figures are wall time
from enqueue to a complete snapshot."""

from __future__ import annotations

import io
import os
import time

from django.core.management import call_command
from django.db import connection

from bench.harness import BenchContext
from sync.models import Snapshot
from sync.runner import QUEUE
from sync.simulated_data import SYNTHEA, Dataset
from sync.simulator import Behaviour, Simulator
from tenants import jobs
from tenants.lifecycle import get_tenant

PATIENT = os.environ.get("BENCH_SYNC_PATIENT", "ff4188f6-12eb-419f-68a6-a0a245aa4b92")
RATES = [int(rate) for rate in os.environ.get("BENCH_SYNC_RATES", "60,600,0").split(",")]


def run(context: BenchContext) -> None:
    if not SYNTHEA.is_dir():
        print("no ../shared/data/synthea: skipped")
        return
    started = time.perf_counter()
    simulator = Simulator(Behaviour(page_size=100), data=Dataset.load((PATIENT,))).start()
    print(f"{'simulator loaded':<44} {time.perf_counter() - started:8.1f} s")
    try:
        for rpm in RATES:
            link_id = _link(context.tenant, simulator, rpm)
            snapshot, seconds = _sync(context.tenant, link_id)
            resources = sum(snapshot.counts.values())
            label = f"sync at {rpm}/min" if rpm else "sync unlimited"
            bound = (snapshot.requests - 1) * 60 / rpm if rpm else 0
            print(
                f"{label:<44} {seconds:8.1f} s  {snapshot.status}, {resources} resources,"
                f" {snapshot.requests} requests, {resources / seconds:,.0f} resources/s"
                + (f", lower bound {bound:.1f} s ({seconds / bound - 1:+.0%})" if rpm else "")
            )
            print(f"{'  its phases':<44} {snapshot.description}")
        again, seconds = _sync(context.tenant, link_id)
        label = f"re-sync unchanged ({f'{rpm}/min' if rpm else 'unlimited'})"
        print(f"{label:<44} {seconds:8.1f} s  {again.written} new versions")
        print(f"{'  its phases':<44} {again.description}")
    finally:
        simulator.stop()


def _link(tenant: str, simulator: Simulator, rpm: int) -> str:
    name = f"bench-{rpm}-{time.time_ns()}"
    url = simulator.base_url.replace("http://", "fhir+http://")
    url += f"?token_url={simulator.token_url}&client_id=sim-client&client_secret=sim-secret"
    call_command(
        "add_provider", "--tenant", tenant, "--name", name, url, "--rpm", str(rpm), stdout=io.StringIO()
    )
    out = io.StringIO()
    call_command(
        "link_patient", "--tenant", tenant, "--provider", name, "--provider-patient-id", PATIENT,
        "--refresh-token", "sim-refresh", stdout=out,
    )  # fmt: skip
    return out.getvalue().strip()


def _sync(tenant: str, link_id: str) -> tuple[Snapshot, float]:
    connection.set_tenant(get_tenant(tenant))
    try:
        snapshot = Snapshot.objects.create(patient_id=link_id)
    finally:
        connection.set_schema_to_public()
    started = time.perf_counter()
    jobs.serve([QUEUE], poll_seconds=0.1, once=True)
    seconds = time.perf_counter() - started
    connection.set_tenant(get_tenant(tenant))
    try:
        return Snapshot.objects.get(id=snapshot.id), seconds
    finally:
        connection.set_schema_to_public()
