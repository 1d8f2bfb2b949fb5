"""ABAC rules and sensitive security labels (access.policy) over real HTTP, on tenant alpha of
a server in standalone auth mode, with user tokens from `issue_token`.

Two organisations A and B, with patients of each and their Observations; a rule for a role of
this module only (`organization={organization}`) so that no other test sees it.
"""

from __future__ import annotations

import io
import uuid

import httpx
import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.management import call_command

from access.models import AccessRule
from tenants.management.commands._tenant_command import in_tenant
from tests.smart_support import CSRF, PASSWORD, tenant_admin

MARK = "urn:test:abac"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
SCOPES = "user/*.rs"


def issue(scopes: str, username: str | None = None, patient: str | None = None) -> str:
    out = io.StringIO()
    call_command("issue_token", "--tenant", "alpha", "--scopes", scopes,
                 *(["--username", username] if username else []),
                 *(["--patient", patient] if patient else []), stdout=out)  # fmt: skip
    return out.getvalue().strip()


def user_client(
    base: str,
    role: str,
    organization: str = "",
    fhir_user: str = "",
    scopes: str = SCOPES,
    patient: str | None = None,
) -> httpx.Client:
    """A client with a token (`scopes`, launch `patient`) of a new login of `role`."""
    username = f"user{uuid.uuid4().hex[:10]}"
    call_command("create_user", "--tenant", "alpha", "--username", username, "--password", PASSWORD,
                 "--role", role, "--organization", organization, "--fhir-user", fhir_user,
                 stdout=io.StringIO())  # fmt: skip
    token = issue(scopes, username, patient)
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60)


def create(client: httpx.Client, resource: dict) -> str:
    response = client.post(f"/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def ids(bundle: dict, resource_type: str | None = None) -> set[str]:
    return {
        e["resource"]["id"]
        for e in bundle.get("entry", [])
        if resource_type is None or e["resource"]["resourceType"] == resource_type
    }


@pytest.fixture(scope="module")
def clinic(server, django_db_blocker):
    base = f"{server.url}/t/alpha/fhir"
    marker = uuid.uuid4().hex
    ident = [{"system": MARK, "value": marker}]
    role = f"ward{marker[:8]}"
    with django_db_blocker.unblock():
        admin = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {issue('system/*.*')}"}, timeout=60
        )
        org_a = create(admin, {"resourceType": "Organization", "name": "A", "identifier": ident})
        org_b = create(admin, {"resourceType": "Organization", "name": "B", "identifier": ident})

        def patient(org: str) -> str:
            return create(admin, {"resourceType": "Patient", "identifier": ident,
                                  "managingOrganization": {"reference": f"Organization/{org}"}})  # fmt: skip

        def observation(patient_id: str, label: str | None = None) -> str:
            body = {
                "resourceType": "Observation",
                "status": "final",
                "identifier": ident,
                "code": {"text": "abac"},
                "subject": {"reference": f"Patient/{patient_id}"},
            }
            if label:
                body["meta"] = {"security": [{"system": CONFIDENTIALITY, "code": label}]}
            return create(admin, body)

        pa1, pa2, pb1 = patient(org_a), patient(org_a), patient(org_b)
        world = {
            "base": base,
            "marker": marker,
            "role": role,
            "admin": admin,
            "org_a": org_a,
            "org_b": org_b,
            "pa1": pa1,
            "pa2": pa2,
            "pb1": pb1,
            "oa1": observation(pa1),
            "oa2": observation(pa2),
            "ob1": observation(pb1),
            "o_r": observation(pa1, "R"),
            "o_v": observation(pa1, "V"),
        }
        with in_tenant("alpha"):
            rule = AccessRule.objects.create(role=role, patient_criteria="organization={organization}")
        world["doc_a"] = user_client(base, role, f"Organization/{org_a}")
        world["other_role"] = user_client(base, f"other{marker[:8]}", f"Organization/{org_a}")
        world["restricted"] = user_client(base, f"{role} restricted", f"Organization/{org_a}")
        world["glass"] = user_client(base, f"{role} break-glass", f"Organization/{org_a}")
        world["no_org"] = user_client(base, role)
    yield world
    with django_db_blocker.unblock(), in_tenant("alpha"):
        rule.delete()
    for value in world.values():
        if isinstance(value, httpx.Client):
            value.close()


def test_a_clinician_reaches_the_patients_of_their_organisation_only(clinic):
    doc = clinic["doc_a"]
    found = doc.get("/Patient", params={"identifier": f"{MARK}|{clinic['marker']}", "_total": "accurate"})
    assert found.status_code == 200
    assert ids(found.json()) == {clinic["pa1"], clinic["pa2"]} and found.json()["total"] == 2
    assert doc.get(f"/Patient/{clinic['pa1']}").status_code == 200
    refused = doc.get(f"/Patient/{clinic['pb1']}")
    assert refused.status_code == 403 and refused.json()["issue"][0]["code"] == "forbidden"
    assert doc.get(f"/Observation/{clinic['ob1']}").status_code == 403
    assert doc.get(f"/Observation/{clinic['oa2']}").status_code == 200
    observations = doc.get("/Observation", params={"identifier": f"{MARK}|{clinic['marker']}"}).json()
    assert ids(observations) == {clinic["oa1"], clinic["oa2"]}  # not ob1, nor the labelled ones
    # Types outside the Patient compartment stay reachable.
    assert doc.get(f"/Organization/{clinic['org_b']}").status_code == 200


