"""Chooses the PostgreSQL server for the test run, before Django reads its settings.

Loaded with `-p` (pyproject.toml), so it runs before pytest-django sets Django up. The server is
DATABASE_URL when set, else the one on 127.0.0.1:5432 when it answers, else an embedded one under
.data/test-postgres; the suite gets a fresh database on it (tests/conftest.py).
"""

import os

from tests.support import configure_environment

TEST_DATABASE = os.environ.get("TEST_DATABASE_NAME", "fhirserver_test")

configure_environment(TEST_DATABASE)
