"""The AuditEvent (R4, http://hl7.org/fhir/R4/auditevent.html) of one FHIR request, in the
shape IHE Basic Audit Log Patterns (BALP) gives RESTful access:

- type `rest` (audit-event-type), subtype the restful interaction, action C/R/U/D/E;
  a refused bearer token is DICOM 110114 "User Authentication" instead; reading the audit
  trail itself is DICOM 110101 "Audit Log Used";
- outcome 0 success, 4 minor failure (4xx), 8 serious failure (5xx);
- agents: the user (requestor, roles, source IP) and the client application (DICOM 110150);
- source: this server (security-source-type 4, application server) and the tenant;
- entities: the resource (object-role 4) or the query (object-role 24, base64), each patient
  (entity type 1 person, object-role 1 patient), and the request id (BALP XrequestId);
- purposeOfEvent: break-glass (v3-ActReason BTG) with the reason the request gave.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from datetime import datetime

import orjson

from audit.interactions import Interaction
from fhirserver.storage.repository import format_instant
from smart_auth.context import AuthContext

DCM = "http://dicom.nema.org/resources/ontology/DCM"
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
BALP_ENTITY_TYPE = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"

REST = {"system": EVENT_TYPE, "code": "rest", "display": "Restful Operation"}
AUTHENTICATION = {"system": DCM, "code": "110114", "display": "User Authentication"}
AUDIT_LOG_USED = {"system": DCM, "code": "110101", "display": "Audit Log Used"}


@dataclass(frozen=True)
class Facts:
    """Everything an AuditEvent says about one request."""

    tenant: str
    status: int
    interaction: Interaction | None  # None: the request was refused before routing (401)
    context: AuthContext | None
    source_ip: str
    request_id: str
    patients: set[str] = field(default_factory=set)
    references: list[str] = field(default_factory=list)  # resources written or read: Type/id[/_history/v]
    break_glass: str | None = None
    recorded: datetime | None = None


def outcome(status: int) -> int:
    return 0 if status < 400 else 4 if status < 500 else 8


def event(facts: Facts) -> dict:
    """The AuditEvent resource, with its id and meta as stored and served."""
    recorded = format_instant(facts.recorded)
    body: dict = {
        "resourceType": "AuditEvent",
        "id": str(uuid.uuid4()),
        "meta": {"versionId": "1", "lastUpdated": recorded},
        **_kind(facts.interaction),
        "recorded": recorded,
        "outcome": str(outcome(facts.status)),
        "outcomeDesc": f"HTTP {facts.status}",
        "agent": _agents(facts),
        "source": {
            "site": facts.tenant,
            "observer": {"display": f"fhirserver tenant {facts.tenant}"},
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
        "entity": _entities(facts),
    }
    if facts.break_glass is not None:
        body["purposeOfEvent"] = [
            {
                "coding": [{"system": ACT_REASON, "code": "BTG", "display": "break the glass"}],
                "text": facts.break_glass,
            }
        ]
    return body


def canonical(resource: dict) -> str:
    """The one serialization that is hashed, stored and served: sorted keys, no spaces."""
    return orjson.dumps(resource, option=orjson.OPT_SORT_KEYS).decode()


def _kind(interaction: Interaction | None) -> dict:
    if interaction is None:
        return {"type": AUTHENTICATION, "action": "E"}
    subtype = {"system": INTERACTION, "code": interaction.subtype}
    kind = AUDIT_LOG_USED if interaction.resource_type == "AuditEvent" else REST
    return {"type": kind, "subtype": [subtype], "action": interaction.action}


def _agents(facts: Facts) -> list[dict]:
    context = facts.context
    user: dict = {"requestor": True}
    if facts.source_ip:  # none for background jobs
        user["network"] = {"address": facts.source_ip, "type": "2"}  # 2: IP address
    if context is not None:
        who: dict = {}
        if context.fhir_user:
            who["reference"] = context.fhir_user
        if context.user:
            who["identifier"] = {"value": context.user}
            user["altId"] = context.user
        if who:
            user["who"] = who
        if context.roles:
            user["role"] = [{"text": role} for role in sorted(context.roles)]
    agents = [user]
    if context is not None and context.client_id:
        agents.append(
            {
                "type": {"coding": [{"system": DCM, "code": "110150", "display": "Application"}]},
                "who": {"identifier": {"value": context.client_id}},
                "requestor": False,
            }
        )
    return agents


def _entities(facts: Facts) -> list[dict]:
    entities = [_resource_entity(reference, facts.interaction) for reference in facts.references]
    interaction = facts.interaction
    if interaction is not None and (interaction.query or not facts.references):
        entities.append(_query_entity(interaction))
    entities += [
        {
            "what": {"reference": f"Patient/{patient}"},
            "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
            "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
        }
        for patient in sorted(facts.patients)
    ]
    entities.append(
        {
            "what": {"identifier": {"value": facts.request_id}},
            "type": {"system": BALP_ENTITY_TYPE, "code": "XrequestId"},
        }
    )
    return entities


def _resource_entity(reference: str, interaction: Interaction | None) -> dict:
    entity = {
        "what": {"reference": reference},
        "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
        "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
    }
    if interaction is not None and interaction.operation:
        entity["detail"] = [{"type": "operation", "valueString": f"${interaction.operation}"}]
    return entity


def _query_entity(interaction: Interaction) -> dict:
    """A search or type-level request: what was asked, as the query string (R4 entity.query is
    base64Binary; sev-1 allows no name with it)."""
    entity = {
        "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
        "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
        "query": base64.b64encode(interaction.query.encode()).decode(),
    }
    details = []
    if interaction.resource_type:
        details.append({"type": "resourceType", "valueString": interaction.resource_type})
    if interaction.operation:
        details.append({"type": "operation", "valueString": f"${interaction.operation}"})
    if details:
        entity["detail"] = details
    return entity
