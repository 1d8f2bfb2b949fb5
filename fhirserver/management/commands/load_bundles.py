"""Load batch/transaction Bundles from files into a tenant, through the same repository and
bundle processing as POST [base]. Reports resources per second."""

from __future__ import annotations

import gzip
import sys
import time
from pathlib import Path

import orjson
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from fhirserver import errors
from fhirserver.models import Resource
from fhirserver.storage.bundles import Trusted, process_batch, process_transaction
from fhirserver.storage.statistics import refresh_tenant_statistics
from tenants.management.commands._tenant_command import in_tenant


class Command(BaseCommand):
    help = (
        "Load FHIR batch or transaction Bundles (.json or .json.gz files, or folders of them) into a tenant."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", required=True)
        parser.add_argument(
            "--if-empty", action="store_true", help="load only if the tenant has no resources yet (seeding)"
        )
        parser.add_argument("paths", nargs="+", help="files or folders; folders load in name order")

    def handle(self, *args, tenant: str, paths: list[str], if_empty: bool, **options) -> None:
        with in_tenant(tenant):
            if if_empty and Resource.objects.exists():
                self.stdout.write(f"tenant {tenant} already has resources; nothing loaded")
                return
            self._load_all(paths)

    def _load_all(self, paths: list[str]) -> None:
        files = bundle_files(paths)
        started, loaded = time.perf_counter(), 0
        for number, path in enumerate(files, 1):
            loaded += self._load(path)
            elapsed = time.perf_counter() - started
            progress(number, len(files), loaded, elapsed)
        refresh_tenant_statistics()
        elapsed = time.perf_counter() - started
        sys.stderr.write("\n")
        self.stdout.write(
            self.style.SUCCESS(
                f"loaded {loaded} resources from {len(files)} files in {elapsed:.1f}s "
                f"({loaded / elapsed if elapsed else 0:.0f} resources/s)"
            )
        )

    def _load(self, path: Path) -> int:
        bundle = read_bundle(path)
        try:
            if bundle.get("type") == "transaction":
                with transaction.atomic():
                    results = process_transaction(bundle, Trusted())
            elif bundle.get("type") == "batch":
                results = process_batch(bundle, Trusted())
            else:
                raise CommandError(f"{path}: Bundle.type must be batch or transaction")
        except errors.FhirError as exc:
            raise CommandError(f"{path}: {exc}") from None
        failed = [r for r in results if r.outcome is not None]
        if failed:
            self.stderr.write(
                f"\n{path}: {len(failed)} of {len(results)} entries failed, e.g. {failed[0].status}"
            )
        return len(results) - len(failed)


def bundle_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.name.endswith((".json", ".json.gz")))
        elif path.exists():
            files.append(path)
        else:
            raise CommandError(f"{raw}: no such file or folder")
    return files


def read_bundle(path: Path) -> dict:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    try:
        bundle = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CommandError(f"{path}: not JSON ({exc.msg} at {exc.pos})") from None
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise CommandError(f"{path}: not a Bundle")
    return bundle


def progress(done: int, total: int, resources: int, elapsed: float) -> None:
    width = 30
    filled = width * done // total
    rate = resources / elapsed if elapsed else 0
    bar = "#" * filled + "." * (width - filled)
    sys.stderr.write(f"\r[{bar}] {done}/{total} files  {resources} resources  {rate:.0f}/s")
    sys.stderr.flush()
