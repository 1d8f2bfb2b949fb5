"""FHIR Consent deny provisions (access.policy) over real HTTP: a deny hides what it should and
nothing else. Tenant alpha, standalone auth, user tokens of practitioners X and Y (a role of
this module, without access rules) and of the patient themselves.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.test_abac import create, ids, issue, user_client

MARK = "urn:test:consent"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"


def consent(patient: str, provision: dict, status: str = "active") -> dict:
    return {
        "resourceType": "Consent",
        "status": status,
        "scope": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient}"},
        "policyRule": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]
        },
        "provision": provision,
    }


def deny(actor: str | None = None, classes: tuple[str, ...] = (), **elements) -> dict:
    provision = {"type": "deny", **elements}
    if actor:
        provision["actor"] = [
            {
                "role": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                            "code": "PRCP",
                        }
                    ]
                },
                "reference": {"reference": actor},
            }
        ]
    if classes:
        provision["class"] = [{"system": RESOURCE_TYPES, "code": c} for c in classes]
    return provision


@pytest.fixture(scope="module")
def ward(server, django_db_blocker):
    base = f"{server.url}/t/alpha/fhir"
    marker = uuid.uuid4().hex
    ident = [{"system": MARK, "value": marker}]
    role = f"cons{marker[:8]}"
    with django_db_blocker.unblock():
        admin = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {issue('system/*.*')}"}, timeout=60
        )
        x = create(admin, {"resourceType": "Practitioner", "identifier": ident})
        y = create(admin, {"resourceType": "Practitioner", "identifier": ident})
        org = create(admin, {"resourceType": "Organization", "identifier": ident})

        def patient() -> str:
            return create(admin, {"resourceType": "Patient", "identifier": ident})

        def record(kind: str, patient_id: str) -> str:
            body = {
                "resourceType": kind,
                "identifier": ident,
                "subject": {"reference": f"Patient/{patient_id}"},
            }
            if kind == "Observation":
                body |= {"status": "final", "code": {"text": "consent"}}
            return create(admin, body)

        pc, pd = patient(), patient()
        world = {
            "base": base,
            "marker": marker,
            "admin": admin,
            "patient": patient,
            "record": record,
            "x": x,
            "org": org,
            "pc": pc,
            "pd": pd,
            "oc1": record("Observation", pc),
            "oc2": record("Observation", pc),
            "cc1": record("Condition", pc),
            "od1": record("Observation", pd),
        }
        # The common shape: a root permit with a nested deny for practitioner X on Observations.
        create(
            admin, consent(pc, {"type": "permit", "provision": [deny(f"Practitioner/{x}", ("Observation",))]})
        )
        world["as_x"] = user_client(base, role, f"Organization/{org}", f"Practitioner/{x}")
        world["as_x_glass"] = user_client(base, f"{role} break-glass", fhir_user=f"Practitioner/{x}")
        world["as_y"] = user_client(base, role, fhir_user=f"Practitioner/{y}")
        world["as_pc"] = user_client(base, "", fhir_user=f"Patient/{pc}", scopes="patient/*.rs", patient=pc)
    yield world
    for value in world.values():
        if isinstance(value, httpx.Client):
            value.close()


def _search(client: httpx.Client, path: str, **params) -> dict:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_consent_deny_hides_what_it_should_and_nothing_else(ward):
    x, mark = ward["as_x"], f"{MARK}|{ward['marker']}"
    observations = _search(x, "/Observation", identifier=mark, _total="accurate")
    assert ids(observations) == {ward["od1"]} and observations["total"] == 1
    assert x.get(f"/Observation/{ward['oc1']}").status_code == 403
    assert x.get(f"/Observation/{ward['oc1']}/_history").status_code == 403
    assert ids(_search(x, "/Observation", subject=ward["pc"])) == set()
    # The patient's other data stays visible to X.
    assert x.get(f"/Patient/{ward['pc']}").status_code == 200
    assert x.get(f"/Condition/{ward['cc1']}").status_code == 200
    assert ids(_search(x, "/Condition", identifier=mark)) >= {ward["cc1"]}
    # Includes, reverse chains and $everything do not bring them back.
    revincluded = _search(x, "/Patient", _id=ward["pc"], _revinclude="Observation:subject")
    assert ids(revincluded) == {ward["pc"]}
    assert (
        ids(_search(x, "/Patient", _id=ward["pc"], **{"_has:Observation:subject:identifier": mark})) == set()
    )
    everything = ids(_search(x, f"/Patient/{ward['pc']}/$everything"))
    assert {ward["pc"], ward["cc1"]} <= everything and not {ward["oc1"], ward["oc2"]} & everything
    # Another practitioner, the patient, and the administrator still see them.
    assert ids(_search(ward["as_y"], "/Observation", identifier=mark)) == {
        ward["oc1"],
        ward["oc2"],
        ward["od1"],
    }
    assert ward["as_y"].get(f"/Observation/{ward['oc1']}").status_code == 200
    assert ward["as_pc"].get(f"/Observation/{ward['oc1']}").status_code == 200
    assert ward["admin"].get(f"/Observation/{ward['oc2']}").status_code == 200


def test_a_root_deny_without_a_class_hides_all_the_patients_data(ward):
    admin, record = ward["admin"], ward["record"]
    patient = ward["patient"]()
    condition = record("Condition", patient)
    create(admin, consent(patient, deny(f"Practitioner/{ward['x']}")))
    x = ward["as_x"]
    assert x.get(f"/Patient/{patient}").status_code == 403
    assert x.get(f"/Condition/{condition}").status_code == 403
    assert x.get(f"/Patient/{patient}/$everything").status_code == 403
    assert x.get(f"/Patient/{ward['pd']}").status_code == 200
    assert ward["as_y"].get(f"/Condition/{condition}").status_code == 200


@pytest.mark.parametrize(
    "actor",
    ["organization", "careteam", "everyone"],
)
def test_a_deny_reaches_the_user_through_their_organisation_or_care_team(ward, actor):
    admin = ward["admin"]
    patient = ward["patient"]()
    observation = ward["record"]("Observation", patient)
    reference = {
        "organization": f"Organization/{ward['org']}",
        "careteam": "CareTeam/"
        + create(
            admin,
            {
                "resourceType": "CareTeam",
                "participant": [{"member": {"reference": f"Practitioner/{ward['x']}"}}],
            },
        ),
        "everyone": None,
    }[actor]
    create(admin, consent(patient, deny(reference, ("Observation",))))
    assert ward["as_x"].get(f"/Observation/{observation}").status_code == 403
    expected_for_y = 403 if actor == "everyone" else 200
    assert ward["as_y"].get(f"/Observation/{observation}").status_code == expected_for_y


@pytest.mark.parametrize(
    ("status", "elements"),
    [
        ("active", {"period": {"start": "2001-01-01", "end": "2002-12-31"}}),  # over
        ("active", {"period": {"start": "2999-01-01"}}),  # not yet
        ("active", {"purpose": [{"system": ACT_REASON, "code": "HMARKT"}]}),  # another purpose
        ("active", {"action": [{"coding": [{"code": "collect"}]}]}),  # not about seeing
        ("inactive", {}),
        ("rejected", {}),
        ("draft", {}),
    ],
)
def test_consents_that_do_not_apply_hide_nothing(ward, status, elements):
    patient = ward["patient"]()
    observation = ward["record"]("Observation", patient)
    provision = deny(f"Practitioner/{ward['x']}", ("Observation",), **elements)
    create(ward["admin"], consent(patient, provision, status=status))
    assert ward["as_x"].get(f"/Observation/{observation}").status_code == 200


def test_a_period_that_holds_now_applies(ward):
    patient = ward["patient"]()
    observation = ward["record"]("Observation", patient)
    provision = deny(
        f"Practitioner/{ward['x']}", ("Observation",), period={"start": "2001-01-01", "end": "2999"}
    )
    create(ward["admin"], consent(patient, provision))
    assert ward["as_x"].get(f"/Observation/{observation}").status_code == 403


def test_break_glass_is_emergency_treatment(ward):
    """A deny for treatment does not hold in an emergency; one without a purpose does."""
    admin, record = ward["admin"], ward["record"]
    treatment_only, always = ward["patient"](), ward["patient"]()
    observations = {p: record("Observation", p) for p in (treatment_only, always)}
    purpose = {"purpose": [{"system": ACT_REASON, "code": "TREAT"}]}
    create(admin, consent(treatment_only, deny(f"Practitioner/{ward['x']}", ("Observation",), **purpose)))
    create(admin, consent(always, deny(f"Practitioner/{ward['x']}", ("Observation",))))
    glass = ward["as_x_glass"]
    emergency = {"X-Break-Glass": "emergency"}
    assert glass.get(f"/Observation/{observations[treatment_only]}").status_code == 403
    assert glass.get(f"/Observation/{observations[treatment_only]}", headers=emergency).status_code == 200
    assert glass.get(f"/Observation/{observations[always]}", headers=emergency).status_code == 403
