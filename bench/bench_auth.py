"""What SMART authorization costs: a read with a bearer token (signature check + one indexed
look-up of the token hash) against the same read without authentication, introspection, and
issuing Backend Services tokens (private_key_jwt assertion checked, token signed and stored)."""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from bench.harness import BenchContext, report, report_ratio, time_calls
from tests.smart_support import ASSERTION_TYPE, client_assertion, public_jwk, run_manage
from tests.support import start_server


def run(context: BenchContext) -> None:
    server = start_server(Path(tempfile.mkdtemp()) / "auth.log", workers=2, env={"AUTH_MODE": "standalone"})
    try:
        reads(context, server.url)
        backend_tokens(context, server.url)
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
