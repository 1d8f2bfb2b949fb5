"""Errors the FHIR engine raises; the API turns each into an OperationOutcome with its status."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue. `code` is from http://hl7.org/fhir/R4/valueset-issue-type.html."""

    code: str
    diagnostics: str
    expression: str | None = None
    severity: str = "error"


@dataclass
class FhirError(Exception):
    status: int
    issues: list[Issue] = field(default_factory=list)

    @classmethod
    def single(cls, status: int, code: str, diagnostics: str, expression: str | None = None) -> FhirError:
        return cls(status, [Issue(code, diagnostics, expression)])

    def __str__(self) -> str:
        return "; ".join(issue.diagnostics for issue in self.issues)


def bad_request(diagnostics: str, code: str = "invalid", expression: str | None = None) -> FhirError:
    return FhirError.single(400, code, diagnostics, expression)


def forbidden(diagnostics: str) -> FhirError:
    return FhirError.single(403, "forbidden", diagnostics)


def not_found(diagnostics: str) -> FhirError:
    return FhirError.single(404, "not-found", diagnostics)


def gone(diagnostics: str) -> FhirError:
    return FhirError.single(410, "deleted", diagnostics)


def precondition_failed(diagnostics: str) -> FhirError:
    return FhirError.single(412, "conflict", diagnostics)


def not_supported(diagnostics: str, status: int = 400) -> FhirError:
    return FhirError.single(status, "not-supported", diagnostics)


def load_json(body: bytes, what: str) -> object:
    """Parse JSON from a client; 400 naming where it breaks, never quoting it (it may be PHI).
    Its size is bounded before (config/limits.py), its nesting here."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"The {what} is malformed at character {exc.pos}", code="structure") from None
    check_depth(document, what)
    return document


# Deeper than any FHIR resource needs (a Synthea transaction nests about 12 levels), shallow
# enough that no recursive walk over a document (validation, indexing, XML) can exhaust the stack.
MAX_JSON_DEPTH = 100


def check_depth(document: object, what: str) -> None:
    """400 when objects and arrays nest deeper than MAX_JSON_DEPTH. Level by level, without
    recursion, each container visited once."""
    level = [document] if isinstance(document, dict | list) else []
    for _ in range(MAX_JSON_DEPTH):
        if not level:
            return
        deeper = []
        for container in level:
            children = container.values() if type(container) is dict else container
            deeper.extend(child for child in children if type(child) is dict or type(child) is list)
        level = deeper
    if level:
        raise bad_request(f"The {what} nests deeper than {MAX_JSON_DEPTH} levels", code="too-costly")
