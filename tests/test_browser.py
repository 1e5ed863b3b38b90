"""The pages and the Embeddable adapter in a real headless Chromium (Debian's, driven by Playwright).

The app runs on a real HTTP server on 127.0.0.1. The adapter test loads a partner's page from
another origin (``http://localhost:<port>``, a rule the test adds, listed in LOOKUP_ALLOWED_ORIGINS)
that embeds the adapter script from the service (``http://127.0.0.1:<port>``) and a stub of the
Embeddable widget: an iframe from the service's origin, again not the page's, that behaves as the
widget's third-party contacts contract says (``seeds/embeddable-third-party-contacts.txt``): it
announces itself, takes the registration, sends ``rc-post-message-request`` for the contact list,
a search, a match and a view, and records the ``rc-post-message-response`` answers. The adapter
answers them from the real contacts endpoints, across origins (CORS with preflight).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Response
from werkzeug.serving import make_server

from tests.conftest import DEMO_CSV, TOKEN
from tests.servers import free_port

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "docs" / "try-it.png"  # rewritten when UPDATE_SCREENSHOTS=1; otherwise left alone

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium; scripts/test installs it)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-test.txt)")

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
WAIT_MS = 15_000  # how long the browser may take for one step (a bound, not a measured speed)
CONTACTS_CSV = DEMO_CSV + "muller;Jürg Müller;Müller Holz AG;+41 44 500 10 20;+41 79 123 45 67;;de;;\n"

# The stub widget: what Embeddable's iframe does with a third-party service, per the seed.
WIDGET_PAGE = """<!doctype html><html><body><p>stub widget</p><script>
window.log = {registrations: [], responses: {}, syncs: 0};
var next = 0;
function ask(path, body) {
  var id = "req-" + (++next);
  parent.postMessage({type: "rc-post-message-request", requestId: id, path: path, body: body}, "*");
  return id;
}
window.addEventListener("message", function (e) {
  var m = e.data || {};
  if (m.type === "rc-adapter-register-third-party-service") {
    log.registrations.push(m.service);
    if (log.registrations.length > 1) { return; }
    var s = m.service;
    log.asked = {
      list: ask(s.contactsPath, {page: 1}),
      search: ask(s.contactSearchPath, {searchString: "mül"}),
      match: ask(s.contactMatchPath, {phoneNumbers: ["+41215522000", "41 44 500 10 20", "+41999999999"]}),
      view: ask(s.viewMatchedContactPath, {id: "directory:alexa", name: "Alexa Holiday"})
    };
  } else if (m.type === "rc-post-message-response") {
    log.responses[m.responseId] = m.response;
  } else if (m.type === "rc-adapter-sync-third-party-contacts") {
    log.syncs += 1;
  }
});
// Embeddable announces its state to the page once it runs
parent.postMessage({type: "rc-login-status-notify", loggedIn: true}, "*");
</script></body></html>"""


def _host_page(service: str) -> str:
    return f"""<!doctype html><html><body>
<iframe id="rc-widget-adapter-frame" src="{service}/test-widget" title="widget"></iframe>
<script src="{service}/embeddable/adapter.js" data-token="{TOKEN}" data-service-name="TestLookup"></script>
</body></html>"""


class _Recorder:
    """WSGI middleware: every request's path and query, to prove the token never travels in a URL."""

    def __init__(self, app):
        self.app = app
        self.urls: list[str] = []

    def __call__(self, environ, start_response):
        method, path, query = environ['REQUEST_METHOD'], environ.get('PATH_INFO', ''), environ.get('QUERY_STRING', '')
        self.urls.append(f"{method} {path}?{query}")
        return self.app(environ, start_response)


@pytest.fixture
def served(make_app, load_contacts) -> Iterator[tuple[object, str, _Recorder]]:
    load_contacts(CONTACTS_CSV)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = make_app(LOOKUP_ALLOWED_ORIGINS=f"http://localhost:{port}")
    app.add_url_rule("/test-widget", "test_widget", lambda: Response(WIDGET_PAGE, mimetype="text/html"))
    app.add_url_rule("/test-host", "test_host", lambda: Response(_host_page(base), mimetype="text/html"))
    recorder = _Recorder(app.wsgi_app)
    app.wsgi_app = recorder
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield app, base, recorder
    finally:
        server.shutdown()
        thread.join(10)


@pytest.fixture
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _widget_frame(page):
    for frame in page.frames:  # page.goto waited for the iframes' load events
        if frame.url.endswith("/test-widget"):
            return frame
    raise AssertionError(f"no widget frame among {[f.url for f in page.frames]}")


