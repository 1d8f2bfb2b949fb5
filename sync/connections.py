"""Provider connection strings: `fhir://host/path?client_id=..&token_url=..&...`.

`fhir://` is HTTPS; `fhir+http://` plain HTTP, accepted only for loopback hosts or with DEBUG
(tests, the simulator). Query parameters: client_id, token_url, authorize_url, client_secret or
client_secret_path (a file holding it), private_key_path (PEM), key_id, jwt_alg,
use_jwt_assertion=true, scope, audience. Errors name the parameter, never its value.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

from django.conf import settings

SCHEMES = {"fhir": "https", "fhir+http": "http"}
TEXT_PARAMETERS = ("client_id", "token_url", "authorize_url", "key_id", "scope", "audience")


class InvalidConnection(ValueError):
    pass


@dataclass
class Connection:
    base_url: str
    client_id: str = ""
    token_url: str = ""
    authorize_url: str = ""
    client_secret: str = field(default="", repr=False)
    private_key: str = field(default="", repr=False)
    key_id: str = ""
    jwt_alg: str = "RS384"
    use_jwt_assertion: bool = False
    scope: str = ""
    audience: str = ""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse(text: str) -> Connection:
    parts = urlsplit(text)
    if parts.scheme not in SCHEMES:
        raise InvalidConnection("a connection string starts with fhir:// (HTTPS) or fhir+http://")
    if not parts.hostname:
        raise InvalidConnection("the connection string names no host")
    if parts.scheme == "fhir+http" and not (is_loopback(parts.hostname) or settings.DEBUG):
        raise InvalidConnection("fhir+http:// is accepted only for loopback hosts or with DEBUG")
    scheme = SCHEMES[parts.scheme]
    query = {key: values[-1] for key, values in parse_qs(parts.query, keep_blank_values=True).items()}
    connection = Connection(base_url=urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", "")))
    for name in TEXT_PARAMETERS:
        setattr(connection, name, query.pop(name, ""))
    secret_path = query.pop("client_secret_path", "")
    connection.client_secret = query.pop("client_secret", "") or _read(secret_path)
    connection.private_key = _read(query.pop("private_key_path", ""))
    connection.jwt_alg = query.pop("jwt_alg", "RS384")
    connection.use_jwt_assertion = query.pop("use_jwt_assertion", "false").lower() in ("1", "true", "yes")
    if query:
        raise InvalidConnection(f"unknown connection parameters: {', '.join(sorted(query))}")
    if connection.jwt_alg not in ("RS384", "ES384"):
        raise InvalidConnection("jwt_alg must be RS384 or ES384")
    if connection.use_jwt_assertion and not connection.private_key:
        raise InvalidConnection("use_jwt_assertion needs private_key_path")
    for name in ("token_url", "authorize_url"):
        url = getattr(connection, name)
        if url and urlsplit(url).scheme != scheme:
            raise InvalidConnection(f"{name} must use {scheme} like the FHIR base")
    return connection


def _read(path: str) -> str:
    if not path:
        return ""
    try:
        return Path(path).read_text().strip()
    except OSError:
        raise InvalidConnection("a credential file named in the connection string cannot be read") from None
