"""patch with JSON Patch (RFC 6902; http://hl7.org/fhir/R4/http.html#patch).

The patch is applied to the current version and stored only if that version is still current
(and equals If-Match when given), so concurrent patches never overwrite each other silently.
"""

import jsonpatch
import orjson
from django.http import HttpRequest, HttpResponse

from fhirserver import errors
from fhirserver.api.endpoint import if_match_version, stored_response
from fhirserver.storage.repository import Repository

JSON_PATCH = "application/json-patch+json"


def patch(request: HttpRequest, resource_type: str, resource_id: str) -> HttpResponse:
    if (request.content_type or "").lower() != JSON_PATCH:
        raise errors.FhirError.single(415, "not-supported", f"PATCH needs Content-Type {JSON_PATCH}")
    operations = _operations(request.body)
    repository = Repository()
    current = repository.read(resource_type, resource_id)
    expected = if_match_version(request)
    if expected is not None and expected != current.version_id:
        raise errors.precondition_failed(
            f"If-Match expected version {expected}, current is {current.version_id}"
        )
    resource = orjson.loads(current.content)
    try:
        patched = operations.apply(resource)
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
    return stored_response(request, stored)


def _operations(body: bytes) -> jsonpatch.JsonPatch:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise errors.bad_request(
            f"The JSON Patch is malformed at character {exc.pos}", code="structure"
        ) from None
    if not isinstance(document, list):
        raise errors.bad_request("A JSON Patch document is an array of operations", code="structure")
    try:
        return jsonpatch.JsonPatch(document)
    except (jsonpatch.InvalidJsonPatch, TypeError) as exc:
        raise errors.bad_request(f"Invalid JSON Patch: {exc}", code="structure") from None
