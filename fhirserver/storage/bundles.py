"""batch and transaction Bundles (http://hl7.org/fhir/R4/http.html#transaction), for the REST
API and the bundle loader alike, written through the repository.

A transaction is all or nothing: the caller runs `process_transaction` inside one database
transaction and any FhirError rolls everything back. Following the processing rules
(http.html#trules), entries are handled DELETE, then POST, then PUT/PATCH, then GET; new ids are
assigned before anything is written so that every `urn:uuid:` full URL and every conditional
reference (`Practitioner?identifier=...`), also inside contained resources, is rewritten to the
final `Type/id` first. Results come back in the order of the request's entries.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from django.db import transaction

from fhirserver import errors
from fhirserver.operation_outcome import outcome_from_issues
from fhirserver.registry import r4
from fhirserver.storage.patching import JSON_PATCH, apply_json_patch, parse_json_patch
from fhirserver.storage.repository import Repository, StoredResource, format_instant, new_id
from fhirserver.storage.stored import version_of

T = TypeVar("T")
ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_CONDITIONAL_REFERENCE = re.compile(r"^([A-Z][A-Za-z]+)\?(.+)$", re.S)
_INSTANCE_URL = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/([0-9]+))?$")


class Guard(Protocol):
    """The caller's authorization, checked for each entry as its own interaction (SMART 2.x:
    batches and transactions "should be validated based on the actual requests within them");
    fhirserver.api.authorization.Access in the REST API."""

    def require(self, resource_type: str, interaction: str) -> object: ...

    def check_instance(
        self,
        resource_type: str,
        resource_id: str,
        interaction: str,
        *,
        writing: bool = False,
        flush: Callable[[], None] | None = None,
    ) -> None: ...


class Trusted:
    """No authorization: for operators' tools (load_bundles), which may write anything."""

    def require(self, resource_type: str, interaction: str) -> None:
        return None

    def check_instance(self, *args, **kwargs) -> None:
        return None


@dataclass
class EntryResult:
    status: str
    stored: StoredResource | None = None
    outcome: dict | None = None

    def response(self) -> dict:
        result: dict = {"status": self.status}
        if self.stored is not None:
            result["location"] = self.stored.location
            result["etag"] = self.stored.etag
            result["lastModified"] = format_instant(self.stored.last_updated)
        if self.outcome is not None:
            result["outcome"] = self.outcome
        return result


@dataclass
class _Entry:
    index: int
    method: str
    url: str
    resource: dict | None
    full_url: str | None
    request: dict
    assigned_id: str | None = None  # POST: the id to create, or the existing match
    existing: bool = False  # POST whose If-None-Exist matched
    result: EntryResult | None = field(default=None)


def process_transaction(bundle: dict, guard: Guard) -> list[EntryResult]:
    entries = _entries(bundle)
    with Repository.buffered() as repository:
        references = _assign_identities(repository, entries)
        resolve = _resolver(repository, references, guard)
        for entry in entries:
            if entry.resource is not None:
                _at(entry, lambda e=entry: _rewrite_references(e.resource, resolve))
        for entry in sorted(entries, key=lambda e: ORDER[e.method]):
            entry.result = _at(entry, lambda e=entry: _execute(repository, e, guard))
    return [entry.result for entry in entries]


def process_batch(bundle: dict, guard: Guard) -> list[EntryResult]:
    """Each entry on its own: a failing entry gets its outcome, the others still happen."""
    entries = _entries(bundle)
    repository = Repository()
    results = []
    for entry in entries:
        try:
            with transaction.atomic():
                _assign_identities(repository, [entry])
                if entry.resource is not None:
                    _rewrite_references(entry.resource, _resolver(repository, {}, guard))
                results.append(_at(entry, lambda e=entry: _execute(repository, e, guard)))
        except errors.FhirError as exc:
            results.append(
                EntryResult(f"{exc.status} {_reason(exc.status)}", outcome=outcome_from_issues(exc.issues))
            )
    return results


def _at(entry: _Entry, action: Callable[[], EntryResult]) -> EntryResult:
    """Run `action`, locating any error at Bundle.entry[i] so the client knows which one failed."""
    try:
        return action()
    except errors.FhirError as exc:
        exc.issues = [
            errors.Issue(
                issue.code,
                f"Bundle.entry[{entry.index}]: {issue.diagnostics}",
                f"Bundle.entry[{entry.index}]"
                + (f".resource.{issue.expression}" if issue.expression else ""),
                issue.severity,
            )
            for issue in exc.issues
        ]
        raise


