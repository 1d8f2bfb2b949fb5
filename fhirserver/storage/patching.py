"""JSON Patch (RFC 6902) of a stored resource (http://hl7.org/fhir/R4/http.html#patch), for
PATCH requests and PATCH entries of transactions alike.

The patch is applied to the current version and stored only if that version is still current
(and equals If-Match when given), so concurrent patches never overwrite each other silently.
"""

from __future__ import annotations

import jsonpatch
import orjson

from fhirserver import errors
from fhirserver.storage.repository import Repository, StoredResource

JSON_PATCH = "application/json-patch+json"


def parse_json_patch(body: bytes) -> jsonpatch.JsonPatch:
    document = errors.load_json(body, "JSON Patch")
    if not isinstance(document, list):
        raise errors.bad_request("A JSON Patch document is an array of operations", code="structure")
    try:
        return jsonpatch.JsonPatch(document)
    except (jsonpatch.InvalidJsonPatch, TypeError) as exc:
        raise errors.bad_request(f"Invalid JSON Patch: {exc}", code="structure") from None


def apply_json_patch(
    repository: Repository,
    resource_type: str,
    resource_id: str,
    operations: jsonpatch.JsonPatch,
    if_match: int | None = None,
) -> StoredResource:
    current = repository.read(resource_type, resource_id)
    if if_match is not None and if_match != current.version_id:
        raise errors.precondition_failed(
            f"If-Match expected version {if_match}, current is {current.version_id}"
        )
    try:
        patched = operations.apply(orjson.loads(current.content))
    except jsonpatch.JsonPatchTestFailed:
        # Its message quotes values, which may be patient data.
        raise errors.FhirError.single(422, "processing", "A 'test' operation of the patch failed") from None
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise errors.FhirError.single(422, "processing", f"The patch cannot be applied: {exc}") from None
    if not isinstance(patched, dict) or patched.get("id") != resource_id:
        raise errors.FhirError.single(422, "processing", "A patch may not change the resource id")
    stored, _created = repository.update(
        resource_type, resource_id, patched, current.version_id, method="PATCH"
    )
    return stored
