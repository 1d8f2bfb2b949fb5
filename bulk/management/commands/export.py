"""Export a tenant to NDJSON files from the command line, with the code the $export worker runs
(bulk.selection, bulk.writer), synchronously and with progress on stderr. For operators: no
token, every type the search index knows (system level), as of the moment it starts."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from bulk.selection import Selection, exportable
from bulk.writer import total, write_type
from fhirserver import errors
from fhirserver.registry import r4
from fhirserver.search.dates import parse_range
from fhirserver.storage.repository import now
from tenants.management.commands._tenant_command import in_tenant


class Command(BaseCommand):
    help = "Export a tenant's resources as NDJSON files (<Type>-<n>.ndjson), as $export does."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--type", dest="types", help="comma-separated resource types (default: all)")
        parser.add_argument("--since", help="only resources updated after this FHIR instant")
        parser.add_argument(
            "--output", help="folder for the files, created (default: ./export-<tenant>-<UTC time>)"
        )

    def handle(
        self, *args, tenant: str, types: str | None, since: str | None, output: str, **options
    ) -> None:
        names = [name.strip() for name in types.split(",") if name.strip()] if types else exportable("system")
        unknown = [name for name in names if not r4().is_resource_type(name)]
        if unknown:
            raise CommandError(f"unknown resource types: {', '.join(unknown)}")
        try:
            since_moment = parse_range(since, "--since")[0] if since else None
        except errors.FhirError as exc:
            raise CommandError(str(exc)) from None
        with in_tenant(tenant):
            moment = now()
            directory = Path(output or f"export-{tenant}-{moment:%Y%m%dT%H%M%SZ}")
            directory.mkdir(parents=True, exist_ok=True)
            selection = Selection("system", names, moment, ["system/*.rs"], since=since_moment)
            self._export(selection, directory)

    def _export(self, selection: Selection, directory: Path) -> None:
        started = time.perf_counter()
        progress: dict[str, dict] = {}

        def checkpoint(resource_type: str, state: dict) -> bool:
            progress[resource_type] = state
            written = total(progress)
            elapsed = time.perf_counter() - started
            sys.stderr.write(
                f"\r{resource_type}: {sum(f['count'] for f in state['files'])}"
                f"  total {written}  {written / elapsed if elapsed else 0:.0f} resources/s   "
            )
            return True

        for resource_type in selection.types:
            write_type(
                selection, resource_type, directory, progress.setdefault(resource_type, {}), checkpoint
            )
        sys.stderr.write("\n")
        elapsed = time.perf_counter() - started
        for resource_type, state in progress.items():
            count = sum(entry["count"] for entry in state["files"])
            if count:
                self.stdout.write(f"{resource_type:<32} {count:>9}")
        written = total(progress)
        self.stdout.write(
            self.style.SUCCESS(
                f"exported {written} resources to {directory} in {elapsed:.1f}s "
                f"({written / elapsed if elapsed else 0:.0f} resources/s)"
            )
        )