def _entries(bundle: dict) -> list[_Entry]:
    raw_entries = bundle.get("entry", [])
    if not isinstance(raw_entries, list):
        raise errors.bad_request("Bundle.entry must be an array", code="structure")
    entries = []
    for index, raw in enumerate(raw_entries):
        request = raw.get("request") if isinstance(raw, dict) else None
        if not isinstance(request, dict) or not isinstance(request.get("url"), str):
            raise errors.bad_request(f"Bundle.entry[{index}] has no request.url", code="required")
        method = request.get("method")
        if method not in ORDER:
            raise errors.bad_request(f"Bundle.entry[{index}].request.method is not a supported method")
        resource = raw.get("resource")
        if method in ("POST", "PUT", "PATCH") and not isinstance(resource, dict):
            raise errors.bad_request(f"Bundle.entry[{index}] ({method}) has no resource", code="required")
        entries.append(
            _Entry(index, method, request["url"].lstrip("/"), resource, raw.get("fullUrl"), request)
        )
    return entries


def _assign_identities(repository: Repository, entries: list[_Entry]) -> dict[str, str]:
    """fullUrl -> "Type/id" for every entry that creates or names a resource."""
    references: dict[str, str] = {}
    for entry in entries:
        if entry.method == "POST":
            resource_type = entry.resource.get("resourceType")
            condition = entry.request.get("ifNoneExist")
            matches = repository.matching_ids(resource_type, condition.lstrip("?")) if condition else set()
            if len(matches) > 1:
                raise errors.precondition_failed(
                    f"Bundle.entry[{entry.index}]: ifNoneExist matched {len(matches)} resources"
                )
            entry.existing = bool(matches)
            entry.assigned_id = matches.pop() if matches else new_id()
            target = f"{resource_type}/{entry.assigned_id}"
        elif entry.method == "PUT" and (match := _INSTANCE_URL.match(entry.url)):
            target = f"{match[1]}/{match[2]}"
        else:
            continue
        if entry.full_url:
            references[entry.full_url] = target
    return references


def _resolver(
    repository: Repository, references: dict[str, str], guard: Guard
) -> Callable[[str], str | None]:
    conditional_cache: dict[str, str] = {}

    def resolve(reference: str) -> str | None:
        if reference in references:
            return references[reference]
        match = _CONDITIONAL_REFERENCE.match(reference)
        if match is None or not r4().is_resource_type(match[1]):
            return None
        if reference not in conditional_cache:
            matches = repository.matching_ids(match[1], match[2])
            if len(matches) != 1:
                raise errors.precondition_failed(
                    f"Conditional reference to {match[1]} matched {len(matches)} resources, not exactly one"
                )
            target_id = matches.pop()
            # Resolving is a search: what it finds must be within the caller's reach.
            guard.check_instance(match[1], target_id, "search-type", flush=repository.flush)
            conditional_cache[reference] = f"{match[1]}/{target_id}"
        return conditional_cache[reference]

    return resolve


def _rewrite_references(node: object, resolve: Callable[[str], str | None]) -> None:
    """Rewrite Reference.reference values in place, at any depth (contained resources too)."""
    if isinstance(node, dict):
        reference = node.get("reference")
        if isinstance(reference, str):
            replacement = resolve(reference)
            if replacement is not None:
                node["reference"] = replacement
        for value in node.values():
            if isinstance(value, (dict, list)):
                _rewrite_references(value, resolve)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, (dict, list)):
                _rewrite_references(item, resolve)


def _execute(repository: Repository, entry: _Entry, guard: Guard) -> EntryResult:
    if entry.method == "POST":
        return _post(repository, entry, guard)
    if entry.method == "PUT":
        return _put(repository, entry, guard)
    if entry.method == "DELETE":
        return _delete(repository, entry, guard)
    if entry.method in ("GET", "HEAD"):
        return _get(repository, entry, guard)
    return _patch(repository, entry, guard)


def _checked_write(
    repository: Repository, guard: Guard, target: tuple[str, str], interaction: str, write: Callable[[], T]
) -> T:
    """`write()`, with the version it replaces and the one it writes both within reach."""
    guard.require(target[0], interaction)
    guard.check_instance(*target, interaction, writing=True, flush=repository.flush)
    result = write()
    guard.check_instance(*target, interaction, writing=True, flush=repository.flush)
    return result


