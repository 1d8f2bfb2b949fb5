"""What every FHIR endpoint shares: errors as OperationOutcomes, headers of stored resources,
conditional-read checks and the Prefer header."""

from __future__ import annotations

import functools
import logging
from email.utils import parsedate_to_datetime

from django.core.exceptions import RequestDataTooBig
from django.db import OperationalError
from django.http import HttpRequest, HttpResponse
from django.utils.http import http_date
from django.views.decorators.csrf import csrf_exempt
from psycopg.errors import QueryCanceled

from fhirserver import errors
from fhirserver.api.negotiation import fhir_response
from fhirserver.operation_outcome import outcome_from_issues
from fhirserver.storage.stored import StoredResource, version_of
from smart_auth.urls_of import fhir_base

logger = logging.getLogger(__name__)


def fhir_endpoint(view):
    """Run a FHIR view: FhirError -> its OperationOutcome (in the requested format), a statement
    cut off by FHIR_REQUEST_TIMEOUT_SECONDS -> 503. Anything else is a bug or an outage and goes
    up to config.recovery (500 with the request id). CSRF does not apply: the API takes no cookies."""

    @csrf_exempt
    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except errors.FhirError as exc:
            return outcome_response(request, exc)
        except RequestDataTooBig:
            too_big = errors.FhirError.single(
                413, "too-costly", "The request body is larger than this server accepts"
            )
            return outcome_response(request, too_big)
        except OperationalError as exc:
            if not isinstance(exc.__cause__, QueryCanceled):
                raise
            logger.warning("statement timeout in %s", view.__name__)
            timeout = errors.FhirError.single(
                503, "timeout", "The request took longer than this server allows; narrow it or retry later"
            )
            return outcome_response(request, timeout)

    return wrapper


def outcome_response(request: HttpRequest, error: errors.FhirError) -> HttpResponse:
    body = outcome_from_issues(error.issues)
    try:
        return fhir_response(request, body, error.status, shaped=False)
    except errors.FhirError:  # the format itself was the problem: answer in JSON
        request.GET = request.GET.copy()
        request.GET.pop("_format", None)
        return fhir_response(request, body, error.status, shaped=False)


def base_url(request: HttpRequest) -> str:
    """The tenant's FHIR base, e.g. http://host/t/demo/fhir."""
    return fhir_base(request)


def with_version_headers(response: HttpResponse, stored: StoredResource) -> HttpResponse:
    response["ETag"] = stored.etag
    response["Last-Modified"] = http_date(stored.last_updated.timestamp())
    return response


def not_modified(request: HttpRequest, stored: StoredResource) -> bool:
    """If-None-Match / If-Modified-Since on reads (http://hl7.org/fhir/R4/http.html#cread)."""
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match:
        return any(version_of(tag) == stored.version_id for tag in if_none_match.split(","))
    if_modified_since = request.headers.get("If-Modified-Since")
    if if_modified_since:
        try:
            since = parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError):
            return False
        return stored.last_updated.replace(microsecond=0) <= since
    return False


def if_match_version(request: HttpRequest) -> int | None:
    header = request.headers.get("If-Match")
    if header is None:
        return None
    version = version_of(header)
    if version is None:
        raise errors.bad_request('If-Match must be a version ETag such as W/"3"')
    return version


def not_modified_response(stored: StoredResource) -> HttpResponse:
    return with_version_headers(HttpResponse(status=304), stored)


def stored_response(request: HttpRequest, stored: StoredResource, status: int = 200) -> HttpResponse:
    """The answer to a write, shaped by Prefer (http://hl7.org/fhir/R4/http.html#ops)."""
    prefer = request.headers.get("Prefer", "")
    if "return=minimal" in prefer:
        response = HttpResponse(status=status)
    elif "return=OperationOutcome" in prefer:
        outcome = outcome_from_issues(
            [errors.Issue("informational", f"{stored.location} stored", severity="information")]
        )
        response = fhir_response(request, outcome, status, shaped=False)
    else:
        response = fhir_response(request, stored.content, status)
    response["Location"] = f"{base_url(request)}/{stored.location}"
    return with_version_headers(response, stored)
