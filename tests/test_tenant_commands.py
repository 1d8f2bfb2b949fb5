"""The tenant management commands, run as operators run them."""

import pytest
from psycopg import sql

from tenants.models import Tenant
from tests.support import manage_command


def schema_exists(owner_db, name: str) -> bool:
    row = owner_db.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [name]).fetchone()
    return row is not None


def test_create_list_and_delete(owner_db, unique_slug):
    created = manage_command("create_tenant", unique_slug, "--name", "St Mary's")
    assert created.returncode == 0, created.stderr
    assert schema_exists(owner_db, unique_slug)
    listed = manage_command("list_tenants")
    assert any(line.split()[:2] == [unique_slug, "active"] for line in listed.stdout.splitlines())
    assert "St Mary's" in listed.stdout

    deleted = manage_command("delete_tenant", unique_slug, "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert not schema_exists(owner_db, unique_slug)
    assert not Tenant.objects.filter(slug=unique_slug).exists()


def test_delete_asks_and_keeps_everything_unless_confirmed(owner_db, unique_slug):
    assert manage_command("create_tenant", unique_slug).returncode == 0
    refused = manage_command("delete_tenant", unique_slug, input="no\n")
    assert refused.returncode != 0
    assert "nothing deleted" in refused.stderr
    assert schema_exists(owner_db, unique_slug)
    confirmed = manage_command("delete_tenant", unique_slug, input=f"{unique_slug}\n")
    assert confirmed.returncode == 0, confirmed.stderr
    assert not schema_exists(owner_db, unique_slug)


def test_create_twice_is_refused_unless_if_missing(unique_slug):
    assert manage_command("create_tenant", unique_slug).returncode == 0
    again = manage_command("create_tenant", unique_slug)
    assert again.returncode != 0
    assert "already exists" in again.stderr
    assert manage_command("create_tenant", unique_slug, "--if-missing").returncode == 0


@pytest.mark.parametrize(
    "slug",
    [
        "Uppercase",
        "..",
        "a..b",
        "x'; DROP TABLE tenants_tenant; --",
        'quote"d',
        "semi;colon",
        "a" * 64,
        "-leading",
        "trailing-",
        "1starts-with-digit",
        "public",
        "pg-catalog",
        "under_score",
        "",
    ],
)
def test_malformed_slugs_are_rejected_and_nothing_is_created(owner_db, slug):
    before = owner_db.execute("SELECT count(*) FROM pg_namespace").fetchone()
    result = manage_command("create_tenant", slug)
    assert result.returncode != 0
    assert "slug" in result.stderr
    assert "Traceback" not in result.stderr
    assert owner_db.execute("SELECT count(*) FROM pg_namespace").fetchone() == before
    assert not Tenant.objects.filter(slug=slug).exists()


def test_failure_midway_leaves_neither_row_nor_schema(owner_db, unique_slug):
    # A schema of that name already exists, so CREATE SCHEMA fails after the row was inserted.
    owner_db.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(unique_slug)))
    try:
        result = manage_command("create_tenant", unique_slug)
        assert result.returncode != 0
        assert not Tenant.objects.filter(slug=unique_slug).exists()
        tables = owner_db.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = %s", [unique_slug]
        ).fetchone()
        assert tables == (0,)
    finally:
        owner_db.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(unique_slug)))


@pytest.mark.parametrize("command", ["suspend_tenant", "activate_tenant", "delete_tenant"])
def test_commands_on_unknown_tenant_fail_cleanly(command):
    result = manage_command(
        command, "no-such-tenant", "--yes" if command == "delete_tenant" else "--verbosity=1"
    )
    assert result.returncode != 0
    assert "no tenant 'no-such-tenant'" in result.stderr
    assert "Traceback" not in result.stderr
