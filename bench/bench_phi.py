"""What protecting PHI costs (issue 6): reads and searches of a Patient with field encryption
and audit on (the benchmark server) against servers with encryption off, and with both off; then
blind-index name searches over a tenant of 100,000 patients (PHI_BENCH_PATIENTS to change it).

One-client figures alternate between the servers call by call, so load from elsewhere on the
machine hits all alike. Each server reads a patient it wrote itself (encrypted or not)."""

from __future__ import annotations

import gzip
import os
import random
import tempfile
import time
from pathlib import Path

import httpx
import orjson
import psycopg

from bench.harness import BenchContext, report, report_ratio, vacuum_tenant
from tests.support import manage_command, start_server

DEVELOPMENT = {"DEBUG": "1", "AUTH_MODE": "development"}
PLAIN = {**DEVELOPMENT, "PHI_ENCRYPTION_ENABLED": "0"}
NEITHER = {**PLAIN, "AUDIT_ENABLED": "0"}
FAMILIES = [
    f"{stem}{n}" for stem in ("Smith", "Jones", "Garcia", "Nguyen", "Kowalski", "Okafor") for n in range(150)
]
GIVEN = ["Ana", "Bob", "Chen", "Dara", "Emil", "Fatima", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea"]
BUNDLE_SIZE = 1000


def run(context: BenchContext) -> None:
    _encryption_cost(context)
    _blind_search_at_scale(context, int(os.environ.get("PHI_BENCH_PATIENTS", "100000")))


def _encryption_cost(context: BenchContext) -> None:
    folder = Path(tempfile.mkdtemp())
    servers = {
        "encryption off": start_server(folder / "plain.log", workers=2, env=PLAIN),
        "encryption and audit off": start_server(folder / "neither.log", workers=2, env=NEITHER),
    }
    urls = {"encryption and audit on": context.server_url} | {name: s.url for name, s in servers.items()}
    clients = {
        name: httpx.Client(base_url=f"{url}/t/{context.tenant}/fhir", timeout=60)
        for name, url in urls.items()
    }
    try:
        calls = {}
        for name, client in clients.items():
            patient = client.post(
                "/Patient",
                json=_patient(random.Random(name), name.replace(" ", "")),  # noqa: S311 (test data)
            ).json()
            family = patient["name"][0]["family"]
            calls[name] = {
                "read Patient by id": lambda c=client, p=patient["id"]: c.get(f"/Patient/{p}"),
                "search Patient?family=<exact>": lambda c=client, f=family: c.get(
                    "/Patient", params={"family": f}
                ),
                "search Patient?name=<prefix>&birthdate=<day>": lambda c=client, p=patient: c.get(
                    "/Patient", params={"name": p["name"][0]["family"][:6], "birthdate": p["birthDate"]}
                ),
            }
        samples = _alternating(calls, 300)
        for label in calls["encryption and audit on"]:
            medians = {name: report(f"{label}, {name}", samples[name][label]) for name in calls}
            report_ratio(
                "  encryption on / off (audit on)",
                medians["encryption and audit on"],
                medians["encryption off"],
            )
            report_ratio(
                "  encryption and audit on / both off",
                medians["encryption and audit on"],
                medians["encryption and audit off"],
            )
    finally:
        for client in clients.values():
            client.close()
        for server in servers.values():
            server.stop()


def _alternating(calls: dict[str, dict], repeat: int) -> dict[str, dict[str, list[float]]]:
    samples = {name: {label: [] for label in labelled} for name, labelled in calls.items()}
    for _ in range(20):
        for labelled in calls.values():
            for call in labelled.values():
                call()
    for _ in range(repeat):
        for name, labelled in calls.items():
            for label, call in labelled.items():
                started = time.perf_counter()
                call()
                samples[name][label].append(time.perf_counter() - started)
    return samples


def _blind_search_at_scale(context: BenchContext, count: int) -> None:
    tenant = f"phi{count}"
    manage_command("create_tenant", tenant)
    folder = Path(tempfile.mkdtemp())
    generator = random.Random(7)  # noqa: S311 (reproducible test data)
    patients = [_patient(generator, str(n)) for n in range(count)]
    for start in range(0, count, BUNDLE_SIZE):
        entries = [
            {"resource": p, "request": {"method": "PUT", "url": f"Patient/{p['id']}"}}
            for p in patients[start : start + BUNDLE_SIZE]
        ]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        (folder / f"{start:08d}.json.gz").write_bytes(gzip.compress(orjson.dumps(bundle), 1))
    started = time.perf_counter()
    loaded = manage_command("load_bundles", "--tenant", tenant, str(folder), timeout=3600)
    elapsed = time.perf_counter() - started
    print(
        f"loaded {count:,} encrypted patients in {elapsed:.0f} s ({count / elapsed:,.0f} patients/s);"
        f" {loaded.stdout.strip() or loaded.stderr[-300:]}"
    )
    vacuum_tenant(context, tenant)
    with psycopg.connect(context.owner_url) as db:
        rows, size = db.execute(
            f"SELECT count(*), pg_size_pretty(pg_total_relation_size('{tenant}.fhir_index_blind'))"
            f" FROM {tenant}.fhir_index_blind"
        ).fetchone()
    print(f"blind index: {rows:,} rows, {size} with its indexes ({rows / count:.0f} per patient)")
    probe = patients[count // 2]
    family, given = probe["name"][0]["family"], probe["name"][0]["given"][0]
    queries = {
        "Patient?name=<3-letter prefix> (~1/6 of patients, page of 50)": {"name": family[:3].lower()},
        "Patient?family=<full family> (~1/900)": {"family": family},
        "Patient?name=<prefix>&birthdate=<day>": {"name": family[:5], "birthdate": probe["birthDate"]},
        "Patient?given=<given>&family=<family>": {"given": given, "family": family},
        "Patient?identifier=<ssn>": {
            "identifier": f"http://hl7.org/fhir/sid/us-ssn|{probe['identifier'][0]['value']}"
        },
        "Patient?phone=<number>": {"phone": probe["telecom"][0]["value"]},
    }
    with httpx.Client(base_url=f"{context.server_url}/t/{tenant}/fhir", timeout=60) as client:
        for label, params in queries.items():
            samples = []
            for _ in range(10):
                client.get("/Patient", params=params)
            for _ in range(200):
                started = time.perf_counter()
                response = client.get("/Patient", params=params)
                samples.append(time.perf_counter() - started)
            found = len(response.json().get("entry", []))
            report(f"{label} at {count:,}", samples)
            ordered = sorted(samples)
            print(f"  p99 {ordered[int(len(ordered) * 0.99) - 1] * 1000:.1f} ms, {found} entries on the page")


def _patient(generator: random.Random, suffix: str) -> dict:
    family, given = generator.choice(FAMILIES), generator.choice(GIVEN)
    return {
        "resourceType": "Patient",
        "id": f"p{suffix}",
        "identifier": [
            {
                "system": "http://hl7.org/fhir/sid/us-ssn",
                "value": f"999-{generator.randrange(100):02d}-{generator.randrange(10000):04d}",
            },
            {"system": "http://hospital.example.org", "value": f"mrn-{suffix}"},
        ],
        "name": [{"use": "official", "family": family, "given": [given], "prefix": ["Mx."]}],
        "telecom": [{"system": "phone", "value": f"555-{generator.randrange(10000):04d}", "use": "home"}],
        "gender": generator.choice(["female", "male"]),
        "birthDate": f"{generator.randrange(1930, 2020)}-{generator.randrange(1, 13):02d}"
        f"-{generator.randrange(1, 29):02d}",
        "address": [
            {
                "line": [f"{generator.randrange(1000)} Main St"],
                "city": "Boston",
                "postalCode": f"02{generator.randrange(1000):03d}",
            }
        ],
    }