def test_the_adapter_registers_with_the_widget_and_answers_its_requests(served, browser):
    app, base, recorder = served
    page = browser.new_page()
    page.on("popup", lambda popup: popup.close())  # the view request opens the contact's page
    page.goto(base.replace("127.0.0.1", "localhost") + "/test-host")  # the partner's page: another origin
    widget = _widget_frame(page)
    assert widget.url.startswith(base)  # the widget's origin is not the page's either, as with the real one
    widget.wait_for_function("log.asked && Object.keys(log.responses).length === 4", timeout=WAIT_MS)
    log = widget.evaluate("log")

    service = log["registrations"][0]
    assert service == {
        "name": "TestLookup", "contactsPath": "/contacts", "contactSearchPath": "/contacts/search",
        "contactMatchPath": "/contacts/match", "viewMatchedContactPath": "/contacts/view",
        "contactIcon": f"{base}/static/contact-icon.svg",  # the directory has no logo: the service's own
    }
    responses, asked = log["responses"], log["asked"]
    listed = responses[asked["list"]]
    assert sorted(c["name"] for c in listed["data"]) == ["Alexa Holiday", "Bruno Keller", "Jürg Müller", "Reception"]
    assert {c["type"] for c in listed["data"]} == {"TestLookup"}  # the registered name, as the widget needs
    assert listed["nextPage"] is None and isinstance(listed["syncTimestamp"], int)
    assert [c["name"] for c in responses[asked["search"]]["data"]] == ["Jürg Müller"]  # "mül" as typed
    matched = responses[asked["match"]]["data"]
    assert set(matched) == {"+41215522000", "41 44 500 10 20", "+41999999999"}  # every number, as given
    assert [c["id"] for c in matched["+41215522000"]] == ["directory:alexa"]
    assert [c["id"] for c in matched["41 44 500 10 20"]] == ["directory:muller"]
    assert matched["41 44 500 10 20"][0]["phoneNumbers"][0]["phoneNumber"] == "+41445001020"
    assert matched["+41999999999"] == []
    assert responses[asked["view"]] == "ok"
    assert widget.evaluate(f"fetch('{service['contactIcon']}').then(r => r.status)") == 200
    assert any(url.startswith("OPTIONS /contacts/match") for url in recorder.urls)  # the browser's preflight

    # the page asks the widget to sync; a reloaded widget is registered again
    page.evaluate("PhoneLookupAdapter.sync()")
    widget.wait_for_function("log.syncs === 1", timeout=WAIT_MS)
    with widget.expect_navigation(timeout=WAIT_MS):
        widget.evaluate("setTimeout(function () { location.reload(); }, 0)")
    widget.wait_for_function("log.registrations.length === 1 && log.syncs === 0", timeout=WAIT_MS)
    assert all(TOKEN not in url for url in recorder.urls)  # the token went only in headers
    assert any(url.startswith("GET /contacts/search?searchString=m%C3%BCl") for url in recorder.urls)


def test_the_adapter_script_carries_no_token(served):
    app, base, _ = served
    script = app.test_client().get("/embeddable/adapter.js")
    assert script.status_code == 200 and script.mimetype == "text/javascript"
    assert TOKEN not in script.get_data(as_text=True) and "X-Execution-Token" in script.get_data(as_text=True)


def test_the_try_it_page_shows_the_caller_card(served, browser, tmp_path):
    app, base, recorder = served
    page = browser.new_page(viewport={"width": 900, "height": 1000})
    page.goto(f"{base}/")
    assert page.title() == "Phone lookup service"
    assert page.inner_text("#readiness") == "Ready"
    page.get_by_label("Token (X-Execution-Token)").fill(TOKEN)
    page.get_by_label("Phone number").fill("41215522000")
    page.get_by_label("Phone number").press("Enter")  # the keyboard submits the form
    page.wait_for_selector(".card .name", timeout=WAIT_MS)

    card = page.locator(".card").first
    assert card.locator(".name").inner_text() == "Alexa Holiday"
    assert card.locator(".company").inner_text() == "White Cross Co"
    assert card.locator(".crm-name").inner_text() == "Directory"
    assert card.get_by_role("link", name="Contact in Directory").get_attribute("href") == "https://crm.example/c/alexa"
    assert card.get_by_role("link", name="Company in Directory").get_attribute("href") == "https://crm.example/o/wcc"
    assert "alexa@example.com" in card.locator("dl").inner_text()
    raw = json.loads(page.locator("#raw").text_content())
    assert raw[0]["id"] == "directory:alexa" and raw[0]["name"] == "Alexa Holiday"

    page.wait_for_selector("#backends-box:not([hidden]) #backends tr", timeout=WAIT_MS)
    assert page.inner_text("#tenant-name") == "default"
    cells = page.locator("#backends tr").first.locator("td").all_inner_texts()
    assert cells[0] == "directory" and cells[3] == "closed" and cells[5] == "4"
    assert page.evaluate("sessionStorage.getItem('phone-lookup-token')") == TOKEN
    assert TOKEN not in page.url and all(TOKEN not in url for url in recorder.urls)
    page.locator("#raw-box summary").click()
    shot = SCREENSHOT if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path / "try-it.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 0

    page.get_by_label("Token (X-Execution-Token)").fill("wrong-token-0123456789")
    page.get_by_role("button", name="Look up").click()
    page.wait_for_selector("#message.error", timeout=WAIT_MS)
    assert page.inner_text("#message").startswith("Error 401: missing or wrong X-Execution-Token header")
    assert page.locator(".card").count() == 0 and page.locator("#backends-box").is_hidden()
