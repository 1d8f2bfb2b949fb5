"""Rebuild a tenant's search index, e.g. after the search parameter definitions changed."""

from __future__ import annotations

import sys
import time

from django.core.management.base import BaseCommand, CommandError

from fhirserver.registry import r4
from fhirserver.storage.repository import Repository
from fhirserver.storage.statistics import refresh_tenant_statistics
from tenants.management.commands._tenant_command import in_tenant


class Command(BaseCommand):
    help = "Re-extract the search index of every current resource of a tenant (optionally one type)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--type", dest="resource_type", help="only this resource type")

    def handle(self, *args, tenant: str, resource_type: str | None, **options) -> None:
        if resource_type and not r4().is_resource_type(resource_type):
            raise CommandError(f"'{resource_type}' is not an R4 resource type")
        started = time.perf_counter()

        def progress(done: int) -> None:
            rate = done / (time.perf_counter() - started)
            sys.stderr.write(f"\rreindexed {done} resources ({rate:.0f}/s)")
            sys.stderr.flush()

        with in_tenant(tenant):
            done = Repository().reindex(resource_type, progress)
            refresh_tenant_statistics()
        sys.stderr.write("\n")
        elapsed = time.perf_counter() - started
        self.stdout.write(self.style.SUCCESS(f"reindexed {done} resources in {elapsed:.1f}s"))
