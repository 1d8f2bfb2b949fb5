"""A standalone patient launch completed by the SMART client library from PyPI (`fhirclient`),
which finds the endpoints in our CapabilityStatement, sends PKCE S256 and reads with the token."""

from __future__ import annotations

import httpx
from fhirclient import client as smart_client
from fhirclient.models.patient import Patient

from tests.smart_support import PASSWORD, REDIRECT_URI


def test_fhirclient_standalone_launch(world):
    app = world["public"]
    settings = {
        "app_id": app.client_id,
        "api_base": app.fhir_base,
        "redirect_uri": REDIRECT_URI,
        "scope": "launch/patient openid fhirUser patient/*.rs",
    }
    smart = smart_client.FHIRClient(settings=settings)
    assert not smart.ready
    browser = app.new_browser()
    redirect = app.follow(browser.get(smart.authorize_url), world["patient_user"], PASSWORD)
    smart.handle_callback(str(redirect.headers["location"]))

    assert smart.ready
    assert smart.patient_id == world["patient"]
    patient = Patient.read(world["patient"], smart.server)
    assert patient.name[0].family == world["family"]
    assert (
        httpx.get(f"{app.fhir_base}/Patient/{world['patient']}").status_code == 401
    )  # the library's token did it
