"""Run Bulk Data export jobs (bulk.worker) as they are kicked off, for every tenant. `make run`
starts one; run more (here or on other machines) to export in parallel."""

from __future__ import annotations

import signal
import sys

from django.core.management.base import BaseCommand

from bulk import worker


class Command(BaseCommand):
    help = "Run queued $export jobs of every tenant; resumes jobs whose worker stopped."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--once", action="store_true", help="run what is waiting, then exit")

    def handle(self, *args, once: bool, **options) -> None:
        # SIGTERM ends the process through SystemExit, so the current file is closed and the
        # job's advisory lock is released at once; the next worker resumes the job.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        self.stdout.write("export worker started", ending="\n")
        self.stdout.flush()
        worker.serve(once=once)
