"""ABAC rules, sensitive security labels and Consent deny provisions, as SQL conditions on
fhir_resource rows `r` (fhirserver.api.authorization ANDs them into what the SMART scopes
reach: scopes, then ABAC, then consent).

Who they apply to: user tokens (user/ and patient/ scopes). Not to backend tokens (any system/
scope), nor to the admin role (the development context is both). Break-glass lifts the ABAC
rules and the labels, and turns the purpose of use from TREAT into ETREAT for consents.

- ABAC (`AccessRule`): the rules of the user's roles name, as a search on Patient with the
  user's attributes filled in, which patients they reach; Patient-compartment resources are
  reached when they are in a reached patient's compartment. No rule for any of the roles: no
  restriction. A rule naming an attribute the user lacks reaches nobody.
- Labels (`SecurityLabelRule`): a resource carrying a listed meta.security label is reached
  only by users holding that label's role, whatever its type.
- Consent: active Consent resources whose deny provisions (root or nested, each read on its own)
  apply to the requester hide the patient's compartment resources of the provision's classes
  (all of them without a class) from reading interactions (read, vread, history, search,
  includes, $everything). Writes are not filtered by consents.

Everything is loaded at most once per request (one `Policy` per request's `Access`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qsl

import orjson
from django.db import connection

from access.models import PLACEHOLDER
from fhirserver import errors
from fhirserver.registry import r4
from fhirserver.search import compartment, query, sql
from fhirserver.search.dates import parse_range
from fhirserver.storage import phi
from smart_auth.context import AuthContext
from smart_auth.scopes import granted, roles_from_scopes

ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
TREATMENT = (ACT_REASON, "TREAT")
EMERGENCY_TREATMENT = (ACT_REASON, "ETREAT")
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
CONSENT_ACTION = "http://terminology.hl7.org/CodeSystem/consentaction"
SEEING_ACTIONS = frozenset({"access", "use", "disclose"})  # not collect, correct
READING = frozenset(
    {"read", "vread", "history-instance", "history-type", "history-system", "search-type", "search-system"}
)
Condition = tuple[str, list]


class _Missing(Exception):
    """A rule names an attribute the user does not have."""


def rule_query(criteria: str, attributes: dict[str, str | None]) -> query.SearchQuery | None:
    """The search on Patient of a rule with the attributes filled in; None when an attribute
    is missing or a parameter cannot be evaluated (the rule then reaches nobody)."""

    def fill(match) -> str:
        value = attributes.get(match[1])
        if not value:
            raise _Missing(match[1])
        return value.replace("\\", "\\\\").replace(",", "\\,").replace("$", "\\$")

    try:
        pairs = [
            (name, PLACEHOLDER.sub(fill, value))
            for name, value in parse_qsl(criteria, keep_blank_values=True)
        ]
    except _Missing:
        return None
    parsed = query.parse("Patient", pairs, sql.SUPPORTED_TYPES)
    return None if parsed.ignored else parsed


def _reference(text: str | None) -> str | None:
    """`Type/id` of a relative or absolute reference."""
    if not text:
        return None
    parts = text.split("/_history/")[0].rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 else None


class Policy:
    """The ABAC, label and consent conditions of one request's AuthContext."""

    def __init__(self, context: AuthContext | None):
        self.context = context
        self.subject = _is_subject(context)
        self.break_glass = bool(context is not None and context.break_glass)
        self.purpose = EMERGENCY_TREATMENT if self.break_glass else TREATMENT
        self._loaded = False
        self._rules: list[str] = []
        self._labels: list[str] = []  # "system|code" the user may not see
        self._patients: Condition | None = None  # reached patients, SQL of their ids
        self._profile: dict | None = None
        self._denials: dict[str, frozenset[str] | None] | None = None  # patient -> types (None: all)

    # ----- conditions ---------------------------------------------------------------------------
    def conditions(self, resource_type: str, interaction: str, labels: bool = True) -> Condition:
        """ANDed conditions on `r` (of `resource_type`) for the interaction; ([], []) for none."""
        if not self.subject:
            return [], []
        conditions, params = [], []
        if compartment.in_types(resource_type):
            for found in (self._abac(resource_type), self._consent(resource_type, interaction)):
                if found is not None:
                    conditions.append(found[0])
                    params += found[1]
        if labels and (found := self.label_condition("r.resource_type", "r.resource_id")) is not None:
            conditions.append(found[0])
            params += found[1]
        return conditions, params

    def label_condition(self, type_sql: str, id_sql: str) -> Condition | None:
        """Resources (type and id expressions) carrying none of the labels the user may not see."""
        if not self.subject or self.break_glass:
            return None
        self._load()
        if not self._labels:
            return None
        return (
            "NOT EXISTS (SELECT 1 FROM fhir_index_token l WHERE l.resource_type = "
            f"{type_sql} AND l.resource_id = {id_sql} AND l.param = '_security'"
            " AND coalesce(l.system, '') || '|' || l.code = ANY(%s))",
            [self._labels],
        )

    def _abac(self, resource_type: str) -> Condition | None:
        if self.break_glass:
            return None
        self._load()
        if not self._rules:
            return None
        if self._patients is None:
            self._patients = self._reached_patients()
        return compartment.of_patients(resource_type, "IN (" + self._patients[0] + ")", self._patients[1])

    def _reached_patients(self) -> Condition:
        attributes = {"fhirUser": self.context.fhir_user, "organization": None}
        if any("{organization}" in rule for rule in self._rules):
            attributes["organization"] = self._user_profile().get("organization")
        alternatives, params = [], []
        for rule in self._rules:
            parsed = rule_query(rule, attributes)
            if parsed is None or not parsed.clauses:
                continue  # reaches nobody
            conditions, rule_params = sql.where("Patient", parsed.clauses)
            alternatives.append("(" + " AND ".join(conditions) + ")")
            params += rule_params
        matching = " OR ".join(alternatives) if alternatives else "FALSE"
        return (
            "SELECT r.resource_id FROM fhir_resource r WHERE r.resource_type = 'Patient'"
            f" AND NOT r.deleted AND ({matching})",
            params,
        )

    def _consent(self, resource_type: str, interaction: str) -> Condition | None:
        if interaction not in READING:
            return None
        if self._denials is None:
            self._denials = self._load_denials()
        patients = sorted(p for p, types in self._denials.items() if types is None or resource_type in types)
        if not patients:
            return None
        condition, params = compartment.of_patients(resource_type, "= ANY(%s)", [patients])
        return f"NOT ({condition})", params

    # ----- data ---------------------------------------------------------------------------------
    def _load(self) -> None:
        """The rules of the user's roles and the labels none of them may see: one query."""
        if self._loaded:
            return
        self._loaded = True
        roles = sorted(self.context.roles or roles_from_scopes(self.context.scopes))
        with connection.cursor() as db:
            db.execute(
                "SELECT 'rule', patient_criteria, '' FROM access_accessrule WHERE active AND role = ANY(%s)"
                " UNION ALL SELECT 'label', system, code FROM access_securitylabelrule"
                " WHERE NOT (role = ANY(%s))",
                [roles, roles],
            )
            for kind, first, second in db.fetchall():
                if kind == "rule":
                    self._rules.append(first)
                else:
                    self._labels.append(f"{first}|{second}")

    def _user_profile(self) -> dict:
        if self._profile is None:
            self._profile = {}
            user = self.context.user or ""
            if user.isdigit():
                with connection.cursor() as db:
                    db.execute(
                        "SELECT organization FROM smart_auth_userprofile WHERE user_id = %s", [int(user)]
                    )
                    row = db.fetchone()
                if row and row[0]:
                    self._profile["organization"] = _reference(row[0])
        return self._profile

    def _load_denials(self) -> dict[str, frozenset[str] | None]:
        """patient id -> the types its applicable deny provisions hide (None: all of them)."""
        with connection.cursor() as db:
            db.execute(
                "SELECT r.resource_id, r.content FROM fhir_resource r WHERE r.resource_type = 'Consent'"
                " AND NOT r.deleted AND r.resource_id IN (SELECT i.resource_id FROM fhir_index_token i"
                " WHERE i.resource_type = 'Consent' AND i.param = 'status' AND i.code = 'active')"
            )
            rows = db.fetchall()
        own = _reference(self.context.fhir_user)
        denials: dict[str, frozenset[str] | None] = {}
        identities = _Identities(self)
        now = datetime.now(UTC)
        for resource_id, content in rows:
            consent = orjson.loads(phi.reveal("Consent", resource_id, content))
            patient = _reference((consent.get("patient") or {}).get("reference"))
            if consent.get("status") != "active" or not patient or not patient.startswith("Patient/"):
                continue
            if patient == own:
                continue  # a patient is not kept from their own record by their own consent
            patient_id = patient.split("/", 1)[1]
            for provision in _provisions(consent.get("provision")):
                if not self._applies(provision, identities, now):
                    continue
                types = _classes(provision)
                known = denials.get(patient_id, frozenset())
                denials[patient_id] = None if types is None or known is None else known | types
        return denials

    def _applies(self, provision: dict, identities: _Identities, now: datetime) -> bool:
        if provision.get("type") != "deny":
            return False
        if not _within(provision.get("period"), now):
            return False
        purposes = provision.get("purpose") or []
        if purposes and not any(_coding_matches(c, self.purpose) for c in purposes):
            return False
        actions = [c.get("code") for a in provision.get("action") or [] for c in a.get("coding") or []]
        if actions and not SEEING_ACTIONS.intersection(actions):
            return False
        actors = [
            _reference((a.get("reference") or {}).get("reference")) for a in provision.get("actor") or []
        ]
        return not actors or any(actor in identities for actor in actors if actor)


