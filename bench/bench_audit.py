"""What the audit trail costs: read by id, search and create with AUDIT_ENABLED on (the
benchmark server) and off (a second server on the same database). One-client figures alternate
on and off call by call, so load from elsewhere on the machine hits both alike."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench import load
from bench.harness import BenchContext, report, report_ratio
from tests.support import start_server

DEVELOPMENT = {"DEBUG": "1", "AUTH_MODE": "development"}


def run(context: BenchContext) -> None:
    unaudited = start_server(
        Path(tempfile.mkdtemp()) / "unaudited.log", workers=2, env={**DEVELOPMENT, "AUDIT_ENABLED": "0"}
    )
    bases = [f"{url}/t/{context.tenant}/fhir" for url in (context.server_url, unaudited.url)]
    try:
        with (
            httpx.Client(base_url=bases[0], timeout=60) as on,
            httpx.Client(base_url=bases[1], timeout=60) as off,
        ):
            patient = on.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
            for n in range(20):
                on.post("/Observation", json=_observation(patient, n))
            for label, call in _calls(patient).items():
                samples_on, samples_off = _alternating(lambda c=call: c(on), lambda c=call: c(off), 300)
                median_on = report(f"{label}, 1 client, audit on", samples_on)
                median_off = report(f"{label}, 1 client, audit off", samples_off)
                report_ratio("  audit on / off", median_on, median_off)
        rates = {}
        for name, base in zip(("on", "off"), bases, strict=True):
            latencies, failures, rates[name] = load.run(base, [f"/Patient/{patient}"], 8, seconds=6)
            report(
                f"read by id, 8 clients, audit {name}: {rates[name]:,.0f} req/s, {failures} errors", latencies
            )
        report_ratio("  throughput audit on / off", rates["on"], rates["off"])
    finally:
        unaudited.stop()


def _calls(patient: str) -> dict[str, Callable[[httpx.Client], object]]:
    return {
        "read by id": lambda client: client.get(f"/Patient/{patient}"),
        "search (20 Observations of a patient)": lambda client: client.get(
            "/Observation", params={"subject": f"Patient/{patient}"}
        ),
        "create Observation": lambda client: client.post("/Observation", json=_observation(patient, 0)),
    }


def _alternating(first: Callable[[], object], second: Callable[[], object], repeat: int) -> tuple[list, list]:
    for _ in range(20):
        first(), second()
    samples: tuple[list, list] = ([], [])
    for _ in range(repeat):
        for call, into in ((first, samples[0]), (second, samples[1])):
            started = time.perf_counter()
            call()
            into.append(time.perf_counter() - started)
    return samples


def _observation(patient: str, n: int) -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": f"bench {n}"},
        "subject": {"reference": f"Patient/{patient}"},
    }
