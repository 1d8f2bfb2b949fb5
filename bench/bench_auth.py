"""What SMART authorization costs: a read with a bearer token (signature check + one indexed
look-up of the token hash) against the same read without authentication, introspection,
issuing Backend Services tokens (private_key_jwt assertion checked, token signed and stored), and
a search by a user whose role has an ABAC rule against one whose role has none."""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from access.models import AccessRule
from bench.harness import BenchContext, report, report_ratio, time_calls
from fhirserver.api.authorization import Access
from smart_auth.context import AuthContext
from tenants.management.commands._tenant_command import in_tenant
from tests.smart_support import ASSERTION_TYPE, client_assertion, public_jwk, run_manage
from tests.support import start_server


def run(context: BenchContext) -> None:
    server = start_server(Path(tempfile.mkdtemp()) / "auth.log", workers=2, env={"AUTH_MODE": "standalone"})
    try:
        reads(context, server.url)
        backend_tokens(context, server.url)
        abac_search(context, server.url)
    finally:
        server.stop()


def reads(context: BenchContext, standalone_url: str) -> None:
    with httpx.Client(base_url=context.server_url) as open_client:
        created = open_client.post(
            f"/t/{context.tenant}/fhir/Patient", json={"resourceType": "Patient"}
        ).json()
        path = f"/t/{context.tenant}/fhir/Patient/{created['id']}"
        unauthenticated = report(
            "read by id, AUTH_MODE=development (no token)", time_calls(lambda: open_client.get(path), 500)
        )
    tokens = {
        "system/*.*": run_manage("issue_token", "--tenant", context.tenant, "--scopes", "system/*.*"),
        "patient/*.rs (compartment check)": run_manage(
            "issue_token", "--tenant", context.tenant, "--scopes", "patient/*.rs", "--patient", created["id"]
        ),
    }
    for label, token in tokens.items():
        with httpx.Client(base_url=standalone_url, headers={"Authorization": f"Bearer {token}"}) as client:
            assert client.get(path).status_code == 200
            with_token = report(
                f"read by id, bearer token {label}", time_calls(lambda: client.get(path), 500)
            )
            report_ratio("  / unauthenticated read", with_token, unauthenticated)
    with httpx.Client(base_url=standalone_url, headers={"Authorization": f"Bearer {token}"}) as client:
        introspect = f"/t/{context.tenant}/auth/introspect"
        report(
            "introspection of a live token",
            time_calls(lambda: client.post(introspect, data={"token": token}), 300),
        )


def backend_tokens(context: BenchContext, url: str) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = public_jwk(key, "bench", "ES384")
    jwks_file = Path(tempfile.mkdtemp()) / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [jwk]}))
    client_id = f"bench-{uuid.uuid4().hex[:8]}"
    run_manage(
        "register_client",
        "--tenant",
        context.tenant,
        "--client-id",
        client_id,
        "--backend",
        "--jwks-file",
        str(jwks_file),
    )
    token_url = f"{url}/t/{context.tenant}/auth/token"

    def issue() -> None:
        assertion = client_assertion(key, "bench", "ES384", client_id, token_url)
        response = httpx.post(
            token_url,
            data={
                "grant_type": "client_credentials",
                "scope": "system/*.rs",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion,
            },
        )
        assert response.status_code == 200, response.text

    report("Backend Services token (ES384 assertion -> RS256 token)", time_calls(issue, 200, warmup=10))


ABAC_PATIENTS = 400  # half in each organisation
ABAC_OBSERVATIONS = 10  # per patient


def abac_search(context: BenchContext, url: str) -> None:
    """Observation?code=... (one page of 50 out of 4,000) by a clinician reaching half the
    patients through `organization={organization}`, against a role without rules."""
    with httpx.Client(base_url=context.server_url, timeout=300) as open_client:
        organizations = [
            open_client.post(
                f"/t/{context.tenant}/fhir/Organization", json={"resourceType": "Organization"}
            ).json()["id"]
            for _ in range(2)
        ]
        entries = []
        for n in range(ABAC_PATIENTS):
            patient = f"urn:uuid:{uuid.uuid4()}"
            organization = {"reference": f"Organization/{organizations[n % 2]}"}
            entries.append(_post(patient, {"resourceType": "Patient", "managingOrganization": organization}))
            for _ in range(ABAC_OBSERVATIONS):
                observation = {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "urn:bench", "code": "abac"}]},
                    "subject": {"reference": patient},
                }
                entries.append(_post(f"urn:uuid:{uuid.uuid4()}", observation))
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        assert open_client.post(f"/t/{context.tenant}/fhir", json=bundle).status_code == 200
    role = f"bench-ward-{uuid.uuid4().hex[:6]}"
    with in_tenant(context.tenant):
        AccessRule.objects.create(role=role, patient_criteria="organization={organization}")
    path = "/Observation?code=urn:bench|abac&_count=50"
    medians = {}
    for label, user_role in (("role without rules", "bench-plain"), ("role with an ABAC rule", role)):
        username = f"bench{uuid.uuid4().hex[:8]}"
        run_manage("create_user", "--tenant", context.tenant, "--username", username, "--password", "x" * 12,
                   "--role", user_role, "--organization", f"Organization/{organizations[0]}")  # fmt: skip
        token = run_manage(
            "issue_token", "--tenant", context.tenant, "--scopes", "user/*.rs", "--username", username
        )
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=f"{url}/t/{context.tenant}/fhir", headers=headers, timeout=60) as client:
            assert len(client.get(path).json()["entry"]) == 50
            medians[label] = report(
                f"search a page of 50, user token, {label}", time_calls(lambda: client.get(path), 200)
            )
    report_ratio("  / without rules", medians["role with an ABAC rule"], medians["role without rules"])
    _explain(context, role, organizations[0])


def _post(full_url: str, resource: dict) -> dict:
    return {
        "fullUrl": full_url,
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }


def _explain(context: BenchContext, role: str, organization: str) -> None:
    """The plan of the ABAC filter on a search like the one above: index scans, no Seq Scan."""
    from django.db import connection

    from smart_auth.models import UserProfile

    with in_tenant(context.tenant):
        user = str(UserProfile.objects.filter(role=role).values_list("user_id", flat=True).first())
        found = Access(
            AuthContext(user=user, roles=frozenset({role}), scopes=frozenset({"user/*.rs"}))
        ).require("Observation", "search-type")
        with connection.cursor() as db:
            db.execute(
                "EXPLAIN SELECT r.resource_id FROM fhir_resource r WHERE r.resource_type = 'Observation'"
                " AND NOT r.deleted AND r.resource_id IN (SELECT i.resource_id FROM fhir_index_token i"
                " WHERE i.resource_type = 'Observation' AND i.param = 'code' AND i.system = 'urn:bench'"
                f" AND i.code = 'abac') AND {found.sql} ORDER BY r.resource_id LIMIT 51",
                list(found.params),
            )
            plan = [row[0] for row in db.fetchall()]
    scans = sorted({line.strip().split(" on ")[0].split("->")[-1].strip() for line in plan if " on " in line})
    print("  plan of the ABAC-filtered search:", ", ".join(scans))
    if any("Seq Scan" in line for line in plan):
        print("\n".join(plan))
