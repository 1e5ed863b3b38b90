"""Logs: numbers and secrets never appear, whatever writes the line; addresses and dates stay
readable; LOG_FORMAT=json gives one object per line for the application and the access log."""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import urllib.parse

import pytest

from lookup_service.logs import JsonFormatter, RedactingFilter, mask_numbers, request_id_from
from tests.conftest import HEADERS
from tests.fakes.rest_api import FakeRestApi, Reply, Request
from tests.live_gunicorn import LiveGunicorn

NUMBER = "+41798615237"


@pytest.mark.parametrize(("text", "masked"), [
    ("GET /Lookup/41215522000 HTTP/1.1", "GET /Lookup/********000 HTTP/1.1"),
    ("/api/search?phone=%2B41798615237", "/api/search?phone=%2B********237"),
    ("phone=%2B41+79+861+52+37&x=1", "phone=%2B********237&x=1"),
    ("+41%2079%20861%2052%2037", "+********237"),
    ("call from +41 79 861 52 37.", "call from +********237."),
    ("(079) 861-52-37", "(*******237"),
    ("contact id41798615237x", "contact id********237x"),
    ("tel:0041798615237", "tel:**********237"),
])
def test_numbers_are_masked_in_every_spelling(text, masked):
    assert mask_numbers(text) == masked


@pytest.mark.parametrize("text", [
    "connected to 127.0.0.1:5432 in 0.004512 s",
    "[2026-12-01 04:35:58 +0000] [12576] [INFO] Booting worker",
    "2026-12-01T04:35:58.123Z sync took 1234 ms, 52341 contacts, port 54321",
    "Starting new HTTP connection (1): 10.20.30.40:8080",
    "gunicorn 23.0.0 on Python 3.11.7",
    "answered 200 in 12.5ms",
    "Listening at: http://0.0.0.0:44410 (28410)",
    '127.0.0.1 - - [01/Dec/2026 04:35:58] "GET /healthz HTTP/1.1" 200 -',
    "Date: Tue, 01 Dec 2026 04:42:18 GMT",
    'http://127.0.0.1:37119 "GET /api/search?phone=x HTTP/1.1" 200 100',
])
def test_addresses_dates_ports_and_durations_stay_readable(text):
    assert mask_numbers(text) == text


def test_secrets_in_query_strings_are_hidden():
    assert mask_numbers("GET /api?api_key=abcdef123&phone=1") == "GET /api?api_key=***&phone=1"
    assert mask_numbers("GET /api?access_token=xyz.789") == "GET /api?access_token=***"


def _record(logger: str, message: str, *args, **extra) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter(["the-secret-token"]))
    log = logging.getLogger(logger)
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.DEBUG)
    try:
        log.info(message, *args, extra=extra)
    finally:
        log.removeHandler(handler)
        log.propagate = True
    return stream.getvalue()


def test_json_lines_redact_fields_by_name_and_mask_the_message():
    line = _record("lookup_service.test", "lookup of %s with %s", "41798615237", "the-secret-token",
                   phone="+41 79 861 52 37", token="the-secret-token", status=200, duration_ms=1.5)
    entry = json.loads(line)
    assert entry["message"] == "lookup of ********237 with ***"
    assert entry["phone"] == "********237"
    assert entry["token"] == "***"
    assert entry["status"] == 200 and entry["duration_ms"] == 1.5
    assert entry["level"] == "INFO" and entry["logger"] == "lookup_service.test"
    assert entry["timestamp"].endswith("Z")
    assert line.count("\n") == 1


def test_nested_fields_are_redacted_too():
    line = _record("lookup_service.test", "call", payload={"caller": {"number": 41798615237, "name": "Anna"},
                                                           "Authorization": "Bearer the-secret-token",
                                                           "notes": ["from +41 79 861 52 37"], "count": 3})
    entry = json.loads(line)
    assert entry["payload"] == {"caller": {"number": "********237", "name": "Anna"}, "Authorization": "***",
                                "notes": ["from +********237"], "count": 3}


