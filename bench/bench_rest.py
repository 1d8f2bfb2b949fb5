"""REST core figures: read by id at 1 and 8 clients, create, history of a 100-version
resource, Synthea transaction loading over HTTP, and worker memory while serving large pages."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import httpx
import psutil

from bench import load
from bench.harness import BenchContext, report, report_ratio, time_calls

SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthea"
PATIENT = {"resourceType": "Patient", "name": [{"family": "Benchmark", "given": ["Bea"]}], "gender": "female"}


def run(context: BenchContext) -> None:
    base = f"{context.server_url}/t/{context.tenant}/fhir"
    with httpx.Client(base_url=base, timeout=300) as client:
        ids = create_figures(client)
        read_figures(base, ids)
        history_figures(client)
        bundle_figures(client)
        memory_figures(context, client)


def create_figures(client: httpx.Client) -> list[str]:
    ids: list[str] = []

    def create() -> None:
        ids.append(client.post("/Patient", json=PATIENT).json()["id"])

    report("create Patient (POST, 1 client)", time_calls(create, repeat=500, warmup=20))
    return ids


def read_figures(base: str, ids: list[str]) -> None:
    paths = [f"/Patient/{resource_id}" for resource_id in ids]
    for clients in (1, 8):
        latencies, failures, rate = load.run(base, paths, clients, seconds=8)
        report(f"read by id, {clients} client(s): {rate:,.0f} req/s, {failures} errors", latencies)
        ordered = sorted(latencies)
        print(f"{'':<58} p99    {ordered[int(len(ordered) * 0.99) - 1] * 1000:8.3f} ms")


def history_figures(client: httpx.Client) -> None:
    created = client.post("/Patient", json=PATIENT).json()
    for version in range(99):
        client.put(f"/Patient/{created['id']}", json={**created, "birthDate": f"19{version:02d}-01-01"})
    samples = time_calls(
        lambda: client.get(f"/Patient/{created['id']}/_history", params={"_count": 100}), 100
    )
    report("history of a 100-version resource (_count=100)", samples)


def bundle_figures(client: httpx.Client) -> None:
    blaze = sorted((SYNTHEA / "blaze-synthea-2021").glob("*.json.gz"))
    big = SYNTHEA / "blaze-big-tx"
    files = [*blaze, *sorted(big.glob("0-missing-*.json.gz")), *sorted(big.glob("ff*.json.gz"))]
    files += sorted((SYNTHEA / "smart-synthea-2019").glob("*.json.gz"))
    if not files:
        print("Synthea data not found; bundle load skipped")
        return
    resources, seconds, big_rate = 0, 0.0, 0.0
    for path in files:
        body = gzip.decompress(path.read_bytes())
        started = time.perf_counter()
        response = client.post("", content=body, headers={"Content-Type": "application/fhir+json"})
        elapsed = time.perf_counter() - started
        count = len(response.json()["entry"])
        resources, seconds = resources + count, seconds + elapsed
        if path.name.startswith("ff"):
            big_rate = count / elapsed
    label = f"Synthea set over HTTP ({len(files)} bundles)"
    print(f"{label:<58} {resources / seconds:8.0f} resources/s")
    print(f"{'  of which the 25,000-entry transaction':<58} {big_rate:8.0f} resources/s")
    report_ratio("  total seconds / 60", seconds, 60)


def memory_figures(context: BenchContext, client: httpx.Client) -> None:
    workers = [
        p for p in psutil.process_iter(["cmdline"]) if "config.wsgi" in " ".join(p.info["cmdline"] or [])
    ]
    before = max(p.memory_info().rss for p in workers)
    for _ in range(20):
        client.get("/_history", params={"_count": 1000})
    after = max(p.memory_info().rss for p in workers)
    print(
        f"{'largest gunicorn process RSS before / after 20 x 1000-entry pages':<58} "
        f"{before / 2**20:6.0f} MiB / {after / 2**20:6.0f} MiB"
    )