def test_paging_and_totals_are_exact(clinic):
    params = {"identifier": f"{MARK}|{clinic['marker']}", "_count": "1", "_total": "accurate"}
    page = clinic["doc_a"].get("/Patient", params=params).json()
    seen = ids(page)
    assert page["total"] == 2
    while next_link := [link["url"] for link in page["link"] if link["relation"] == "next"]:
        page = httpx.get(next_link[0], headers=clinic["doc_a"].headers, timeout=60).json()
        seen |= ids(page)
    assert seen == {clinic["pa1"], clinic["pa2"]}


def test_includes_chains_and_everything_do_not_leak(clinic):
    doc, marker = clinic["doc_a"], clinic["marker"]
    revinclude = doc.get(
        "/Organization", params={"_id": clinic["org_b"], "_revinclude": "Patient:organization"}
    ).json()
    assert ids(revinclude) == {clinic["org_b"]}  # pb1 dropped
    included = doc.get(
        "/Observation", params={"identifier": f"{MARK}|{marker}", "_include": "Observation:subject"}
    ).json()
    assert ids(included, "Patient") == {clinic["pa1"], clinic["pa2"]}
    chained = doc.get("/Observation", params={"subject:Patient.organization": clinic["org_b"]}).json()
    assert ids(chained) == set()
    everything = doc.get(f"/Patient/{clinic['pa1']}/$everything").json()
    assert {clinic["pa1"], clinic["oa1"]} <= ids(everything)
    assert not {clinic["o_r"], clinic["o_v"]} & ids(everything)
    assert doc.get(f"/Patient/{clinic['pb1']}/$everything").status_code == 403


def test_a_role_without_rules_and_the_admin_are_not_restricted(clinic):
    for client in (clinic["other_role"], clinic["admin"]):
        found = client.get("/Patient", params={"identifier": f"{MARK}|{clinic['marker']}"}).json()
        assert ids(found) == {clinic["pa1"], clinic["pa2"], clinic["pb1"]}
        assert client.get(f"/Observation/{clinic['ob1']}").status_code == 200
    assert clinic["admin"].get(f"/Observation/{clinic['o_v']}").status_code == 200


def test_a_rule_naming_an_attribute_the_user_lacks_reaches_nobody(clinic):
    found = clinic["no_org"].get("/Patient", params={"identifier": f"{MARK}|{clinic['marker']}"}).json()
    assert ids(found) == set()
    assert clinic["no_org"].get(f"/Organization/{clinic['org_a']}").status_code == 200


def test_sensitive_labels_need_their_role(clinic):
    doc, restricted = clinic["doc_a"], clinic["restricted"]
    assert doc.get(f"/Observation/{clinic['o_r']}").status_code == 403
    assert doc.get(f"/Observation/{clinic['o_v']}").status_code == 403
    assert restricted.get(f"/Observation/{clinic['o_r']}").status_code == 200
    assert restricted.get(f"/Observation/{clinic['o_v']}").status_code == 403  # V needs very-restricted
    found = restricted.get("/Observation", params={"identifier": f"{MARK}|{clinic['marker']}"}).json()
    assert ids(found) == {clinic["oa1"], clinic["oa2"], clinic["o_r"]}
    history = doc.get("/Observation/_history", params={"_count": "1000"}).json()
    assert not {clinic["o_r"], clinic["o_v"], clinic["ob1"]} & ids(history)
    # Writing a labelled resource one may not see is refused as well (it would land out of reach).
    written = clinic["doc_a"].post(
        "/Observation",
        json={
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "meta": {"security": [{"system": CONFIDENTIALITY, "code": "R"}]},
        },
    )
    assert written.status_code == 403


def test_break_glass_lifts_rules_and_labels_and_is_recorded(clinic, owner_db):
    glass = clinic["glass"]
    assert glass.get(f"/Patient/{clinic['pb1']}").status_code == 403
    assert glass.get(f"/Observation/{clinic['o_r']}").status_code == 403
    rid = uuid.uuid4().hex
    headers = {"X-Break-Glass": "unconscious patient", "X-Request-ID": rid}
    assert glass.get(f"/Patient/{clinic['pb1']}", headers=headers).status_code == 200
    assert glass.get(f"/Observation/{clinic['o_v']}", headers=headers).status_code == 200
    recorded = owner_db.execute(
        "SELECT reason FROM alpha.smart_auth_breakglassaccess WHERE request_id = %s", [rid]
    ).fetchall()
    assert recorded == [("unconscious patient",)] * 2
    events = owner_db.execute(
        "SELECT event FROM alpha.audit_record WHERE event LIKE %s", [f"%{rid}%"]
    ).fetchall()
    assert len(events) == 2 and all('"BTG"' in event for (event,) in events)


def test_rules_are_checked_when_saved():
    with pytest.raises(ValidationError, match="unknown attributes: team"):
        AccessRule(role="x", patient_criteria="general-practitioner={team}").clean()
    with pytest.raises(ValidationError, match="not a supported search"):
        AccessRule(role="x", patient_criteria="nonsense=1").clean()
    AccessRule(role="x", patient_criteria="_has:CareTeam:patient:participant={fhirUser}").clean()


def test_rules_and_labels_are_edited_in_the_tenant_admin(smart_server):
    name = f"policy{uuid.uuid4().hex[:8]}"
    with in_tenant("alpha"):
        User.objects.create_superuser(name, password=PASSWORD)
    with tenant_admin(smart_server.url, name) as browser:
        labels = browser.get("/access/securitylabelrule/")
        assert labels.status_code == 200 and "very-restricted" in labels.text
        add = browser.get("/access/accessrule/add/")
        token = CSRF.search(add.text).group(1)
        refused = browser.post(
            "/access/accessrule/add/",
            data={
                "csrfmiddlewaretoken": token,
                "role": "x",
                "patient_criteria": "organization={team}",
                "active": "on",
            },
        )
        assert refused.status_code == 200 and "unknown attributes: team" in refused.text
