"""Schemas are the first wall between tenants, row-level security the second."""

import uuid

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from fhirserver.models import Resource
from tenants.models import Tenant
from tenants.rls import COVERING_INDEXES


def store(slug: str, resource_id: str, content: str) -> None:
    connection.set_tenant(Tenant.objects.get(slug=slug))
    Resource.objects.create(
        resource_type="Patient",
        resource_id=resource_id,
        version_id=1,
        last_updated=timezone.now(),
        content=content,
    )


def visible(slug: str, resource_id: str) -> list[str]:
    connection.set_tenant(Tenant.objects.get(slug=slug))
    return list(
        Resource.objects.filter(resource_type="Patient", resource_id=resource_id).values_list(
            "content", flat=True
        )
    )


def test_same_resource_id_in_two_tenants_each_sees_only_its_own():
    rid = uuid.uuid4().hex
    store("alpha", rid, '{"from":"alpha"}')
    store("beta", rid, '{"from":"beta"}')
    assert visible("alpha", rid) == ['{"from":"alpha"}']
    assert visible("beta", rid) == ['{"from":"beta"}']


def test_rows_are_stamped_with_their_tenant_key(owner_db):
    rid = uuid.uuid4().hex
    store("alpha", rid, "{}")
    row = owner_db.execute(
        "SELECT tenant_key FROM alpha.fhir_resource WHERE resource_id = %s", [rid]
    ).fetchone()
    assert row == ("alpha",)


def test_wrong_session_tenant_sees_nothing_and_cannot_insert(runtime_db):
    rid = uuid.uuid4().hex
    store("alpha", rid, "{}")
    runtime_db.execute("SET search_path TO alpha")
    runtime_db.execute("SELECT set_config('app.current_tenant', 'alpha', false)")
    assert runtime_db.execute(
        "SELECT count(*) FROM fhir_resource WHERE resource_id = %s", [rid]
    ).fetchone() == (1,)

    runtime_db.execute("SELECT set_config('app.current_tenant', 'beta', false)")
    assert runtime_db.execute("SELECT count(*) FROM fhir_resource").fetchone() == (0,)
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        runtime_db.execute(
            "INSERT INTO fhir_resource (resource_type, resource_id, version_id, last_updated,"
            " deleted, content) VALUES ('Patient', %s, 1, now(), false, '{}')",
            [uuid.uuid4().hex],
        )


def test_claiming_another_tenant_key_is_refused(runtime_db):
    runtime_db.execute("SET search_path TO alpha")
    runtime_db.execute("SELECT set_config('app.current_tenant', 'alpha', false)")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        runtime_db.execute(
            "INSERT INTO fhir_resource (resource_type, resource_id, version_id, last_updated, deleted,"
            " content, tenant_key) VALUES ('Patient', %s, 1, now(), false, '{}', 'beta')",
            [uuid.uuid4().hex],
        )


def test_no_session_tenant_sees_nothing(runtime_db):
    store("alpha", uuid.uuid4().hex, "{}")
    assert runtime_db.execute("SELECT count(*) FROM alpha.fhir_resource").fetchone() == (0,)


def test_runtime_role_is_neither_superuser_nor_bypassrls_nor_owner(owner_db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        (runtime_user,) = cursor.fetchone()
    rolsuper, rolbypassrls, rolcreaterole = owner_db.execute(
        "SELECT rolsuper, rolbypassrls, rolcreaterole FROM pg_roles WHERE rolname = %s", [runtime_user]
    ).fetchone()
    assert (rolsuper, rolbypassrls, rolcreaterole) == (False, False, False)
    owned = owner_db.execute(
        "SELECT count(*) FROM pg_tables WHERE tableowner = %s", [runtime_user]
    ).fetchone()
    assert owned == (0,)


def test_every_tenant_table_has_a_forced_policy(owner_db):
    rows = owner_db.execute(
        "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,"
        " EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid),"
        " EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_key')"
        " FROM pg_class c WHERE c.relnamespace = 'beta'::regnamespace AND c.relkind = 'r'"
        " AND c.relname <> 'django_migrations'"
    ).fetchall()
    assert len(rows) > 5
    assert all(row[1:] == (True, True, True, True) for row in rows), rows


def test_runtime_role_cannot_change_policies_or_structure(runtime_db):
    for statement in [
        "ALTER TABLE alpha.fhir_resource DISABLE ROW LEVEL SECURITY",
        "DROP POLICY tenant_isolation ON alpha.fhir_resource",
        "CREATE SCHEMA intruder",
    ]:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            runtime_db.execute(statement)


def test_runtime_role_refreshes_statistics_of_its_own_tenant_only(runtime_db, owner_db):
    runtime_db.execute("SELECT set_config('app.current_tenant', 'beta', false)")
    runtime_db.execute("SELECT public.analyze_current_tenant()")
    analyzed = owner_db.execute(
        "SELECT schemaname, last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'fhir_resource'"
        " AND schemaname IN ('alpha', 'beta') ORDER BY schemaname"
    ).fetchall()
    assert ("beta", True) in analyzed
    rolled = owner_db.execute(
        "SELECT has_function_privilege('public', 'public.analyze_current_tenant()', 'EXECUTE')"
    )
    assert rolled.fetchone() == (False,)


def test_hot_tables_have_covering_indexes_restricted_to_their_schema(owner_db):
    """The policy checks tenant_key on every row; these indexes imply that check, so searches
    can be index-only (tenants/rls.py, COVERING_INDEXES)."""
    for schema in ("alpha", "beta"):
        found = dict(
            owner_db.execute(
                "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = %s"
                " AND indexname LIKE '%%\\_tenant\\_covering'",
                [schema],
            ).fetchall()
        )
        assert set(found) == set(COVERING_INDEXES)
        for table, definition in found.items():
            assert f"WHERE (tenant_key = '{schema}'::text)" in definition
            assert ", ".join(COVERING_INDEXES[table]).replace('"', "") in definition.replace('"', "")
