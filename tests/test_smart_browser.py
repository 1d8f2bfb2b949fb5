"""A SMART app in a real headless browser: the npm `fhirclient` library launches it standalone
against our server, a practitioner signs in, picks the patient and allows access, and the app
exchanges the code (PKCE, cross-origin) and reads the patient from the FHIR API.

Needs Debian's chromium (/usr/bin/chromium; Playwright drives it, it never downloads a browser)
and the npm registry once (the app's packages go to the git-ignored tests/browser_app/node_modules).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import uuid
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import pytest
from playwright.sync_api import sync_playwright

from tests.smart_support import PASSWORD, run_manage

APP_DIR = Path(__file__).parent / "browser_app"
CHROMIUM = Path("/usr/bin/chromium")
FHIRCLIENT = "node_modules/fhirclient"


def unavailable(reason: str) -> None:
    """Skip where a developer lacks chromium or npm; CI installs them (.ci/run), so there a
    missing one fails the run instead of passing it without the test."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def installed_fhirclient_version() -> str | None:
    # npm writes this hidden lockfile last, so a half-finished install does not count.
    hidden_lock = APP_DIR / "node_modules" / ".package-lock.json"
    if not hidden_lock.exists():
        return None
    return json.loads(hidden_lock.read_text())["packages"].get(FHIRCLIENT, {}).get("version")


def install_app_packages() -> None:
    """`npm ci` from the committed lockfile, unless its fhirclient is installed already (the app
    loads nothing else: the library's browser bundle is self-contained)."""
    locked = json.loads((APP_DIR / "package-lock.json").read_text())["packages"][FHIRCLIENT]["version"]
    if installed_fhirclient_version() == locked:
        return
    npm = shutil.which("npm")
    if npm is None:
        unavailable("npm is not installed: the browser SMART app needs it to install fhirclient")
    # Optional and peer dependencies are fhirclient's React Native crypto, unused by the
    # bundle; the only install script (core-js's) prints a banner.
    command = [npm, "ci", "--prefix", str(APP_DIR), "--omit=optional", "--legacy-peer-deps"]
    result = subprocess.run(
        [*command, "--ignore-scripts", "--no-audit", "--no-fund"], capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        unavailable(f"npm ci in tests/browser_app failed (no registry?):\n{result.stderr[-2000:]}")


@pytest.fixture(scope="module")
def app_url():
    """The app's pages and node_modules over HTTP on a free port: a separate origin from the
    FHIR server, as a deployed app would be, so the token exchange and reads go through CORS."""
    if not CHROMIUM.exists():
        unavailable(f"Debian chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    install_app_packages()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=APP_DIR))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_fhirclient_js_standalone_launch_in_chromium(world, app_url):
    client_id = f"browser{uuid.uuid4().hex[:8]}"
    run_manage(
        "register_client",
        "--tenant",
        "alpha",
        "--client-id",
        client_id,
        "--public",
        "--redirect-uri",
        f"{app_url}/index.html",
    )
    fhir_base = f"{world['server']}/t/alpha/fhir"
    launch = f"{app_url}/launch.html?" + urlencode({"client_id": client_id, "iss": fhir_base})

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            page.goto(launch)
            # fhirclient discovers the endpoints and sends the browser to /auth/authorize,
            # which sends it on to our login page.
            page.wait_for_url(f"{world['server']}/t/alpha/auth/login**")
            page.fill("input[name=username]", world["doctor_user"])
            page.fill("input[name=password]", PASSWORD)
            page.get_by_role("button", name="Sign in").click()

            page.wait_for_url("**/auth/authorize/patient**")
            page.fill("input[name=name]", world["family"])
            page.get_by_role("button", name="Search").click()
            page.check(f"input[name=patient][value='{world['patient']}']")
            page.get_by_role("button", name="Choose").click()

            page.wait_for_url("**/auth/authorize/consent**")
            page.get_by_role("button", name="Allow").click()

            # fhirclient drops the code from the address bar once it has read it, hence no "?".
            page.wait_for_url(f"{app_url}/index.html**")
            page.wait_for_selector("#status[data-done]")
            assert page.text_content("#status") == "Loaded", page.text_content("body")
            assert page.text_content("#family") == world["family"]
            assert page.text_content("#patient-id") == world["patient"]
        finally:
            browser.close()
