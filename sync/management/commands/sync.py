"""Sync a linked patient: queue a snapshot for the workers (`manage.py worker`), and with
`--wait` follow it to its end, exiting non-zero unless it completed.

The progress line counts resources, requests, retries and time waited on rate limits. The bar
and the ETA measure requests against those of the link's last complete snapshot (a re-sync
makes about the same requests), extrapolating this run's pace; a first sync has no ETA."""

from __future__ import annotations

import sys
import time

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from fhirserver.storage.repository import now
from sync.models import LinkedPatient, Snapshot
from sync.runner import enqueue
from tenants.management.commands._tenant_command import in_tenant

DONE = (Snapshot.Status.COMPLETE, Snapshot.Status.FAILED)


class Command(BaseCommand):
    help = "Queue a sync of a linked patient: sync --tenant T --patient <link id> [--wait]"

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--patient", required=True, help="the link id link_patient printed")
        parser.add_argument("--wait", action="store_true", help="follow the run; exit 1 unless it completes")
        parser.add_argument("--timeout", type=float, default=0, help="with --wait: give up after this many s")

    def handle(self, *args, tenant: str, patient: str, wait: bool, timeout: float, **options) -> None:
        with in_tenant(tenant):
            try:
                link = LinkedPatient.objects.filter(id=patient).first()
            except ValidationError:
                link = None
            if link is None:
                raise CommandError(f"no linked patient {patient} in tenant {tenant}")
            last = link.snapshots.filter(status=Snapshot.Status.COMPLETE).order_by("-finished").first()
            snapshot = enqueue(link)
            self.stdout.write(str(snapshot.id))
            self.stdout.flush()
            if wait:
                snapshot = self._follow(snapshot, last.requests if last else 0, timeout)
                if snapshot.status != Snapshot.Status.COMPLETE:
                    raise CommandError(f"snapshot {snapshot.status}: {snapshot.description}")

    def _follow(self, snapshot: Snapshot, expected_requests: int, timeout: float) -> Snapshot:
        """Progress on stderr until the snapshot ends (or the timeout passes)."""
        started = time.monotonic()
        while True:
            snapshot.refresh_from_db()
            elapsed = time.monotonic() - started
            sys.stderr.write(
                f"\r{snapshot.status}: {progress(snapshot, expected_requests)}{snapshot.fetched} resources,"
                f" {snapshot.requests} requests, {snapshot.retries} retries,"
                f" {snapshot.waited_seconds:.1f} s waited on limits, {elapsed:.0f} s"
            )
            sys.stderr.flush()
            if snapshot.status in DONE:
                sys.stderr.write(f"\n{snapshot.written} new versions; {snapshot.description}\n")
                return snapshot
            if timeout and elapsed > timeout:
                sys.stderr.write("\n")
                raise CommandError(f"snapshot {snapshot.id} still {snapshot.status} after {timeout:.0f} s")
            time.sleep(0.5)


def progress(snapshot: Snapshot, expected_requests: int, width: int = 20) -> str:
    """`[#####---------------] 25% ETA 42 s, ` while running with a known expectation, else ''."""
    if snapshot.status != Snapshot.Status.RUNNING or not expected_requests or snapshot.started is None:
        return ""
    done = min(snapshot.requests / expected_requests, 1.0)
    running = (now() - snapshot.started).total_seconds()
    if done >= 1.0:
        eta = "storing"
    elif done > 0:
        eta = f"ETA {running * (1 - done) / done:.0f} s"
    else:
        eta = "ETA -"
    filled = round(done * width)
    return f"[{'#' * filled}{'-' * (width - filled)}] {done:.0%} {eta}, "
