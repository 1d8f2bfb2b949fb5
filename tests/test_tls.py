"""HTTPS served by gunicorn itself: TLS 1.2 and 1.3 only, as ONC's Inferno TLS test checks
(it forces each protocol version with certificate verification on)."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from config.environment import BASE_DIR
from tests.conftest import DEVELOPMENT_AUTH
from tests.support import free_port, start_server

# What a client sees when the server's minimum version is above the one it offers.
PROTOCOL_VERSION_REFUSED = {"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "WRONG_SSL_VERSION"}


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _certificate(subject, issuer, public_key, signing_key, *, ca: bool, names=()) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def make_certificates(folder: Path) -> Certificates:
    """A throwaway CA and a server certificate it signed, for 127.0.0.1 and localhost."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("Test CA", "Test CA", ca_key.public_key(), ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    names = (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    server = _certificate("localhost", "Test CA", server_key.public_key(), ca_key, ca=False, names=names)
    paths = Certificates(folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(_pem(server_key))
    return paths


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


def client_context(ca: Path, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A verifying client context, pinned to exactly `version` when given."""
    context = ssl.create_default_context(cafile=str(ca))
    if version is not None:
        # OpenSSL 3 offers TLS 1.0/1.1 only at security level 0 (their handshakes use SHA-1).
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # naming TLS 1.0/1.1 is deprecated
            context.minimum_version = context.maximum_version = version
    return context


@pytest.fixture(scope="module")
def tls_server(django_db_setup, certificates, tmp_path_factory):
    env = {**DEVELOPMENT_AUTH, "TLS_CERT_FILE": str(certificates.cert), "TLS_KEY_FILE": str(certificates.key)}
    log = tmp_path_factory.mktemp("tls-server") / "server.log"
    running = start_server(log, env=env, verify=client_context(certificates.ca))
    yield running
    running.stop()


def handshake(port: int, context: ssl.SSLContext) -> str:
    """Connect and complete a TLS handshake; the negotiated version."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.version()


def client_can_offer(version: ssl.TLSVersion, certificates: Certificates) -> bool:
    """Whether this client completes a `version` handshake with a server that accepts it.

    The control for the refusal test: only if it succeeds does a failed handshake with our
    server show that our server refused, rather than that the client never offered `version`.
    """
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(certificates.cert, certificates.key)
    server_side.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server_side.minimum_version = server_side.maximum_version = version
    with socket.create_server(("127.0.0.1", 0)) as listener:
        accepting = threading.Thread(target=_accept_one, args=(listener, server_side), daemon=True)
        accepting.start()
        try:
            return handshake(listener.getsockname()[1], client_context(certificates.ca, version)) is not None
        except ssl.SSLError:
            return False
        finally:
            accepting.join(timeout=10)


def _accept_one(listener: socket.socket, context: ssl.SSLContext) -> None:
    connection, _ = listener.accept()
    try:
        with context.wrap_socket(connection, server_side=True):
            pass
    except (ssl.SSLError, OSError):
        pass  # the client side reports what happened


def server_port(server) -> int:
    return int(server.url.rsplit(":", 1)[1])


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["TLSv1.0", "TLSv1.1"]
)
def test_tls_below_1_2_is_refused_at_the_handshake(tls_server, certificates, version):
    if not client_can_offer(version, certificates):
        pytest.skip(f"this client cannot offer {version.name}, not even to a server that accepts it")
    with pytest.raises(ssl.SSLError) as refused:
        handshake(server_port(tls_server), client_context(certificates.ca, version))
    assert not isinstance(refused.value, ssl.SSLCertVerificationError)
    assert refused.value.reason in PROTOCOL_VERSION_REFUSED, refused.value


@pytest.mark.parametrize(
    ("version", "name"), [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")]
)
def test_tls_1_2_and_1_3_are_served_with_a_verified_certificate(tls_server, certificates, version, name):
    connection = http.client.HTTPSConnection(
        "127.0.0.1", server_port(tls_server), context=client_context(certificates.ca, version), timeout=10
    )
    try:
        connection.request("GET", "/healthz")
        negotiated = connection.sock.version()
        assert connection.getresponse().status == 200
        assert negotiated == name
    finally:
        connection.close()


def test_advertised_urls_are_https(tls_server, certificates):
    with httpx.Client(base_url=tls_server.url, verify=client_context(certificates.ca), timeout=30) as client:
        created = client.post("/t/alpha/fhir/Patient", json={"resourceType": "Patient"})
        assert created.status_code == 201, created.text
        assert created.headers["Location"].startswith(f"{tls_server.url}/t/alpha/fhir/Patient/")
        assert tls_server.url.startswith("https://")
        metadata = client.get("/t/alpha/fhir/metadata").json()
        assert metadata["implementation"]["url"] == f"{tls_server.url}/t/alpha/fhir"


def run_gunicorn(env: dict[str, str]) -> subprocess.CompletedProcess:
    """Start the production server command; it must stop by itself (a configuration error)."""
    return subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"],
        cwd=BASE_DIR,
        env={**os.environ, "PORT": str(free_port()), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("present", "missing"), [("TLS_CERT_FILE", "TLS_KEY_FILE"), ("TLS_KEY_FILE", "TLS_CERT_FILE")]
)
def test_one_tls_file_alone_refuses_to_start(certificates, present, missing):
    result = run_gunicorn({present: str(certificates.cert), missing: ""})
    assert result.returncode != 0
    assert f"{missing} is not set: set both TLS_CERT_FILE and TLS_KEY_FILE" in result.stderr


def test_a_key_that_does_not_match_the_certificate_refuses_to_start(certificates, tmp_path):
    other_key = tmp_path / "other.pem"
    other_key.write_bytes(_pem(ec.generate_private_key(ec.SECP256R1())))
    result = run_gunicorn({"TLS_CERT_FILE": str(certificates.cert), "TLS_KEY_FILE": str(other_key)})
    assert result.returncode != 0
    assert "KEY_VALUES_MISMATCH" in result.stderr + result.stdout


def run_script(name: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BASE_DIR / "scripts" / name)],
        cwd=BASE_DIR,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_docker_healthcheck_probes_over_https(tls_server, certificates):
    tls = {"TLS_CERT_FILE": str(certificates.cert), "TLS_KEY_FILE": str(certificates.key)}
    port = str(server_port(tls_server))
    assert run_script("healthcheck.py", {**tls, "PORT": port}).returncode == 0
    assert run_script("healthcheck.py", {"PORT": port}).returncode != 0  # plain HTTP to a TLS port


def test_make_run_stops_before_starting_anything_with_one_tls_file(certificates, tmp_path):
    # A database that cannot answer: had the check come later, its error would come first.
    unreachable = "postgresql://nobody@127.0.0.1:1/none"
    env = {
        "TLS_CERT_FILE": str(certificates.cert),
        "FHIR_DATA_DIR": str(tmp_path),
        "DATABASE_URL": unreachable,
    }
    result = run_script("run_server.py", env)
    assert result.returncode != 0
    assert "TLS_KEY_FILE is not set" in result.stderr


def test_make_run_banner_shows_https_urls(capsys, monkeypatch):
    from scripts.run_server import print_banner

    monkeypatch.setenv("DEMO_PASSWORD", "shown")
    print_banner("https", "8443")
    banner = capsys.readouterr().out
    assert "https://127.0.0.1:8443/t/demo/fhir" in banner
    assert "https://demo.localhost:8443/" in banner
    assert "http://" not in banner


def test_hsts_is_sent_over_tls(tls_server, certificates):
    """RFC 6797: HSTS over secure transport only (the plain-HTTP side is in test_request_chain)."""
    response = httpx.get(tls_server.url + "/healthz", verify=client_context(certificates.ca))
    assert response.headers["strict-transport-security"] == "max-age=31536000"
    assert response.headers["x-content-type-options"] == "nosniff"
