"""The signing key ring: kid derivation, JWKS, and rotation with the retired key still verifying."""

from __future__ import annotations

import base64
import hashlib
import os

import httpx
import jwt
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from config.environment import new_rsa_private_key_pem
from smart_auth.keys import KeyRing
from tests.support import manage_command, start_server


def test_kid_is_the_sha256_of_the_modulus():
    pem = new_rsa_private_key_pem().decode()
    n = load_pem_private_key(pem.encode(), password=None).public_key().public_numbers().n
    expected = base64.urlsafe_b64encode(hashlib.sha256(n.to_bytes(256, "big")).digest()).rstrip(b"=").decode()
    ring = KeyRing(pem, [])
    assert ring.current.kid == expected
    assert [key["kid"] for key in ring.jwks()["keys"]] == [expected]


def test_rotation_keeps_the_retired_key_verifying(world, tmp_path):
    old_key_file = os.environ["SMART_SIGNING_KEY_FILE"]
    new_key_file = tmp_path / "new.pem"
    new_key_file.write_bytes(new_rsa_private_key_pem())
    rotated = {"SMART_SIGNING_KEY_FILE": str(new_key_file), "SMART_RETIRED_SIGNING_KEY_FILES": old_key_file}

    old_token = manage_command("issue_token", "--tenant", "alpha", "--scopes", "user/*.rs").stdout.strip()
    new_token = manage_command(
        "issue_token", "--tenant", "alpha", "--scopes", "user/*.rs", env=rotated
    ).stdout
    new_token = new_token.strip()
    assert jwt.get_unverified_header(old_token)["kid"] != jwt.get_unverified_header(new_token)["kid"]

    server = start_server(tmp_path / "rotated.log", workers=1, env=rotated)
    try:
        kids = {key["kid"] for key in httpx.get(f"{server.url}/t/alpha/auth/jwks").json()["keys"]}
        assert kids == {jwt.get_unverified_header(t)["kid"] for t in (old_token, new_token)}
        patient = f"/t/alpha/fhir/Patient/{world['patient']}"
        for token in (old_token, new_token):
            response = httpx.get(server.url + patient, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200
    finally:
        server.stop()
    # The server that never had the new key refuses what it signed.
    refused = httpx.get(world["server"] + patient, headers={"Authorization": f"Bearer {new_token}"})
    assert refused.status_code == 401
