"""Bulk Data $export throughput: the whole Synthea set (62,721 resources) loaded into a fresh
tenant, exported at system and Patient level through the HTTP kick-off and `manage.py worker --once`
(a process of its own, so its peak RSS is the export's), three times; then once more with
`manage.py export`. Memory should not grow with the data: compare the worker's peak RSS with
an idle worker's (Django and the registry loaded, no job)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

from bench.harness import BenchContext
from config.environment import BASE_DIR
from tests.support import manage_command

SYNTHEA = BASE_DIR.parent / "shared" / "data" / "synthea"
TENANT = "exportbench"
RUNS = 3


def run(context: BenchContext) -> None:
    if not SYNTHEA.is_dir():
        print("no ../shared/data/synthea: skipped")
        return
    _load()
    base = f"{context.server_url}/t/{TENANT}/fhir"
    idle_seconds, idle_rss = _worker()
    print(f"{'idle worker (start, no job, exit)':<58} {idle_seconds:8.2f} s   peak RSS {idle_rss:6.0f} MB")
    for level, path in (("system level", "/$export"), ("Patient level", "/Patient/$export")):
        rates, peaks = [], []
        for _ in range(RUNS):
            status_url = _kick_off(base + path)
            seconds, rss = _worker()
            manifest = httpx.get(status_url, timeout=60).json()
            count = sum(output["count"] for output in manifest["output"])
            rates.append(count / max(seconds - idle_seconds, 1e-9))
            peaks.append(rss)
            print(f"{'$export, ' + level + ', worker':<58} {count} resources in {seconds:.2f} s:"
                  f" {rates[-1]:,.0f}/s (start-up excluded), peak RSS {rss:.0f} MB")  # fmt: skip
            httpx.delete(status_url, timeout=60)
        print(f"{'$export, ' + level + ', median':<58} {statistics.median(rates):,.0f} resources/s,"
              f" peak RSS {statistics.median(peaks):.0f} MB (idle worker {idle_rss:.0f} MB)")  # fmt: skip
    with tempfile.TemporaryDirectory() as output:
        result = manage_command("export", "--tenant", TENANT, "--output", output)
        print(f"{'manage.py export':<58} {result.stdout.strip().splitlines()[-1]}")


def _load() -> None:
    assert manage_command("create_tenant", TENANT).returncode == 0
    blaze = sorted((SYNTHEA / "blaze-synthea-2021").glob("*.json.gz"))
    big = SYNTHEA / "blaze-big-tx"
    files = [*blaze, *sorted(big.glob("0-missing-targets-*.json.gz")), *sorted(big.glob("ff*.json.gz"))]
    files += sorted((SYNTHEA / "smart-synthea-2019").glob("*.json.gz"))
    started = time.perf_counter()
    result = manage_command("load_bundles", "--tenant", TENANT, *map(str, files))
    assert result.returncode == 0, result.stderr[-2000:]
    print(f"{'load_bundles (whole Synthea set)':<58} {time.perf_counter() - started:8.1f} s")


def _kick_off(url: str) -> str:
    response = httpx.get(
        url, headers={"Prefer": "respond-async", "Accept": "application/fhir+json"}, timeout=60
    )
    assert response.status_code == 202, response.text
    return response.headers["Content-Location"]


def _worker() -> tuple[float, float]:
    """Seconds and peak RSS (MB) of one `worker --once` process."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, str(BASE_DIR / "manage.py"), "worker", "--once"],
        cwd=BASE_DIR,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 0
    return time.perf_counter() - started, usage.ru_maxrss / 1024