def test_a_traceback_is_masked_too():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter([]))
    log = logging.getLogger("lookup_service.test_tb")
    log.addHandler(handler)
    log.propagate = False
    try:
        try:
            raise ValueError("no contact for 41798615237")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
        log.propagate = True
    entry = json.loads(stream.getvalue())
    assert "ValueError: no contact for ********237" in entry["exception"]
    assert "41798615237" not in stream.getvalue()


def test_request_ids_are_taken_when_sane_and_returned(client):
    response = client.get("/healthz", headers={"X-Request-ID": "router-abc-123"})
    assert response.headers["X-Request-ID"] == "router-abc-123"
    uuid_like = "0b9d5e3a-1234-5678-9012-446655440000"
    assert client.get("/healthz", headers={"X-Request-ID": uuid_like}).headers["X-Request-ID"] == uuid_like
    for bad in ("41798615237", "a b", "x" * 300, "<script>"):
        answered = client.get("/healthz", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
        assert answered != bad and len(answered) == 36
    first = client.get("/Lookup?PhoneNumber=41215522000", headers=HEADERS).headers["X-Request-ID"]
    assert first != client.get("/healthz").headers["X-Request-ID"]
    assert request_id_from(None) != request_id_from(None)


def test_log_format_json_is_set_up_by_the_app(make_app):
    make_app(LOG_FORMAT="json")
    handler = next(h for h in logging.getLogger().handlers if getattr(h, "_lookup_service", False))
    assert isinstance(handler.formatter, JsonFormatter)
    make_app()
    assert not isinstance(handler.formatter, JsonFormatter)


def test_an_unknown_log_format_is_a_configuration_error():
    from config.settings import ConfigError, load_settings

    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        load_settings({"LOG_FORMAT": "xml", "LOOKUP_TOKENS": "t0ken-abcdef"})


# --- a real run at DEBUG: grep the logs ---------------------------------------------------------------

TENANT_TOKEN = "tenant-token-Xq81Z"
ERP_TOKEN = "erp-bearer-Lm52Q"
ERP_KEY = "erp-key-Pz93K"
# the number in each spelling a line could carry it in
FORMS = ["+41798615237", "41798615237", "0041798615237", "%2B41798615237", "798615237", "0798615237",
         "+41 79 861 52 37", "079 861 52 37", "41+79+861+52+37", "%2B41+79+861+52+37", "079/861.52.37"]


def _erp(request: Request) -> Reply:
    if request.method == "POST":
        return Reply(201, {"data": {"id": "call-9", "web_url": "https://erp.example/calls/9"}})
    return Reply(200, {"data": [{"id": 7, "first": "Anna", "last": "Muster",
                                 "phones": [{"number": "+41 79 861 52 37"}]}]})


CONFIG = """
default_region = "CH"

[[tenant]]
name = "muster"
tokens = ["{token}"]

[[tenant.backend]]
name = "erp"
type = "rest"
workflows = ["CallFlow"]
lookup_url = "{url}/api/search?api_key={key}&phone={{e164}}"
headers = {{ Authorization = "Bearer {bearer}" }}
results = "data"

[tenant.backend.fields]
id = "id"
first_name = "first"
last_name = "last"
phones = "phones[].number"

[tenant.backend.call_log]
request_url = "{url}/api/calls?api_key={key}&number={{remote_number}}"
id = "data.id"
url = "data.web_url"
body = {{ number = "{{remote_number}}", contact = "{{contact_id}}" }}
"""


@pytest.fixture(scope="module")
def erp():
    api = FakeRestApi().start()
    api.route("GET", "/api/search", _erp)
    api.route("POST", "/api/calls", _erp)
    yield api
    api.stop()


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_debug_run_logs_no_number_and_no_token(tmp_path, erp, log_format):
    config = tmp_path / "lookup.toml"
    config.write_text(CONFIG.format(token=TENANT_TOKEN, url=erp.url, key=ERP_KEY, bearer=ERP_TOKEN))
    server = LiveGunicorn(tmp_path, {"LOOKUP_CONFIG": str(config), "LOG_LEVEL": "DEBUG", "LOG_FORMAT": log_format,
                                     "LOOKUP_CLIENT_TIMEOUT_S": "2"}).start()
    auth = {"X-Execution-Token": TENANT_TOKEN}
    try:
        for form in ("41798615237", "+41798615237", "+41 79 861 52 37", "0798615237"):
            path = "/Lookup?PhoneNumber=" + urllib.parse.quote(form)
            status, headers, body = server.request("GET", path, headers=auth)
            assert status == 200 and json.loads(body)[0]["name"] == "Anna Muster", body
            assert headers["x-request-id"]
        status, _, body = server.request("POST", "/Lookup", json.dumps({"inputs": {"phoneNumber": NUMBER}}).encode(),
                                         {**auth, "Content-Type": "application/json"})
        assert status == 200
        call = {"inputs": {"contactCrmId": "erp:7", "originatorNumber": NUMBER, "destinationNumber": "+41215522000",
                           "direction": "incoming", "startedTime": "2026-12-01T04:35:58Z",
                           "endedTime": "2026-12-01T04:37:03Z"}}
        status, _, body = server.request("POST", "/CallFlow", json.dumps(call).encode(),
                                         {**auth, "Content-Type": "application/json"})
        assert status == 200 and json.loads(body)["id"] == "call-9", body
        assert any(r.method == "POST" for r in erp.requests)  # the REST backend was really called
        status, _, _ = server.request("GET", "/Lookup?PhoneNumber=41798615237", headers={"X-Execution-Token": "wrong"})
        assert status == 401
        token = TENANT_TOKEN.encode()
        for raw in (
            b"GET /Lookup?PhoneNumber=%2B41798615237 HTTP/9.9\r\nX-Execution-Token: " + token + b"\r\n\r\n",
            b"GET /Lookup?PhoneNumber=+41798615237\xff HTTP/1.1\r\n\r\n",
            b"GET /Lookup?PhoneNumber=41798615237&pad=" + b"1" * 5000 + b" HTTP/1.1\r\n\r\n",
            b"GET /Lookup/41798615237 HTTP/1.1\r\nX-Execution-Token: " + token + b"\r\nBad Header: 1\r\n\r\n",
            b"GET /Lookup HTTP/1.1\r\nX-Execution-Token: " + token + b"\x00\r\n\r\n",
            b"POST /CallFlow HTTP/1.1\r\nX-Execution-Token: " + token + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"zz41798615237\r\n",
            b"GET /41798615237 HTTP/1.1\r\nX-Execution-Token: " + token + b"\r\n\r\n",
        ):
            answer = server.raw(raw)
            assert answer.startswith(b"HTTP/1.1 4"), answer
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as slow:  # cut off by the timeout
            slow.sendall(b"GET /Lookup?PhoneNumber=41798615237 HTTP/1.1\r\nX-Execution-Token: " + token + b"\r\n")
            assert slow.recv(4096).startswith(b"HTTP/1.1 408 ")
    finally:
        server.stop()
    log = server.log()
    assert "GET /Lookup" in log and "invalid request" in log and "urllib3" in log, log[-3000:]
    assert "127.0.0.1" in log  # addresses stay readable
    for form in FORMS:
        assert form not in log, f"{form!r} found in the log"
    for secret in (TENANT_TOKEN, ERP_TOKEN, ERP_KEY):
        assert secret not in log, f"{secret!r} found in the log"
    if log_format == "text":  # the access log's status, size and duration are not taken for a number
        assert re.search(r'127\.0\.0\.1 "GET /Lookup" 200 \d+ \d+ms', log), log[-2000:]
    if log_format == "json":
        lines = [line for line in log.splitlines() if line.strip()]
        entries = [json.loads(line) for line in lines if line.startswith("{")]
        access = [e for e in entries if e["logger"] == "gunicorn.access"]
        assert access and all({"request_id", "path", "status", "duration_ms"} <= set(e) for e in access)
        assert any(e.get("tenant") == "muster" and e["status"] == 200 for e in access)
        app_lines = [e for e in entries if e["logger"].startswith(("lookup_service", "crm_backends", "urllib3"))]
        assert app_lines and all({"timestamp", "level", "message"} <= set(e) for e in app_lines)
        # the lines gunicorn's master writes before any app is loaded are JSON too
        assert sum(1 for line in lines if not line.startswith("{")) == 0, [x for x in lines if x[0] != "{"][:5]
