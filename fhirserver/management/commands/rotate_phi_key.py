"""Re-encrypt a tenant's PHI under the current master key (docs/operations.md, "Rotating the PHI key")."""

from __future__ import annotations

import sys
import time

from django.core.management.base import BaseCommand

from fhirserver.storage import keyring
from fhirserver.storage.repository import Repository
from sync import secrets as sync_secrets
from tenants.management.commands._tenant_command import in_tenant


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored version of the encrypted resource types under PHI_MASTER_KEY "
        "(keep the old key in PHI_RETIRED_MASTER_KEYS until this has run for every tenant). "
        "Runs while the server serves; interrupted, a rerun resumes."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", required=True)
        parser.add_argument(
            "--max-batches", type=int, help="stop after this many batches (to spread the work out)"
        )
        parser.add_argument("--batch-size", type=int, default=500, help="rows per transaction")

    def handle(self, *args, tenant: str, max_batches: int | None, batch_size: int, **options) -> None:
        started = time.perf_counter()

        def progress(done: int) -> None:
            sys.stderr.write(f"\rre-encrypted {done} versions")
            sys.stderr.flush()

        with in_tenant(tenant):
            done = Repository().reseal(progress, max_batches, batch_size)
            credentials = sync_secrets.reseal_all()  # sync's provider and patient credentials
        sys.stderr.write("\n")
        elapsed = time.perf_counter() - started
        self.stdout.write(
            self.style.SUCCESS(
                f"re-encrypted {done} versions and {credentials} sync credentials"
                f" under key {keyring.current_key_id()} in {elapsed:.1f}s"
            )
        )