class _Identities:
    """Who the requester is, as references a Consent actor may name: the fhirUser, the user's
    organization, and the PractitionerRoles and CareTeams naming the fhirUser (looked up once,
    only when an actor is not one of the first two)."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self.direct = {ref for ref in (_reference(policy.context.fhir_user),) if ref}
        self._organization_loaded = False
        self._indirect: set[str] | None = None

    def __contains__(self, reference: str) -> bool:
        if reference in self.direct:
            return True
        if not self._organization_loaded:
            self._organization_loaded = True
            organization = self.policy._user_profile().get("organization")
            if organization:
                self.direct.add(organization)
            if reference in self.direct:
                return True
        if self._indirect is None:
            self._indirect = self._load_indirect()
        return reference in self._indirect

    def _load_indirect(self) -> set[str]:
        fhir_user = _reference(self.policy.context.fhir_user)
        if not fhir_user:
            return set()
        target_type, target_id = fhir_user.split("/", 1)
        with connection.cursor() as db:
            db.execute(
                "SELECT i.resource_type || '/' || i.resource_id FROM fhir_index_reference i"
                " WHERE ((i.resource_type = 'PractitionerRole' AND i.param = 'practitioner')"
                " OR (i.resource_type = 'CareTeam' AND i.param = 'participant'))"
                " AND i.target_id = %s AND i.target_type = %s",
                [target_id, target_type],
            )
            return {row[0] for row in db.fetchall()}


def _is_subject(context: AuthContext | None) -> bool:
    """User tokens other than the admin role's; not backend (system/) tokens."""
    if context is None:
        return False
    if any(scope.level == "system" for scope in granted(context.scopes).resource_scopes):
        return False
    return "admin" not in (context.roles or roles_from_scopes(context.scopes))


