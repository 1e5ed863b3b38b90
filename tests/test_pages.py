"""The pages for people without a browser: GET /, /status, /readme, /embeddable/adapter.js.
What the browser does with them is tested in tests/test_browser.py."""

from __future__ import annotations

from lookup_service.pages import service_version
from tests.conftest import DEMO_CSV, HEADERS, TOKEN


def test_the_home_page_is_html_with_the_version_the_readiness_and_the_links(client):
    response = client.get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert service_version() != "unknown" and f"version {service_version()}" in page
    assert 'id="readiness">Ready<' in page
    for target in ('href="/openapi.json"', 'href="/readme"', 'href="/readyz"'):
        assert target in page
    assert '<label for="token">' in page and '<label for="number">' in page
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"
    assert "<script src=\"/static/pages.js\">" in page and "http" not in page.split("<script")[1].split(">")[0]


def test_the_home_page_says_when_a_backend_is_not_ready(make_app, tmp_path):
    app = make_app()
    store = app.extensions["lookup"].tenants[0].slots[0].backend.store
    store.close()
    (tmp_path / "directory.sqlite3").write_bytes(b"not a database")
    store._local.__dict__.clear()  # the next query reopens the (now broken) file
    page = app.test_client().get("/").get_data(as_text=True)
    assert 'id="readiness">Not ready<' in page and "local store not readable" in page


def test_status_needs_the_token_and_lists_the_backends(client):
    refused = client.get("/status")
    assert refused.status_code == 401 and refused.get_json()["error"] == "unauthorized"
    status = client.get("/status", headers=HEADERS).get_json()
    assert status["tenant"] == "default"
    assert status["contactIcon"] == "http://localhost/static/contact-icon.svg"
    assert status["backends"] == [{"name": "directory", "type": "directory", "mode": "live", "crmName": "Directory",
                                   "breaker": "closed", "lastSync": None, "contacts": 3}]
    assert client.get("/static/contact-icon.svg").mimetype == "image/svg+xml"


def test_the_adapter_script_names_the_header_and_holds_no_secret(client):
    response = client.get("/embeddable/adapter.js")
    assert response.status_code == 200 and response.mimetype == "text/javascript"
    script = response.get_data(as_text=True)
    assert 'var TOKEN_HEADER = "X-Execution-Token";' in script and TOKEN not in script
    for message in ("rc-adapter-register-third-party-service", "rc-post-message-response",
                    "rc-adapter-sync-third-party-contacts"):
        assert message in script


def test_the_readme_is_served_as_text(client):
    response = client.get("/readme")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    assert response.get_data(as_text=True).startswith("# ")


def test_other_unknown_paths_stay_json_errors(client):
    for path in ("/static/nothing.js", "/embeddable/other.js", "/embeddable/"):
        response = client.get(path)
        assert response.status_code == 404 and response.mimetype == "application/json", path
        assert response.get_json()["error"] == "not_found"
    assert client.post("/").status_code == 405 and client.post("/").mimetype == "application/json"


def test_status_answers_the_tenants_allowed_origins_only(make_app, load_contacts):
    load_contacts(DEMO_CSV)
    client = make_app(LOOKUP_ALLOWED_ORIGINS="https://app.example.com").test_client()
    preflight = client.options("/status", headers={"Origin": "https://app.example.com",
                                                   "Access-Control-Request-Headers": "x-execution-token"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "X-Execution-Token" in preflight.headers["Access-Control-Allow-Headers"].split(", ")
    assert preflight.headers["Access-Control-Allow-Methods"] == "GET, OPTIONS"
    allowed = client.get("/status", headers={**HEADERS, "Origin": "https://app.example.com"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    for origin in ("https://evil.example", "https://app.example.com.evil.example"):
        assert "Access-Control-Allow-Origin" not in client.options("/status", headers={"Origin": origin}).headers
        assert "Access-Control-Allow-Origin" not in client.get("/status", headers={**HEADERS, "Origin": origin}).headers
