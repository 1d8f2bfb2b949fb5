"""The server refuses to start with missing or unsafe configuration when DEBUG is off."""

import base64

import pytest

from config.environment import ensure_dev_env
from tests.support import manage_command


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"SECRET_KEY": ""}, "SECRET_KEY is not set"),
        ({"PHI_MASTER_KEY": ""}, "PHI_MASTER_KEY is not set"),
        ({"PHI_MASTER_KEY": base64.b64encode(b"short").decode()}, "must decode to 32 bytes"),
        ({"PHI_MASTER_KEY": "not base64!"}, "not valid base64"),
        ({"PHI_INDEX_KEY": ""}, "PHI_INDEX_KEY is not set"),
        ({"PHI_INDEX_KEY": base64.b64encode(b"x" * 31).decode()}, "must decode to 32 bytes"),
        ({"PHI_RETIRED_MASTER_KEYS": "not base64!"}, "PHI_RETIRED_MASTER_KEYS is not valid base64"),
        ({"SMART_SIGNING_KEY_FILE": ""}, "SMART_SIGNING_KEY"),
        ({"AUTH_MODE": "development"}, "refused unless DEBUG"),
        ({"AUTH_MODE": "nonsense"}, "AUTH_MODE must be one of"),
        ({"DEBUG": "maybe"}, "DEBUG must be a boolean"),
        ({"TRUSTED_PROXIES": "proxy.internal"}, "'proxy.internal' is not an IP address or network"),
        ({"TRUSTED_PROXIES": "10.0.0.0/8, 10.0.0.1/8"}, "'10.0.0.1/8' is not an IP address or network"),
        ({"CORS_ALLOWED_ORIGINS": "https://app.example.org/"}, "is not an origin"),
        ({"CORS_ALLOWED_ORIGINS": "app.example.org"}, "is not an origin"),
        ({"CORS_ALLOWED_ORIGINS": "https://app.example.org:99999"}, "has an invalid port"),
        ({"CORS_ALLOWED_ORIGINS": "*, https://app.example.org"}, "cannot be combined"),
    ],
)
def test_misconfiguration_refuses_to_start(overrides, message):
    result = manage_command("check", env={"DEBUG": "0", **overrides})
    assert result.returncode != 0
    assert message in result.stderr


def test_development_auth_mode_is_accepted_with_debug():
    result = manage_command("check", env={"DEBUG": "1", "AUTH_MODE": "development"})
    assert result.returncode == 0, result.stderr


def test_valid_configuration_passes_checks():
    result = manage_command("check", "--deploy", "--fail-level", "ERROR")
    assert result.returncode == 0, result.stderr


def test_dev_env_of_an_older_checkout_gets_new_secrets_added_and_keeps_its_own(tmp_path):
    (tmp_path / "dev.env").write_text("DEBUG=1\nPHI_MASTER_KEY=kept\n")
    ensure_dev_env(tmp_path)
    ensure_dev_env(tmp_path)  # a second start adds nothing more
    lines = (tmp_path / "dev.env").read_text().splitlines()
    names = [line.split("=", 1)[0] for line in lines]
    assert "PHI_MASTER_KEY=kept" in lines
    assert names.count("PHI_INDEX_KEY") == 1 and names.count("PHI_MASTER_KEY") == 1
    index_key = next(line.split("=", 1)[1] for line in lines if line.startswith("PHI_INDEX_KEY="))
    assert len(base64.b64decode(index_key)) == 32