def _provisions(provision) -> list[dict]:
    """The provision and its nested ones, at every depth."""
    if not isinstance(provision, dict):
        return []
    found = [provision]
    for nested in provision.get("provision") or []:
        found += _provisions(nested)
    return found


def _classes(provision: dict) -> frozenset[str] | None:
    """The resource types a provision is about; None for all the patient's data (no class, or
    a class this server cannot map to resource types: a privacy rule is never narrowed by
    guessing)."""
    classes = provision.get("class") or []
    types = set()
    for coding in classes:
        code = coding.get("code")
        if coding.get("system") != RESOURCE_TYPES or not r4().is_resource_type(code or ""):
            return None
        types.add(code)
    return frozenset(types) if types else None


def _coding_matches(coding: dict, wanted: tuple[str, str]) -> bool:
    system = coding.get("system")
    return coding.get("code") == wanted[1] and (system is None or system == wanted[0])


def _within(period, now: datetime) -> bool:
    """Whether `now` lies in a Period (its end inclusive at its precision); a malformed bound
    counts as open, so the deny applies."""
    if not isinstance(period, dict):
        return True
    try:
        if period.get("start") and now < parse_range(period["start"], "period.start")[0]:
            return False
        if period.get("end") and now >= parse_range(period["end"], "period.end")[1]:
            return False
    except errors.FhirError:
        return True
    return True
