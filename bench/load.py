"""A small HTTP load generator: N worker processes, each with one keep-alive connection,
issuing GETs for a fixed time. Runs on the same 2 cores as the server (reported as such)."""

from __future__ import annotations

import http.client
import multiprocessing
import random
import time
from urllib.parse import urlsplit


def _worker(url: str, paths: list[str], seconds: float, queue: multiprocessing.Queue) -> None:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port)
    latencies, errors = [], 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        path = random.choice(paths)  # noqa: S311 (load pattern, not security)
        started = time.perf_counter()
        conn.request("GET", parts.path + path, headers={"Accept": "application/fhir+json"})
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - started)
        errors += response.status != 200
    queue.put((latencies, errors))


def run(url: str, paths: list[str], clients: int, seconds: float) -> tuple[list[float], int, float]:
    """(latencies in seconds, error count, requests per second)."""
    queue: multiprocessing.Queue = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(target=_worker, args=(url, paths, seconds, queue)) for _ in range(clients)
    ]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    results = [queue.get() for _ in workers]
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    latencies = [x for result in results for x in result[0]]
    return latencies, sum(r[1] for r in results), len(latencies) / elapsed
