"""A provider simulator: Synthea patients served as an external FHIR API with a provider's quirks.

For the tests and demos of sync (`manage.py simulate_provider`): a threaded HTTP server with a
token endpoint (refresh_token and client_credentials grants, with a client secret or a JWT
client assertion, and the authorization_code grant), a SMART authorization endpoint for
standalone launches (`/authorize`, below), discovery (`/fhir/.well-known/smart-configuration`)
and a FHIR API (metadata, read, search by patient with `next` paging and `_summary=count`,
`Patient/[id]/$everything`). Behaviour switches reproduce what real providers
do: Epic refuses Observation searches without `category`, Cerner's tokens are short and its
answers slow, limits answer 429 with Retry-After, servers fail with transient 500s (or answer
a gateway's HTML page),
`$everything` is missing or returns a part of the record, resources are slightly invalid, and
two providers use the same ids. Shared resources (Organization, Location, Practitioner) are
only reachable through the references to them. It keeps a log of every request it answered.

The standalone launch: `/authorize` checks client_id, redirect_uri (one of
`Credentials.redirect_uris`, or any loopback URL when none are configured), response_type=code,
state, aud (its FHIR base) and an S256 code_challenge, then, standing in for the provider's login
and patient picker, approves at once for `Credentials.patient` (default: the first light patient)
and redirects with a code and the state; `Behaviour.deny_authorization` redirects with
error=access_denied instead. The token endpoint's authorization_code grant takes the code once
within a minute, with the same redirect_uri and the code_verifier of the challenge, and answers
an access token, a refresh token (valid for later refresh_token grants), expires_in, scope and
patient.

VA (the `va` preset, after VA Lighthouse's patient-health FHIR API): searches name the patient
with `patient` only (`subject` is refused), no `$everything`, `_count` capped at 100 and pages
linked by `page=`, references absolute, ids like `I2-...`.

Attachments (`binary_urls`, on in the Epic and Cerner presets, as those providers do): the
inline `data` of DocumentReference.content.attachment and DiagnosticReport.presentedForm is
served instead as `url` = `<base>/Binary/<id>` (ids derived from the resource and position), and
`GET Binary/<id>` answers a FHIR Binary (contentType, base64 data) to `Accept:
application/fhir+json`, else the raw bytes with their Content-Type (`binary_raw`: always raw,
as servers that ignore Accept do).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt

from fhirserver.registry import r4
from sync.auth import pkce_challenge
from sync.connections import is_loopback
from sync.simulated_data import LIGHT_PATIENTS, Dataset, spoil


@dataclass
class Behaviour:
    everything: str = "ok"  # ok | missing | lying (answers only part of the record)
    require_category: tuple[str, ...] = ()  # types whose search needs `category` (Epic: Observation)
    token_seconds: int = 3600
    delay_seconds: float = 0.0  # added to every FHIR answer
    limit_per_window: int = 0  # requests per window beyond which 429 answers; 0: none
    window_seconds: float = 60.0
    fail_every: int = 0  # every n-th FHIR request answers 500; 0: never
    html_every: int = 0  # every n-th FHIR request answers 200 with an HTML page (a gateway's); 0: never
    invalid: bool = False  # some resources carry empty strings and bad dates
    id_prefix: str = ""
    page_size: int = 20
    deny_authorization: bool = False  # /authorize answers error=access_denied (the user said no)
    binary_urls: bool = False  # attachments by URL to Binary/<id> instead of inline data
    binary_raw: bool = False  # Binary reads answer raw bytes whatever the Accept header
    patient_param: str = ""  # the one search parameter that names the patient (VA: patient)
    max_count: int = 0  # the largest page a search answers, whatever _count asks; 0: no cap
    paging: str = "offset"  # next links by `_offset`, or by `page` number (VA)
    absolute_references: bool = False  # references served as absolute URLs (VA)

    @classmethod
    def named(cls, name: str, **overrides) -> Behaviour:
        """Presets: generic, epic, cerner, va."""
        presets = {
            "generic": {},
            "epic": {"require_category": ("Observation",), "everything": "missing", "binary_urls": True},
            "cerner": {
                "token_seconds": 600,
                "delay_seconds": 0.05,
                "everything": "missing",
                "binary_urls": True,
            },
            "va": {
                "everything": "missing",
                "patient_param": "patient",
                "max_count": 100,
                "page_size": 30,
                "paging": "page",
                "absolute_references": True,
                "id_prefix": "I2-",
            },
        }
        return cls(**{**presets[name], **overrides})


@dataclass
class Credentials:
    client_id: str = "sim-client"
    client_secret: str = "sim-secret"  # noqa: S105 (the simulator's own test credential)
    refresh_token: str = "sim-refresh"  # noqa: S105
    public_key_pem: str = ""  # verifies JWT client assertions when set
    redirect_uris: tuple[str, ...] = ()  # of standalone launches; none: any loopback URL
    patient: str = ""  # whom /authorize approves; default: id prefix + the first light patient


class Simulator:
    """The server: start it, point a provider at `base_url` and `token_url`, stop it."""

    def __init__(
        self, behaviour: Behaviour | None = None, credentials: Credentials | None = None,
        data: Dataset | None = None, port: int = 0, host: str = "127.0.0.1",
    ) -> None:  # fmt: skip
        self.behaviour = behaviour or Behaviour()
        self.credentials = credentials or Credentials()
        self.data = data or Dataset.load(id_prefix=self.behaviour.id_prefix)
        self.log: list[tuple[float, str, int]] = []  # (time, path, status) of every request
        self._tokens: dict[str, float] = {}
        self._assertions: set[str] = set()
        self._codes: dict[str, dict] = {}  # authorization codes of standalone launches
        self._refresh_tokens: set[str] = set()  # issued by the authorization_code grant
        self._lock = threading.Lock()
        self._window: tuple[float, int] = (0.0, 0)
        self._count = 0
        self._httpd = ThreadingHTTPServer((host, port), _handler(self))
        self._httpd.daemon_threads = True
        self.url = f"http://{host}:{self._httpd.server_address[1]}"
        self.base_url, self.token_url = self.url + "/fhir", self.url + "/token"
        # (type, id) -> ids of the Binaries its attachments are served as; id -> (contentType, data)
        self.attachments: dict[tuple[str, str], list[str]] = {}
        self.binaries: dict[str, tuple[str, str]] = {}
        if self.behaviour.binary_urls:
            self._index_attachments()

    def start(self) -> Simulator:
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def expire_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    # ----- token endpoint ------------------------------------------------------------------
    def token(self, form: dict[str, str], authorization: str) -> tuple[int, dict]:
        if not self._client_authenticated(form, authorization):
            return 401, {"error": "invalid_client"}
        grant = form.get("grant_type")
        if grant == "authorization_code":
            return self.authorization_code_grant(form)
        if grant == "refresh_token" and not self._refresh_token_valid(form.get("refresh_token", "")):
            return 400, {"error": "invalid_grant"}
        if grant not in ("refresh_token", "client_credentials"):
            return 400, {"error": "unsupported_grant_type"}
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = time.time() + self.behaviour.token_seconds
        return 200, {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.behaviour.token_seconds,
        }

    # ----- SMART standalone launch: authorize, authorization_code grant, discovery ----------
    def authorize(self, query: dict[str, str]) -> tuple[int, dict, dict]:
        """(status, body, headers): a redirect to the client with a code or an error, or a 400
        when the client or its redirect URI are wrong (RFC 6749 4.1.2.1: never redirected)."""
        redirect_uri = query.get("redirect_uri", "")
        if query.get("client_id") != self.credentials.client_id:
            return 400, {"error": "invalid_request", "error_description": "unknown client_id"}, {}
        if not self._redirect_uri_allowed(redirect_uri):
            return 400, {"error": "invalid_request", "error_description": "redirect_uri not registered"}, {}
        state = query.get("state", "")
        problem = None
        if query.get("response_type") != "code":
            problem = "unsupported_response_type", "response_type must be code"
        elif not state:
            problem = "invalid_request", "state is required"
        elif query.get("aud", "").rstrip("/") != self.base_url:
            problem = "invalid_request", "aud must be this server's FHIR base"
        elif query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            problem = "invalid_request", "PKCE with code_challenge_method S256 is required"
        elif self.behaviour.deny_authorization:
            problem = "access_denied", "The user refused the authorization"
        if problem:
            answer = {
                "error": problem[0],
                "error_description": problem[1],
                **({"state": state} if state else {}),
            }
            return 302, {}, {"Location": _with_query(redirect_uri, answer)}
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._codes[code] = {
                "expires": time.time() + 60,
                "redirect_uri": redirect_uri,
                "challenge": query["code_challenge"],
                "scope": query.get("scope", ""),
            }
        return 302, {}, {"Location": _with_query(redirect_uri, {"code": code, "state": state})}

    def authorization_code_grant(self, form: dict[str, str]) -> tuple[int, dict]:
        """The code (once, within its minute) for tokens, given its redirect_uri and code_verifier."""
        with self._lock:
            issued = self._codes.pop(form.get("code", ""), None)
        verifier = form.get("code_verifier", "")
        challenge = pkce_challenge(verifier)
        fresh = issued is not None and issued["expires"] >= time.time()
        if not (
            fresh
            and issued["redirect_uri"] == form.get("redirect_uri")
            and verifier
            and secrets.compare_digest(challenge, issued["challenge"])
        ):
            return 400, {"error": "invalid_grant"}
        token, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = time.time() + self.behaviour.token_seconds
            self._refresh_tokens.add(refresh)
        return 200, {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.behaviour.token_seconds,
            "scope": issued["scope"],
            "refresh_token": refresh,
            "patient": self.launch_patient,
        }

    @property
    def launch_patient(self) -> str:
        return self.credentials.patient or self.behaviour.id_prefix + LIGHT_PATIENTS[0]

    def smart_configuration(self) -> dict:
        return {
            "authorization_endpoint": self.url + "/authorize",
            "token_endpoint": self.token_url,
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "code_challenge_methods_supported": ["S256"],
            "capabilities": ["launch-standalone", "context-standalone-patient", "permission-offline"],
        }

    def _redirect_uri_allowed(self, uri: str) -> bool:
        if self.credentials.redirect_uris:
            return uri in self.credentials.redirect_uris
        parts = urlsplit(uri)
        return parts.scheme in ("http", "https") and is_loopback(parts.hostname or "")

    def _refresh_token_valid(self, token: str) -> bool:
        with self._lock:
            return token == self.credentials.refresh_token or token in self._refresh_tokens

    def _client_authenticated(self, form: dict[str, str], authorization: str) -> bool:
        expected = self.credentials
        if "client_assertion" in form and expected.public_key_pem:
            try:
                claims = jwt.decode(
                    form["client_assertion"], expected.public_key_pem, algorithms=["RS384", "ES384"],
                    audience=self.token_url, options={"require": ["exp", "jti", "iss", "sub"]},
                )  # fmt: skip
            except jwt.InvalidTokenError:
                return False
            fresh = claims["jti"] not in self._assertions and claims["exp"] <= time.time() + 300
            self._assertions.add(claims["jti"])
            return fresh and claims["iss"] == claims["sub"] == expected.client_id
        if authorization.startswith("Basic "):
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            return (user, password) == (expected.client_id, expected.client_secret)
        return (form.get("client_id"), form.get("client_secret")) == (
            expected.client_id,
            expected.client_secret,
        )

    # ----- FHIR API ------------------------------------------------------------------------
    def admit(self, authorization: str) -> tuple[int, dict | None, dict]:
        """(status, body, headers) refusing the request, or (0, None, {}) to serve it."""
        behaviour = self.behaviour
        with self._lock:
            self._count += 1
            now = time.time()
            start, seen = self._window
            if now - start >= behaviour.window_seconds:
                start, seen = now, 0
            self._window = (start, seen + 1)
            if behaviour.limit_per_window and seen >= behaviour.limit_per_window:
                wait = max(1, round(start + behaviour.window_seconds - now + 0.5))
                return 429, _outcome("throttled", "Too many requests"), {"Retry-After": str(wait)}
            if behaviour.fail_every and self._count % behaviour.fail_every == 0:
                return 500, _outcome("transient", "Try again"), {}
            expiry = self._tokens.get(authorization.removeprefix("Bearer "))
        if expiry is None or expiry < now:
            return 401, _outcome("login", "Token missing or expired"), {}
        return 0, None, {}

    def fhir(self, path: str, query: dict[str, str]) -> tuple[int, dict]:
        time.sleep(self.behaviour.delay_seconds)
        parts = [part for part in path.split("/") if part]
        if parts == ["metadata"]:
            return 200, self.capability()
        if len(parts) == 3 and parts[0] == "Patient" and parts[2] == "$everything":
            if self.behaviour.everything == "missing":
                return 404, _outcome("not-supported", "Unknown operation")
            found = self.data.compartment(parts[1])
            if self.behaviour.everything == "lying":
                found = [r for r in found if r["resourceType"] not in ("Observation", "Immunization")]
            return 200, self.page(found, path, query)
        if len(parts) == 2:
            resource = self.data.resources.get((parts[0], parts[1]))
            if resource is None:
                return 404, _outcome("not-found", "Unknown resource")
            return 200, self.served(resource)
        if len(parts) == 1:
            return self.search(parts[0], path, query)
        return 404, _outcome("not-found", "Unknown path")

    def search(self, kind: str, path: str, query: dict[str, str]) -> tuple[int, dict]:
        if kind in self.behaviour.require_category and "category" not in query:
            return 400, _outcome("required", f"A {kind} search requires a category")
        patient = next(
            (query[p] for p in ("patient", "subject", *r4().patient_compartment.get(kind, ())) if p in query),
            None,
        )
        if patient is None:
            return 400, _outcome("required", "This server searches by patient only")
        wanted = self.behaviour.patient_param
        if wanted and (wanted not in query or any(p in query for p in ("subject", "beneficiary"))):
            return 400, _outcome("not-supported", f"Search by '{wanted}' only")
        found = [
            r for r in self.data.compartment(patient.removeprefix("Patient/")) if r["resourceType"] == kind
        ]
        if "category" in query:
            wanted = query["category"].split("|")[-1]
            found = [r for r in found if wanted in _category_codes(r)]
        if query.get("_summary") == "count":
            return 200, {"resourceType": "Bundle", "type": "searchset", "total": len(found)}
        return 200, self.page(found, path, query)

    def page(self, found: list[dict], path: str, query: dict[str, str]) -> dict:
        size = int(query.get("_count", self.behaviour.page_size))
        size = min(size, self.behaviour.max_count) if self.behaviour.max_count else size
        by_page = self.behaviour.paging == "page"
        offset = (int(query.get("page", 1)) - 1) * size if by_page else int(query.get("_offset", 0))
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(found),
            "link": [{"relation": "self", "url": f"{self.base_url}{path}?{urlencode(query)}"}],
            "entry": [
                {"fullUrl": f"{self.base_url}/{r['resourceType']}/{r['id']}", "resource": self.served(r)}
                for r in found[offset : offset + size]
            ],
        }
        if offset + size < len(found):
            step = {"page": offset // size + 2} if by_page else {"_offset": offset + size}
            following = urlencode({**query, **step, "_count": size})
            bundle["link"].append({"relation": "next", "url": f"{self.base_url}{path}?{following}"})
        return bundle

    def served(self, resource: dict) -> dict:
        every_third = self.behaviour.invalid and sum(map(ord, resource["id"])) % 3 == 0
        resource = spoil(resource) if every_third else resource
        if self.behaviour.absolute_references:
            resource = _absolute(resource, self.base_url)
        return self._attachments_by_url(resource) if self.behaviour.binary_urls else resource

    def capability(self) -> dict:
        kinds = sorted({kind for kind, _ in self.data.resources})
        patient_ops = [] if self.behaviour.everything == "missing" else [
            {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}
        ]  # fmt: skip
        return {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "kind": "instance",
            "fhirVersion": "4.0.1",
            "format": ["json"],
            "rest": [
                {
                    "mode": "server",
                    "resource": [
                        {
                            "type": kind,
                            "interaction": [{"code": "read"}, {"code": "search-type"}],
                            "searchParam": [{"name": "patient", "type": "reference"}],
                            **({"operation": patient_ops} if kind == "Patient" and patient_ops else {}),
                        }
                        for kind in kinds
                    ],
                }
            ],
        }

    # ----- attachments served by URL (Behaviour.binary_urls) ---------------------------------
    def _index_attachments(self) -> None:
        for key, resource in self.data.resources.items():
            for n, attachment in enumerate(_attachments(resource)):
                if "data" in attachment:
                    ident = hashlib.sha256(f"{key[0]}/{key[1]}/{n}".encode()).hexdigest()[:32]
                    self.attachments.setdefault(key, []).append(ident)
                    content_type = attachment.get("contentType", "application/octet-stream")
                    self.binaries[ident] = (content_type, attachment["data"])

    def _attachments_by_url(self, resource: dict) -> dict:
        """A copy whose inline attachments are URLs of the Binaries that hold their data."""
        idents = self.attachments.get((resource["resourceType"], resource["id"]))
        if not idents:
            return resource
        resource = copy.deepcopy(resource)
        remaining = iter(idents)
        for attachment in _attachments(resource):
            if "data" in attachment:
                attachment.pop("data")
                attachment["url"] = f"{self.base_url}/Binary/{next(remaining)}"
        return resource

    def binary(self, ident: str, accept: str) -> tuple[int, bytes, str]:
        """(status, body, Content-Type) of GET Binary/<id>: FHIR JSON when asked for, else raw."""
        if ident not in self.binaries:
            return 404, json.dumps(_outcome("not-found", "Unknown Binary")).encode(), "application/fhir+json"
        content_type, data = self.binaries[ident]
        if "fhir+json" in accept and not self.behaviour.binary_raw:
            body = {"resourceType": "Binary", "id": ident, "contentType": content_type, "data": data}
            return 200, json.dumps(body).encode(), "application/fhir+json"
        return 200, base64.b64decode(data), content_type


def _attachments(resource: dict) -> list[dict]:
    """The Attachments of DocumentReference.content and DiagnosticReport.presentedForm, in order."""
    if resource["resourceType"] == "DocumentReference":
        found = [content.get("attachment") for content in resource.get("content", [])]
    elif resource["resourceType"] == "DiagnosticReport":
        found = list(resource.get("presentedForm", []))
    else:
        found = []
    return [attachment for attachment in found if isinstance(attachment, dict)]


def _absolute(value: object, base_url: str) -> object:
    """A copy whose relative references are absolute URLs on `base_url`."""
    if isinstance(value, dict):
        result = {k: _absolute(v, base_url) for k, v in value.items()}
        reference = value.get("reference")
        if isinstance(reference, str) and "/" in reference and "://" not in reference:
            result["reference"] = f"{base_url}/{reference}"
        return result
    if isinstance(value, list):
        return [_absolute(item, base_url) for item in value]
    return value


def _category_codes(resource: dict) -> set[str]:
    categories = resource.get("category") or []
    if isinstance(categories, dict):
        categories = [categories]
    return {coding.get("code") for concept in categories for coding in concept.get("coding", [])}


def _with_query(uri: str, parameters: dict[str, str]) -> str:
    return uri + ("&" if urlsplit(uri).query else "?") + urlencode(parameters)


def _outcome(code: str, text: str) -> dict:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    }


def _handler(simulator: Simulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            if parts.path == "/authorize":
                return self._send(*simulator.authorize(query))
            if parts.path == "/fhir/.well-known/smart-configuration":
                return self._send(200, simulator.smart_configuration())
            if not parts.path.startswith("/fhir"):
                return self._send(404, _outcome("not-found", "Unknown path"))
            path = parts.path[len("/fhir") :]
            if path != "/metadata":
                status, body, headers = simulator.admit(self.headers.get("Authorization", ""))
                if status:
                    return self._send(status, body, headers)
            if simulator.behaviour.html_every and simulator._count % simulator.behaviour.html_every == 0:
                return self._send_bytes(200, b"<html><body>Service notice</body></html>", "text/html")
            if path.startswith("/Binary/"):
                return self._send_bytes(
                    *simulator.binary(path[len("/Binary/") :], self.headers.get("Accept", ""))
                )
            self._send(*simulator.fhir(path, query))

        def do_POST(self) -> None:
            if urlsplit(self.path).path != "/token":
                return self._send(404, _outcome("not-found", "Unknown path"))
            length = int(self.headers.get("Content-Length", 0))
            form = {k: v[-1] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            self._send(*simulator.token(form, self.headers.get("Authorization", "")))

        def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
            simulator.log.append((time.time(), self.path, status))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _send_bytes(self, status: int, data: bytes, content_type: str) -> None:
            simulator.log.append((time.time(), self.path, status))
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    return Handler
