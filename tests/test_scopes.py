"""SMART scope grammar, v1 and v2 (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html),
subsets for refresh, and roles implied by scopes."""

from __future__ import annotations

import pytest

from fhirserver import errors
from smart_auth.context import AuthContext
from smart_auth.scopes import (
    ContextScope,
    InvalidScope,
    ResourceScope,
    ScopeSet,
    granted,
    is_subset,
    parse,
    parse_scope,
    require_role,
    roles_from_scopes,
)

LAB = "category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
LAB_PAIR = ("category", "http://terminology.hl7.org/CodeSystem/observation-category|laboratory")


@pytest.mark.parametrize(
    ("text", "level", "resource_type", "permissions"),
    [
        ("patient/*.read", "patient", "*", "rs"),
        ("user/Observation.write", "user", "Observation", "cud"),
        ("system/*.*", "system", "*", "cruds"),
        ("patient/Observation.rs", "patient", "Observation", "rs"),
        ("user/*.cruds", "user", "*", "cruds"),
        ("system/Encounter.cud", "system", "Encounter", "cud"),
        ("patient/Patient.r", "patient", "Patient", "r"),
        ("user/Appointment.d", "user", "Appointment", "d"),
    ],
)
def test_resource_scopes_of_both_grammars(text, level, resource_type, permissions):
    assert parse_scope(text) == ResourceScope(level, resource_type, frozenset(permissions))


def test_v2_restriction_is_decoded_search_parameters():
    plain = parse_scope(f"patient/Observation.rs?{LAB}")
    encoded = parse_scope(
        "patient/Observation.rs?category=http%3A%2F%2Fterminology.hl7.org%2FCodeSystem"
        "%2Fobservation-category%7Claboratory"
    )
    assert plain == encoded
    assert plain.restriction == (LAB_PAIR,)
    several = parse_scope(f"patient/Observation.rs?{LAB}&date=ge2020-01-01")
    assert several.restriction == (LAB_PAIR, ("date", "ge2020-01-01"))
    assert parse_scope("patient/*.rs?_tag=http://example.org|x").restriction == (
        ("_tag", "http://example.org|x"),
    )


@pytest.mark.parametrize(
    "text",
    [
        "openid",
        "fhirUser",
        "profile",
        "launch",
        "launch/patient",
        "launch/encounter",
        "offline_access",
        "online_access",
    ],
)
def test_context_scopes_grant_no_resource_access(text):
    assert parse_scope(text) == ContextScope(text)
    scopes = parse(text)
    assert scopes.resource_scopes == ()
    assert not scopes.allows("Patient", "read")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "patient",
        "patient/Observation",
        "patient/Observation.",
        "patient/Observation.xyz",
        "patient/Observation.sr",  # out of order
        "patient/Observation.rr",  # twice
        "patient/Observation.dus",  # the spec's own example of an undefined request
        "patient/Observation.READ",
        "doctor/Observation.rs",
        "patient/observation.rs",
        "patient/Foo.rs",
        "patient/*.read?category=laboratory",  # restrictions are v2 only
        "patient/Observation.rs?",
        "patient/Observation.rs?category",
        "patient/Observation.rs?category=",
        "patient/Observation.rs?nonsense=1",
        "patient/Observation.rs?date=notadate",
        "patient/Observation.rs?_count=10",  # not a criterion
        "patient/*.rs?category=laboratory",  # not a parameter of every type
        "launch/diagnosticreport",  # allowed by the spec as an extension, not offered here
        "Patient/Observation.rs",
    ],
)
def test_malformed_scopes_are_invalid(text):
    with pytest.raises(InvalidScope):
        parse_scope(text)


def test_parse_refuses_a_string_with_any_invalid_scope():
    assert parse("openid patient/Observation.rs").allows("Observation", "read")
    with pytest.raises(InvalidScope):
        parse("openid patient/Observation.rs patient/Observation.xyz")


def test_granted_scopes_ignore_what_is_not_smart():
    scopes = granted(frozenset({"patient/Observation.rs", "https://example.org/other-api", "launch/patient"}))
    assert scopes.resource_scopes == (parse_scope("patient/Observation.rs"),)
    assert scopes.context_scopes == {"launch/patient"}


