"""Normalising what providers send: be liberal in what you accept, conservative in what you store.

Elements the validator rejects (empty strings, malformed dates, unknown elements) are removed and
each removal recorded; a resource that stays invalid (a required element missing) is left out and
recorded. The importer (sync.importer) runs it on every fetched resource.
"""

from __future__ import annotations

import re

from fhirserver.validation import validate_resource

MAX_PASSES = 5
_STEP = re.compile(r"([A-Za-z0-9_]+)(?:\[(\d+)\])?")


def normalise(resource: dict) -> tuple[dict | None, list[dict]]:
    """The resource without the elements the validator rejects, and what was removed; None
    when removing elements cannot make it valid."""
    kind = resource["resourceType"]
    changes: list[dict] = []
    for _ in range(MAX_PASSES):
        issues = validate_resource(resource, kind)
        if not issues:
            return resource, changes
        removed = False
        for issue in issues:
            if issue.code != "required" and _remove(resource, issue.expression, kind):
                changes.append({"element": issue.expression, "reason": issue.diagnostics})
                removed = True
        _prune(resource)
        if not removed:
            break
    reasons = [issue.diagnostics for issue in validate_resource(resource, kind)][:3]
    return None, [*changes, {"element": kind, "reason": "left out, still invalid: " + "; ".join(reasons)}]


def _remove(resource: dict, expression: str | None, kind: str) -> bool:
    """Delete the element at a validator expression (`Observation.note[0].text`)."""
    if not expression or not expression.startswith(kind + "."):
        return False
    steps = [(m.group(1), m.group(2)) for m in _STEP.finditer(expression[len(kind) + 1 :])]
    parent: object = resource
    for name, index in steps[:-1]:
        parent = parent.get(name) if isinstance(parent, dict) else None
        if index is not None:
            parent = parent[int(index)] if isinstance(parent, list) and int(index) < len(parent) else None
    name, index = steps[-1] if steps else (None, None)
    if not isinstance(parent, dict) or name not in parent:
        return False
    if index is None:
        del parent[name]
    elif isinstance(parent[name], list) and int(index) < len(parent[name]):
        parent[name][int(index)] = None  # pruned below, so other indexes stay right meanwhile
    else:
        del parent[name]
    return True


def _prune(value: object) -> object:
    """Drop None, empty objects and empty arrays left behind by removals."""
    if isinstance(value, dict):
        for name in list(value):
            value[name] = _prune(value[name])
            if value[name] in (None, {}, []):
                del value[name]
    elif isinstance(value, list):
        value[:] = [item for item in (_prune(item) for item in value) if item not in (None, {}, [])]
    return value