def _patch(repository: Repository, entry: _Entry, guard: Guard) -> EntryResult:
    """A JSON Patch travels as a Binary resource (http://hl7.org/fhir/R4/http.html#patch)."""
    match = _INSTANCE_URL.match(entry.url)
    binary = entry.resource or {}
    if match is None or binary.get("resourceType") != "Binary" or binary.get("contentType") != JSON_PATCH:
        raise errors.not_supported(
            f"PATCH entries need request.url Type/id and a Binary resource with contentType {JSON_PATCH}"
        )
    try:
        body = base64.b64decode(binary.get("data", ""), validate=True)
    except ValueError:
        raise errors.bad_request("The Binary's data is not base64", code="structure") from None
    operations = parse_json_patch(body)
    if_match = _version(entry.request.get("ifMatch"))
    stored = _checked_write(
        repository,
        guard,
        (match[1], match[2]),
        "patch",
        lambda: apply_json_patch(repository, match[1], match[2], operations, if_match),
    )
    return EntryResult("200 OK", stored)


def _post(repository: Repository, entry: _Entry, guard: Guard) -> EntryResult:
    resource_type = entry.resource.get("resourceType")
    if entry.url.split("?", 1)[0] != resource_type:
        raise errors.bad_request(f"request.url '{entry.url}' does not name the resource's type")
    guard.require(resource_type, "create")
    if entry.existing:
        guard.check_instance(resource_type, entry.assigned_id, "create", flush=repository.flush)
        return EntryResult("200 OK", repository.read(resource_type, entry.assigned_id))
    stored = repository.create(entry.resource, entry.assigned_id)
    guard.check_instance(resource_type, entry.assigned_id, "create", writing=True, flush=repository.flush)
    return EntryResult("201 Created", stored)


def _put(repository: Repository, entry: _Entry, guard: Guard) -> EntryResult:
    match = _INSTANCE_URL.match(entry.url)
    if match is None:
        return _conditional_put(repository, entry, guard)
    if_match = _version(entry.request.get("ifMatch"))
    stored, created = _checked_write(
        repository,
        guard,
        (match[1], match[2]),
        "update",
        lambda: repository.update(match[1], match[2], entry.resource, if_match),
    )
    return EntryResult("201 Created" if created else "200 OK", stored)


def _conditional_put(repository: Repository, entry: _Entry, guard: Guard) -> EntryResult:
    resource_type, _, query = entry.url.partition("?")
    if not query:
        raise errors.bad_request(f"request.url '{entry.url}' is neither Type/id nor Type?criteria")
    matches = repository.matching_ids(resource_type, query)
    if len(matches) > 1:
        raise errors.precondition_failed(f"Conditional update matched {len(matches)} resources")
    resource_id = matches.pop() if matches else entry.resource.get("id") or new_id()
    stored, created = _checked_write(
        repository,
        guard,
        (resource_type, resource_id),
        "update",
        lambda: repository.update(resource_type, resource_id, {**entry.resource, "id": resource_id}),
    )
    return EntryResult("201 Created" if created else "200 OK", stored)


def _delete(repository: Repository, entry: _Entry, guard: Guard) -> EntryResult:
    match = _INSTANCE_URL.match(entry.url)
    if match:
        targets = [(match[1], match[2])]
    else:
        resource_type, _, query = entry.url.partition("?")
        guard.require(resource_type, "delete")
        targets = [(resource_type, i) for i in sorted(repository.matching_ids(resource_type, query))]
    if_match = _version(entry.request.get("ifMatch")) if match else None
    for target in targets:
        _checked_write(repository, guard, target, "delete", lambda t=target: repository.delete(*t, if_match))
    return EntryResult("204 No Content")


def _get(repository: Repository, entry: _Entry, guard: Guard) -> EntryResult:
    match = _INSTANCE_URL.match(entry.url)
    if match is None:
        raise errors.not_supported("Only read and vread are supported as GET entries of a Bundle")
    interaction = "vread" if match[3] else "read"
    guard.require(match[1], interaction)
    stored = repository.vread(*match.groups()) if match[3] else repository.read(match[1], match[2])
    guard.check_instance(match[1], match[2], interaction, flush=repository.flush)
    return EntryResult("200 OK", stored)


def _version(etag: str | None) -> int | None:
    return None if etag is None else version_of(etag)


_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    410: "Gone",
    412: "Precondition Failed",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
}


def _reason(status: int) -> str:
    return _REASONS.get(status, "Error")
