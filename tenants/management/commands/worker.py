"""Run the background jobs of every tenant: Bulk Data exports and patient syncs (tenants.jobs).
`make run` starts one; run more, here or on other machines, to work the queues in parallel."""

from __future__ import annotations

import signal
import sys

from django.conf import settings
from django.core.management.base import BaseCommand

from tenants import jobs


class Command(BaseCommand):
    help = "Run queued $export and sync jobs of every tenant; takes over jobs whose worker stopped."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--once", action="store_true", help="run what is waiting, then exit")

    def handle(self, *args, once: bool, **options) -> None:
        # SIGTERM ends the process through SystemExit, so open files are closed and the job's
        # advisory lock is released at once; the next worker takes the job over.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        self.stdout.write("worker started", ending="\n")
        self.stdout.flush()
        jobs.serve(jobs.queues(), settings.WORKER_POLL_SECONDS, once=once)
