"""Serve Synthea patients as an external provider's FHIR API (sync.simulator), for demos."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand

from sync.simulated_data import LIGHT_PATIENTS, Dataset
from sync.simulator import Behaviour, Credentials, Simulator


class Command(BaseCommand):
    help = "Run a provider simulator: simulate_provider --port P [--behaviour generic|epic|cerner] [...]"

    def add_arguments(self, parser) -> None:
        parser.add_argument("--port", type=int, default=0)
        parser.add_argument("--behaviour", choices=("generic", "epic", "cerner", "va"), default="generic")
        parser.add_argument("--everything", choices=("ok", "missing", "lying"))
        parser.add_argument("--limit", type=int, default=0, help="requests a minute before 429s")
        parser.add_argument("--fail-every", type=int, default=0, help="every n-th request answers 500")
        parser.add_argument("--invalid", action="store_true", help="serve slightly invalid resources")
        parser.add_argument("--id-prefix", default="")
        parser.add_argument("--token-seconds", type=int)
        parser.add_argument(
            "--patient", action="append", help="Synthea patient ids (default: two light ones)"
        )

    def handle(self, *args, **o) -> None:
        overrides = {"limit_per_window": o["limit"], "fail_every": o["fail_every"], "invalid": o["invalid"]}
        if o["id_prefix"]:
            overrides["id_prefix"] = o["id_prefix"]
        if o["everything"]:
            overrides["everything"] = o["everything"]
        if o["token_seconds"]:
            overrides["token_seconds"] = o["token_seconds"]
        behaviour = Behaviour.named(o["behaviour"], **overrides)
        chosen = tuple(o["patient"] or LIGHT_PATIENTS)
        data = Dataset.load(chosen, behaviour.id_prefix)
        credentials = Credentials(patient=behaviour.id_prefix + chosen[0])
        simulator = Simulator(behaviour, credentials, data=data, port=o["port"]).start()
        patients = sorted({owner for owner in data.patient_of.values()})
        self.stdout.write(f"FHIR base {simulator.base_url}  token URL {simulator.token_url}")
        self.stdout.write(
            f"authorize URL {simulator.url}/authorize (approves patient {credentials.patient} at once)"
        )
        self.stdout.write(
            f"client sim-client / sim-secret, refresh token sim-refresh; patients {', '.join(patients)}"
        )
        self.stdout.flush()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            simulator.stop()
