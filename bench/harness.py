"""What every benchmark uses: timing, medians and one printed line per figure.

Benchmarks report figures; they never pass or fail on timing.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql


@dataclass(frozen=True)
class BenchContext:
    server_url: str
    owner_url: str
    runtime_url: str
    tenant: str


def time_calls(call: Callable[[], object], repeat: int, warmup: int = 20) -> list[float]:
    """Seconds per call, `repeat` times, after `warmup` untimed calls."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def report(name: str, samples: list[float]) -> float:
    """Print median and p95 in milliseconds; return the median in seconds."""
    ordered = sorted(samples)
    median = statistics.median(ordered)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    print(f"{name:<58} median {median * 1000:8.3f} ms   p95 {p95 * 1000:8.3f} ms   n={len(samples)}")
    return median


def report_ratio(name: str, numerator: float, denominator: float) -> None:
    print(f"{name:<58} ratio  {numerator / denominator:8.3f}")


def vacuum_tenant(context: BenchContext, tenant: str) -> None:
    """What autovacuum does after a load, done at once (this machine's PostgreSQL runs with
    autovacuum off): mark pages all-visible, so look-ups through the covering indexes
    (tenants/rls.py) are index-only scans, and refresh planner statistics."""
    with psycopg.connect(context.owner_url, autocommit=True) as db:
        tables = db.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename LIKE 'fhir\\_%%'", [tenant]
        ).fetchall()
        for (table,) in tables:
            db.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(tenant, table)))
