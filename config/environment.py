"""Reading configuration from the environment, and the development defaults kept in `.data/`.

Production sets every variable explicitly. A developer's checkout gets `.data/dev.env`, written
once by `make run` / `make manage` (see `ensure_dev_env`), so that `manage.py` run by hand uses
exactly the secrets and database the running server uses. Variables already in the environment
always win over the file.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
DEV_ENV_NAME = "dev.env"
SIGNING_KEY_NAME = "smart_signing_key.pem"


def data_dir() -> Path:
    """The git-ignored folder for local state: dev secrets, the embedded database, exports."""
    return Path(os.environ.get("FHIR_DATA_DIR", BASE_DIR / ".data")).resolve()


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def env_bool(name: str, default: bool = False) -> bool:
    value = env_str(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {value!r}")


def env_list(name: str, default: list[str]) -> list[str]:
    value = env_str(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_networks(name: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated IP addresses or CIDR networks (empty when unset)."""
    networks = []
    for item in env_list(name, []):
        try:
            networks.append(ipaddress.ip_network(item))
        except ValueError as exc:  # also 10.0.0.1/8: host bits set hints at a typo
            raise ImproperlyConfigured(f"{name}: {item!r} is not an IP address or network ({exc})") from exc
    return tuple(networks)


ANY_ORIGIN = "*"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def env_origins(name: str, default: list[str]) -> tuple[str, ...]:
    """Comma-separated origins (`scheme://host[:port]`), or `*` alone for any origin.

    Each is kept in the form browsers send in `Origin` (RFC 6454, section 6.2: lowercase
    scheme and host, default port omitted), so a plain string comparison decides.
    """
    values = env_list(name, default)
    if ANY_ORIGIN in values:
        if len(values) > 1:
            raise ImproperlyConfigured(f"{name}: `*` allows every origin and cannot be combined with others")
        return (ANY_ORIGIN,)
    return tuple(_serialized_origin(name, value) for value in values)


def _serialized_origin(name: str, value: str) -> str:
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: {value!r} has an invalid port") from exc
    if (
        parts.scheme not in _DEFAULT_PORTS
        or not parts.hostname
        or parts.username is not None
        or parts.path
        or parts.query
        or parts.fragment
    ):
        raise ImproperlyConfigured(
            f"{name}: {value!r} is not an origin; write scheme://host[:port], with no path or trailing slash"
        )
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    suffix = "" if port in (None, _DEFAULT_PORTS[parts.scheme]) else f":{port}"
    return f"{parts.scheme}://{host}{suffix}"


def tls_files() -> tuple[str, str] | None:
    """(certificate, private key) PEM paths when the server serves HTTPS itself, else None."""
    cert, key = env_str("TLS_CERT_FILE"), env_str("TLS_KEY_FILE")
    if bool(cert) != bool(key):
        missing = "TLS_KEY_FILE" if cert else "TLS_CERT_FILE"
        raise ImproperlyConfigured(
            f"{missing} is not set: set both TLS_CERT_FILE and TLS_KEY_FILE to serve HTTPS, "
            "or neither to serve plain HTTP."
        )
    return (cert, key) if cert else None


def load_dev_env(folder: Path) -> None:
    """Put the KEY=VALUE lines of `<folder>/dev.env` into os.environ, never overriding."""
    path = folder / DEV_ENV_NAME
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        os.environ.setdefault(key.strip(), value.strip())


def ensure_dev_env(folder: Path) -> Path:
    """Write development secrets into `<folder>/dev.env` once; later calls reuse them.

    The SMART signing key is generated into its own PEM file next to it, also only once:
    regenerating it would silently invalidate every token already issued.
    """
    folder.mkdir(parents=True, exist_ok=True)
    key_path = folder / SIGNING_KEY_NAME
    if not key_path.exists():
        _write_private(key_path, new_rsa_private_key_pem())
    path = folder / DEV_ENV_NAME
    values = {
        "DEBUG": "1",
        "AUTH_MODE": "standalone",  # this server is its own SMART authorization server
        "SECRET_KEY": secrets.token_urlsafe(50),
        "PHI_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "PHI_INDEX_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "APP_DB_PASSWORD": secrets.token_urlsafe(24),
        "DEMO_PASSWORD": secrets.token_urlsafe(12),
        "SMART_SIGNING_KEY_FILE": str(key_path),
    }
    if not path.exists():
        body = "# Development settings written by `make run`; git-ignored. Delete to regenerate.\n"
        body += "".join(f"{key}={value}\n" for key, value in values.items())
        _write_private(path, body.encode())
        return path
    # A checkout from before a setting existed gets it added; existing values are never changed.
    present = {line.split("=", 1)[0].strip() for line in path.read_text().splitlines() if "=" in line}
    missing = "".join(f"{key}={value}\n" for key, value in values.items() if key not in present)
    if missing:
        with path.open("a") as handle:
            handle.write(missing)
    return path


def _write_private(path: Path, content: bytes) -> None:
    """Create a file readable by its owner only; fail rather than overwrite a concurrent writer."""
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def new_rsa_private_key_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def decode_phi_key(name: str, value: str) -> bytes:
    """A PHI key is 32 random bytes, base64-encoded (AES-256 and HMAC-SHA256 keys of full strength)."""
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} is not valid base64") from exc
    if len(raw) != 32:
        raise ImproperlyConfigured(f"{name} must decode to 32 bytes, got {len(raw)}")
    return raw


def read_signing_key_pem(pem: str | None, path: str | None) -> str:
    """The SMART signing key: an RSA private key of at least 2048 bits, as PEM text (RS256)."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    if not pem:
        try:
            pem = Path(path).read_text()
        except OSError as exc:
            raise ImproperlyConfigured(f"SMART_SIGNING_KEY_FILE cannot be read: {exc.strerror}") from exc
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except ValueError as exc:
        raise ImproperlyConfigured("The SMART signing key is not an unencrypted PEM private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
        raise ImproperlyConfigured("The SMART signing key must be an RSA key of at least 2048 bits")
    return pem