@pytest.mark.parametrize(
    ("scope", "interaction", "allowed"),
    [
        ("patient/Observation.rs", "read", True),
        ("patient/Observation.rs", "vread", True),
        ("patient/Observation.rs", "history-instance", True),
        ("patient/Observation.rs", "search-type", True),
        ("patient/Observation.rs", "history-type", True),
        ("patient/Observation.rs", "create", False),
        ("patient/Observation.r", "search-type", False),
        ("patient/Observation.s", "read", False),
        ("patient/Observation.cud", "update", True),
        ("patient/Observation.cud", "patch", True),
        ("patient/Observation.cud", "delete", True),
        ("patient/Observation.c", "read", False),  # "write access does not imply read access"
        ("patient/Observation.read", "search-system", True),
        ("patient/Observation.write", "read", False),
        ("user/*.*", "delete", True),
    ],
)
def test_interactions_need_their_permission(scope, interaction, allowed):
    assert parse(scope).allows("Observation", interaction) is allowed


def test_any_granting_scope_allows_and_types_must_match():
    scopes = parse("patient/Condition.r patient/Observation.s patient/Observation.r")
    assert scopes.allows("Observation", "read")
    assert scopes.allows("Observation", "search-type")
    assert not scopes.allows("Condition", "search-type")
    assert not scopes.allows("Encounter", "read")
    assert parse("patient/*.rs").allows("Encounter", "read")


def test_granting_names_the_scopes_with_their_restrictions():
    scopes = parse(f"patient/Observation.rs?{LAB} patient/Observation.r user/Condition.rs")
    assert {s.restriction for s in scopes.granting("Observation", "read")} == {(LAB_PAIR,), ()}
    assert [s.restriction for s in scopes.granting("Observation", "search-type")] == [(LAB_PAIR,)]


def test_v1_and_v2_spellings_are_the_same_scope_set():
    assert parse("patient/*.read user/Observation.write") == parse("patient/*.rs user/Observation.cud")
    assert parse("system/*.*") == parse("system/*.cruds")
    assert ScopeSet.of([parse_scope("openid")]) == parse("openid openid")


@pytest.mark.parametrize(
    ("requested", "held", "within"),
    [
        ("patient/Observation.r", "patient/Observation.rs", True),
        ("patient/Observation.rs", "patient/*.read", True),
        ("patient/Observation.rs", "patient/Observation.r patient/Observation.s", True),
        ("patient/Observation.read", "patient/Observation.rs", True),
        ("patient/Observation.rs", "patient/Observation.r", False),
        ("patient/*.rs", "patient/Observation.rs", False),
        ("user/Observation.rs", "patient/Observation.rs", False),
        ("patient/Observation.rs", "user/Observation.rs", False),
        ("patient/Observation.c", "patient/*.read", False),
        (f"patient/Observation.rs?{LAB}", "patient/Observation.rs", True),
        ("patient/Observation.rs", f"patient/Observation.rs?{LAB}", False),
        (f"patient/Observation.rs?{LAB}&date=ge2020", f"patient/Observation.rs?{LAB}", True),
        (f"patient/Observation.rs?{LAB}", "patient/Observation.rs?category=vital-signs", False),
        (
            "openid launch/patient patient/Observation.rs",
            "openid launch/patient offline_access patient/*.rs",
            True,
        ),
        ("offline_access patient/Observation.rs", "patient/*.rs", False),
        ("", "patient/*.rs", True),
    ],
)
def test_is_subset(requested, held, within):
    assert is_subset(requested, held) is within


def test_is_subset_refuses_malformed_scopes():
    with pytest.raises(InvalidScope):
        is_subset("patient/Observation.xyz", "patient/*.rs")


@pytest.mark.parametrize(
    ("scopes", "roles"),
    [
        ("system/*.*", {"admin"}),
        ("user/*.cruds", {"admin"}),
        ("user/*.read", {"clinician"}),
        ("user/Observation.rs", {"clinician"}),
        ("patient/Observation.read", {"patient"}),
        ("patient/*.*", {"patient"}),
        ("system/*.rs", {"system"}),
        ("user/*.cruds?_tag=http://example.org|x", {"clinician"}),
        ("openid launch/patient patient/*.rs user/Practitioner.rs", {"patient", "clinician"}),
        ("openid fhirUser", set()),
    ],
)
def test_roles_from_scopes(scopes, roles):
    assert roles_from_scopes(scopes.split()) == roles


def test_require_role_prefers_explicit_roles_and_lets_admin_through():
    clinician_by_scope = AuthContext(user="u", scopes=frozenset({"user/*.rs"}))
    require_role(clinician_by_scope, "clinician")
    explicit_patient = AuthContext(user="u", roles=frozenset({"patient"}), scopes=frozenset({"user/*.rs"}))
    with pytest.raises(errors.FhirError) as refused:
        require_role(explicit_patient, "clinician")
    assert refused.value.status == 403
    assert refused.value.issues[0].code == "forbidden"
    require_role(AuthContext(user="u", scopes=frozenset({"system/*.*"})), "clinician")
