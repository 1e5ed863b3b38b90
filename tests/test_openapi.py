"""GET /openapi.json: a valid OpenAPI document that describes what the service really answers.

Three layers: the document is valid and names every route; real responses of the app (one per
documented outcome we can provoke) validate against it with openapi-core; and schemathesis
fuzzes a real gunicorn on 127.0.0.1 built from the same document (OPENAPI_FUZZ_EXAMPLES cases per
operation and phase, 100 by default: about 560 cases in 10 to 20 seconds here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_spec_validator import validate as validate_document
from werkzeug.test import EnvironBuilder

from lookup_core.types import Contact
from lookup_service.openapi import build_spec, contact_schema, undescribed_rules
from lookup_service.schemas import CAMEL_KEYS, PASCAL_KEYS, ResponseFormat, WorkflowInputs
from tests.conftest import DEMO_CSV, HEADERS, TOKEN
from tests.servers import free_port
from tests.servers.lookup_process import procfile_command, start_service

ROOT = Path(__file__).resolve().parent.parent
FUZZ_EXAMPLES = int(os.environ.get("OPENAPI_FUZZ_EXAMPLES", "100"))
FUZZ_LIMIT_S = 240  # the whole schemathesis run is killed after this (normally about 30 s)
METRICS_TOKEN = "metrics-token-0123456789"


def _document(app) -> dict:
    response = app.test_client().get("/openapi.json")  # no token
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()


def test_the_document_is_valid_openapi_and_needs_no_token(make_app):
    document = _document(make_app())
    validate_document(document)
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) >= {"/Lookup", "/CallFlow", "/healthz", "/metrics", "/openapi.json"}
    assert set(document["paths"]["/Lookup"]) == {"get", "post"}


def test_every_route_of_the_app_is_described(make_app):
    app = make_app()
    assert undescribed_rules(app, app.extensions["lookup"].settings) == []


def test_a_route_without_a_description_is_noticed(make_app):
    app = make_app()
    app.add_url_rule("/extra", "extra", lambda: "")
    assert undescribed_rules(app, app.extensions["lookup"].settings) == ["/extra"]


def test_the_token_header_is_the_configured_one(make_app):
    document = _document(make_app(LOOKUP_TOKEN_HEADER="X-Api-Key"))
    schemes = document["components"]["securitySchemes"]
    assert schemes["ExecutionToken"] == {**schemes["ExecutionToken"], "type": "apiKey", "in": "header",
                                         "name": "X-Api-Key"}
    assert document["security"] == [{"ExecutionToken": []}]
    public = {path for path, item in document["paths"].items() if item["get" if "get" in item else "post"].get(
        "security") == []}
    pages = {"/", "/readme", "/embeddable/adapter.js"}  # lookup_service/pages.py
    assert public == {"/healthz", "/openapi.json"} | pages | ({"/readyz"} if "/readyz" in document["paths"] else set())


@pytest.mark.parametrize(("style", "keys"), [("camel", CAMEL_KEYS), ("pascal", PASCAL_KEYS)])
def test_the_contact_has_exactly_the_keys_the_service_renders(make_app, style, keys):
    document = _document(make_app(LOOKUP_RESPONSE_KEYS=style))
    contact = document["components"]["schemas"]["Contact"]
    assert list(contact["properties"]) == list(keys)
    assert sorted(contact["required"]) == sorted(keys) and contact["additionalProperties"] is False
    rendered = ResponseFormat(style).contact(Contact(id="7", name="Alexa Holiday", email="a@example.com"),
                                             "directory:7", "Directory", None, ["CallFlow"])
    assert contact_schema(style)().load(rendered) == rendered


def test_the_workflow_inputs_are_the_schema_the_service_validates_with(make_app):
    document = _document(make_app())
    described = document["components"]["schemas"]["WorkflowInputs"]
    assert list(described["properties"]) == list(WorkflowInputs().fields)
    assert described["required"] == [name for name, f in WorkflowInputs().fields.items() if f.required]
    body = document["components"]["schemas"]["WorkflowRequest"]
    assert body["properties"]["inputs"] == {"$ref": "#/components/schemas/WorkflowInputs"}


# --- real responses against the document ------------------------------------------------------------

_BIG = json.dumps({"inputs": {"phoneNumber": "41215522000", "pad": "x" * 70_000}})
_CALL = {"contactCrmId": "directory:alexa", "direction": "incoming", "originatorNumber": "41215522000",
         "destinationNumber": "41445001020", "startedTime": "2026-11-21T09:00:00Z", "endedTime": 1795251800}
# (method, path, request keyword arguments, expected status, expected error code or None)
REQUESTS = [
    ("GET", "/Lookup?PhoneNumber=41215522000", {"headers": HEADERS}, 200, None),
    ("GET", "/Lookup?PhoneNumber=41999999999", {"headers": HEADERS}, 200, None),
    ("POST", "/Lookup", {"headers": HEADERS, "json": {"inputs": {"phoneNumber": "41215522000"}}}, 200, None),
    ("POST", "/Lookup", {"headers": HEADERS, "json": {"phoneNumber": 41446681800}}, 200, None),
    ("GET", "/Lookup", {"headers": HEADERS}, 400, "missing_number"),
    ("GET", "/Lookup?PhoneNumber=abc", {"headers": HEADERS}, 400, "invalid_number"),
    ("POST", "/Lookup", {"headers": HEADERS, "data": "{not json", "content_type": "application/json"}, 400,
     "malformed_json"),
    ("POST", "/Lookup", {"headers": HEADERS, "json": [1]}, 400, "invalid_input"),
    ("GET", "/Lookup?PhoneNumber=41215522000", {}, 401, "unauthorized"),
    ("POST", "/Lookup", {"headers": HEADERS, "data": _BIG, "content_type": "application/json"}, 413, "body_too_large"),
    ("POST", "/CallFlow", {"headers": HEADERS, "json": {"inputs": _CALL}}, 200, None),
    ("POST", "/CallFlow", {"headers": HEADERS, "json": {"inputs": {**_CALL, "startedTime": "yesterday"}}}, 400,
     "invalid_time"),
    ("POST", "/CallFlow", {"headers": HEADERS, "json": {"inputs": {"direction": "incoming"}}}, 400, "invalid_input"),
    ("POST", "/CallFlow", {"headers": HEADERS, "json": {"inputs": {**_CALL, "contactCrmId": "directory:nobody"}}},
     404, "unknown_contact"),
    ("POST", "/CallFlow", {"json": {"inputs": _CALL}}, 401, "unauthorized"),
    ("GET", "/healthz", {}, 200, None),
    ("GET", "/metrics", {"headers": {"Authorization": f"Bearer {METRICS_TOKEN}"}}, 200, None),
    ("GET", "/metrics", {"headers": HEADERS}, 401, "unauthorized"),
    ("GET", "/openapi.json", {}, 200, None),
]


@pytest.fixture
def validating_client(make_app, load_contacts):
    load_contacts(DEMO_CSV)
    app = make_app(LOOKUP_METRICS_TOKEN=METRICS_TOKEN)
    return app.test_client(), OpenAPI.from_dict(_document(app))


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "code"), REQUESTS,
                         ids=[f"{r[0]} {r[1]} {r[3]}" for r in REQUESTS])
def test_real_responses_match_the_document(validating_client, method, path, kwargs, status, code):
    client, openapi = validating_client
    response = client.open(EnvironBuilder(path, method=method, **kwargs))
    assert response.status_code == status, response.get_data(as_text=True)
    if code is not None:
        assert response.get_json()["error"] == code
    # the app has read the body of response.request; the validator gets the same request anew
    request = WerkzeugOpenAPIRequest(EnvironBuilder(path, method=method, **kwargs).get_request())
    openapi.validate_response(request, WerkzeugOpenAPIResponse(response))
    if status == 200:  # a request the service accepted is one the document allows
        openapi.validate_request(request)


def test_metrics_disabled_matches_the_document(make_app):
    app = make_app()
    response = app.test_client().get("/metrics", headers=HEADERS)
    assert response.status_code == 404
    OpenAPI.from_dict(_document(app)).validate_response(WerkzeugOpenAPIRequest(response.request),
                                                        WerkzeugOpenAPIResponse(response))


def test_the_lookup_answer_with_contacts_is_checked_for_real(validating_client):
    """The validator is not vacuous: the found contact is in the answer, and a changed one is refused."""
    from openapi_core.validation.response.exceptions import InvalidData

    client, openapi = validating_client
    response = client.get("/Lookup?PhoneNumber=41215522000", headers=HEADERS)
    answer = response.get_json()
    assert [c["name"] for c in answer] == ["Alexa Holiday"]
    del answer[0]["crmLogo"]
    response.set_data(json.dumps(answer))
    with pytest.raises(InvalidData):
        openapi.validate_response(WerkzeugOpenAPIRequest(response.request), WerkzeugOpenAPIResponse(response))


def test_other_methods_on_the_document_are_json_405(make_app):
    response = make_app().test_client().post("/openapi.json")
    assert response.status_code == 405 and response.get_json()["error"] == "method_not_allowed"
    assert response.headers["Allow"] == "GET"


def test_the_spec_follows_the_app_it_is_built_for(make_app):
    app = make_app()
    settings = app.extensions["lookup"].settings
    assert build_spec(app, settings) == _document(app)


# --- schemathesis against a live gunicorn --------------------------------------------------------------


@pytest.fixture
def live_service(tmp_path):
    from crm_backends.contact_store import ContactStore
    from crm_backends.directory_import import import_file

    csv = tmp_path / "contacts.csv"
    csv.write_text((ROOT / "config" / "demo-contacts.csv").read_text())
    store = ContactStore(str(tmp_path / "directory.sqlite3"), "CH")
    try:
        import_file(store, str(csv))
    finally:
        store.close()
    port = free_port()
    env = {**os.environ, "PORT": str(port), "WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "4",
           "LOOKUP_TOKENS": TOKEN, "LOOKUP_METRICS_TOKEN": METRICS_TOKEN,
           "LOOKUP_DIRECTORY": str(tmp_path / "directory.sqlite3"), "LOOKUP_STATE_DB": str(tmp_path / "state.sqlite3"),
           "LOOKUP_INSTANCE_DIR": str(tmp_path / "instance"), "LOOKUP_ACCESS_LOG": "0"}
    service = start_service(procfile_command(port), port, env, ROOT, tmp_path / "gunicorn.log")
    yield service
    service.stop()


def test_schemathesis_finds_no_failure_on_a_live_service(live_service, tmp_path):
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f'headers = {{ "X-Execution-Token" = "{TOKEN}" }}\n'
        '[[operations]]\ninclude-path = "/metrics"\n'
        f'headers = {{ "X-Execution-Token" = "{METRICS_TOKEN}" }}\n'
    )
    command = [
        str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(config), "run",
        f"{live_service.url}/openapi.json",
        "--checks", "not_a_server_error,response_schema_conformance,content_type_conformance",
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", str(FUZZ_EXAMPLES), "--seed", "20261201", "--workers", "2",
        "--generation-database", "none", "--request-timeout", "10", "--no-color",
    ]
    try:
        run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=FUZZ_LIMIT_S,
                             env={**os.environ, "SCHEMATHESIS_HOOKS": ""})
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"schemathesis did not finish within {FUZZ_LIMIT_S}s:\n{exc.stdout}") from None
    output = run.stdout + run.stderr
    assert run.returncode == 0, output + "\n--- service log ---\n" + live_service.output()
    assert "Operations:" in output and "generated" in output
    assert "Traceback" not in live_service.output(), live_service.output()


def test_readiness_matches_the_document(make_app):
    app = make_app()
    response = app.test_client().get("/readyz")
    assert response.status_code in (200, 503)
    OpenAPI.from_dict(_document(app)).validate_response(WerkzeugOpenAPIRequest(response.request),
                                                        WerkzeugOpenAPIResponse(response))
