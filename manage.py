#!/usr/bin/env python
"""Django's command-line utility. Schema-changing commands connect as the database owner role,
all others as the runtime role (config/database.py)."""

import os
import sys


def main() -> None:
    from config.database import role_for_command

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DB_ROLE", role_for_command(sys.argv))
    # FHIR_REQUEST_TIMEOUT_SECONDS bounds the statements of a web request; commands run long
    # batches (load_bundles, reindex, the ANALYZE after them) that must not be cut off.
    os.environ.setdefault("FHIR_REQUEST_TIMEOUT_SECONDS", "0")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
