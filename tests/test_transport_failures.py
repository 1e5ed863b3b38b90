"""Every backend against every transport failure: the lookup still answers 200 with what the other
backends found, within the deadline, and the broken backend reports ``BackendUnavailable``.

The table is (backend type x failure). Each case runs a tenant whose first backend is the embedded
directory (one contact with the called number) and whose second backend, of the type under test,
points at a misbehaving server on 127.0.0.1 (tests/servers/misbehaving.py):

- ``refuse``: nothing listens on the port;
- ``hang``: the server accepts and reads, and never answers;
- ``reset``: the server reads a little and resets the connection (RST);
- ``garbage``: the server answers bytes of no protocol, then closes;
- ``http_junk``: a web server answers with a well-formed HTTP response whose body is junk (for
  HTTP backends: the body the API's parser chokes on; for SQL and LDAP: a wrong port);
- ``tls``: the client expects TLS (https://, ldaps://, PostgreSQL sslmode=require) and the server
  speaks plain text, so the TLS handshake fails.

Backends that log calls are also driven through ``POST /CallFlow`` with a contact routed to the
broken backend: the call is kept in the outbox and answered ``200`` with its own key, never a crash.

HTTP-level faults (refusals by status, slow and lost answers, garbage bodies) are injected by a proxy
in front of working fakes in tests/test_faults.py.
"""

from __future__ import annotations

import importlib
import json
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from flask import Flask
from flask.testing import FlaskClient

from crm_backends.base import BACKEND_TYPES, Backend, BackendSpec, load_options
from crm_backends.ldap import LdapBackend
from crm_backends.sql import SqlBackend
from lookup_core.errors import BackendUnavailable, CredentialsRejected, RateLimited
from lookup_core.phone import parse_number
from lookup_service.service import Service
from tests.servers.misbehaving import GARBAGE, PLAIN_HTTP_400, MisbehavingServer, http_response

TOKEN = "acme-token-1234"
HEADERS = {"X-Execution-Token": TOKEN}
NUMBER = "41215522000"
DEADLINE_MS = 1000
TIMEOUT_S = 0.3  # the broken backend's own network timeout, well inside the deadline
SLACK_S = 0.2  # the lookup answers by the deadline plus this

DIRECTORY_CSV = """id;name;company;phone
alexa;Alexa Holiday;White Cross Co;+41 21 552 20 00
"""

try:  # written in parallel; part of the table once it imports and registers itself
    importlib.import_module("crm_backends.carddav")
except Exception:  # noqa: BLE001 - absent or unfinished: its cases are skipped
    pass
HAVE_CARDDAV = "carddav" in BACKEND_TYPES


# --- the broken backend's [[tenant.backend]] table, per type -----------------------------------------
@dataclass(frozen=True)
class Target:
    """Where the broken backend points, and whether it must speak TLS there."""

    port: int
    tls: bool
    call_log: bool  # configure call logging (CallFlow) where the type needs it configured

    @property
    def http(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"


def sql_table(t: Target) -> str:
    ssl = "?sslmode=require" if t.tls else ""
    call_log = (
        'call_log_query = "INSERT INTO calls (contact_id, direction) VALUES (:contact_id, :direction)"\n'
        if t.call_log
        else ""
    )
    return f"""
type = "sql"
url = "postgresql+psycopg://lookup@127.0.0.1:{t.port}/crm{ssl}"
password = "db-secret"
timeout = {TIMEOUT_S}
query = "SELECT id, name, phone FROM customers WHERE phone IN (:e164, :national)"
{call_log}
[tenant.backend.fields]
id = "id"
name = "name"
phones = "phone"
"""


def rest_table(t: Target) -> str:
    call_log = (
        f"""
[tenant.backend.call_log]
request_url = "{t.http}/api/contacts/{{contact_id}}/calls"
id = "id"
"""
        if t.call_log
        else ""
    )
    return f"""
type = "rest"
lookup_url = "{t.http}/api/contacts?phone={{e164}}"
headers = {{ Authorization = "Bearer erp-secret" }}
timeout = {TIMEOUT_S}

[tenant.backend.fields]
id = "id"
name = "name"
phones = "[phone, mobile]"
{call_log}"""


def ldap_table(t: Target) -> str:
    scheme = "ldaps" if t.tls else "ldap"
    return f"""
type = "ldap"
url = "{scheme}://127.0.0.1:{t.port}"
bind_dn = "cn=lookup,dc=example,dc=org"
password = "ldap-secret"
base_dn = "ou=people,dc=example,dc=org"
timeout = {TIMEOUT_S}
"""


def carddav_table(t: Target) -> str:
    return f"""
type = "carddav"
mode = "live"  # the default is mirror, answered from the local index
url = "{t.http}/dav/addressbooks/users/alice/contacts/"
username = "alice"
password = "dav-secret"
timeout = {TIMEOUT_S}
"""


def odoo_table(t: Target) -> str:
    return f"""
type = "odoo"
url = "{t.http}"
database = "acme"
username = "phone-lookup"
api_key = "odoo-secret"
timeout = {TIMEOUT_S}
write_timeout = {TIMEOUT_S}
"""


def pipedrive_table(t: Target) -> str:
    return f"""
type = "pipedrive"
api_token = "pipedrive-secret"
company_domain = "acme"
base_url = "{t.http}"
timeout = {TIMEOUT_S}
"""


def hubspot_table(t: Target) -> str:
    return f"""
type = "hubspot"
access_token = "pat-eu1-0000-secret"
base_url = "{t.http}"
timeout = {TIMEOUT_S}
"""


@dataclass(frozen=True)
class Kind:
    table: Callable[[Target], str]
    http: bool  # speaks HTTP: the "http_junk" answer reaches the API parser
    junk_status: str = "200 OK"
    junk_type: str = "application/json"
    # Longest a failing call may take when the server never answers. The sql driver cannot wait
    # less than 2 s to connect (libpq's minimum connect_timeout, see docs/backends/sql.md).
    hang_s: float = TIMEOUT_S + 0.5
    # Same for a CallFlow request (HubSpot allows call creation at least 5 s, see its docs).
    call_hang_s: float = TIMEOUT_S + 0.5


KINDS: dict[str, Kind] = {
    "sql": Kind(sql_table, http=False, hang_s=2.6, call_hang_s=2.6),
    "rest": Kind(rest_table, http=True),
    "ldap": Kind(ldap_table, http=False),
    "carddav": Kind(carddav_table, http=True, junk_status="207 Multi-Status", junk_type="application/xml"),
    "odoo": Kind(odoo_table, http=True),
    "pipedrive": Kind(pipedrive_table, http=True),
    "hubspot": Kind(hubspot_table, http=True, call_hang_s=5.6),
}
CALL_LOGGING = ("sql", "rest", "odoo", "pipedrive", "hubspot")
FAILURES = ("refuse", "hang", "reset", "garbage", "http_junk", "tls")


def misbehaving_server(failure: str, kind: str) -> MisbehavingServer:
    if failure in ("refuse", "hang", "reset"):
        return MisbehavingServer(failure)
    if failure == "garbage":
        return MisbehavingServer("script", [GARBAGE])
    if failure == "http_junk":
        spec = KINDS[kind]
        body = b"<html><body>Service temporarily unavailable</body></html>\n" + GARBAGE[:64]
        return MisbehavingServer("script", [http_response(spec.junk_status, spec.junk_type, body)])
    if failure == "tls":
        # PostgreSQL asks for TLS with an SSLRequest first: say yes ('S'), then answer the
        # ClientHello in plain text; every other client starts with the ClientHello.
        replies = [b"S", PLAIN_HTTP_400] if kind == "sql" else [PLAIN_HTTP_400]
        return MisbehavingServer("script", replies)
    raise AssertionError(failure)


def case_params(kinds: tuple[str, ...]) -> list:
    params = []
    for kind in kinds:
        marks = []
        if kind == "carddav" and not HAVE_CARDDAV:
            marks.append(pytest.mark.skip(reason="crm_backends.carddav is not available (yet)"))
        for failure in FAILURES:
            params.append(pytest.param(kind, failure, id=f"{kind}-{failure}", marks=marks))
    return params


# --- fixtures --------------------------------------------------------------------------------------------
@dataclass
class Case:
    kind: str
    failure: str
    server: MisbehavingServer
    app: Flask

    @property
    def client(self) -> FlaskClient:
        return self.app.test_client()

    @property
    def service(self) -> Service:
        return self.app.extensions["lookup"]

    @property
    def broken(self) -> Backend:
        return self.service.tenants[0].by_name["broken"].backend


@pytest.fixture
def broken_tenant(tmp_path, make_app, load_contacts, directory_path) -> Iterator[Callable[..., Case]]:
    servers: list[MisbehavingServer] = []

    def build(kind: str, failure: str, call_log: bool = False) -> Case:
        load_contacts(DIRECTORY_CSV)
        server = misbehaving_server(failure, kind).start()
        servers.append(server)
        target = Target(port=server.port, tls=failure == "tls", call_log=call_log)
        config = f"""
deadline_ms = {DEADLINE_MS}
[[tenant]]
name = "acme"
tokens = ["{TOKEN}"]

[[tenant.backend]]
name = "directory"
type = "directory"
path = {json.dumps(directory_path)}

[[tenant.backend]]
name = "broken"
{KINDS[kind].table(target)}
"""
        path = tmp_path / "lookup.toml"
        path.write_text(config)
        return Case(kind, failure, server, make_app(LOOKUP_CONFIG=str(path)))

    yield build
    for server in servers:
        server.stop()


def error_count(case: Case, kind: str) -> float:
    value = case.service.metrics.registry.get_sample_value(
        "lookup_backend_errors_total", {"tenant": "acme", "backend": "broken", "kind": kind}
    )
    return value or 0.0


def wait_for_error(case: Case, limit_s: float) -> None:
    """The engine's worker may still be failing after the answer left (a hang outlasting the
    deadline); wait for it to count its error, bounded."""
    stop = time.monotonic() + limit_s
    while time.monotonic() < stop:
        if any(error_count(case, k) for k in ("unavailable", "credentials", "rate_limited", "bug")):
            return
        time.sleep(0.02)


def assert_transport_error(exc: BackendUnavailable) -> None:
    # a transport failure is neither a credentials problem nor a rate limit
    assert not isinstance(exc, CredentialsRejected | RateLimited), repr(exc)
    assert str(exc), "the error must say what failed"


# --- the table -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "failure"), case_params(tuple(KINDS)))
def test_lookup_answers_with_the_other_backends(broken_tenant, kind: str, failure: str) -> None:
    case = broken_tenant(kind, failure)
    started = time.monotonic()
    response = case.client.get(f"/Lookup?PhoneNumber={NUMBER}", headers=HEADERS)
    elapsed = time.monotonic() - started

    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    assert [(c["id"], c["name"], c["company"], c["crmName"]) for c in answer] == [
        ("directory:alexa", "Alexa Holiday", "White Cross Co", "Directory")
    ]
    assert elapsed < DEADLINE_MS / 1000 + SLACK_S, f"answered after {elapsed:.2f}s"
    if failure != "refuse":
        assert case.server.accepted >= 1, "the backend never reached the misbehaving server"

    # The engine saw the failure as the backend being unavailable, not as a bug in the backend.
    wait_for_error(case, KINDS[kind].hang_s + 1.0)
    assert error_count(case, "bug") == 0, "the backend leaked a raw exception (see the log)"
    assert error_count(case, "unavailable") == 1

    # And directly: BackendUnavailable, nothing else, within the backend's timeout.
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as raised:
        case.broken.lookup(parse_number(NUMBER, "CH"), 5)
    elapsed = time.monotonic() - started
    assert_transport_error(raised.value)
    limit = KINDS[kind].hang_s if failure == "hang" else TIMEOUT_S + 0.5
    assert elapsed < limit, f"{kind} took {elapsed:.2f}s to fail on {failure!r} (timeout = {TIMEOUT_S}s)"


@pytest.mark.parametrize(("kind", "failure"), case_params(CALL_LOGGING))
def test_callflow_to_the_broken_backend_is_kept_and_answered(broken_tenant, kind: str, failure: str) -> None:
    case = broken_tenant(kind, failure, call_log=True)
    assert "CallFlow" in case.service.tenants[0].by_name["broken"].workflows
    inputs = {
        "contactCrmId": "broken:42",
        "direction": "incoming",
        "originatorNumber": NUMBER,
        "destinationNumber": "41445551234",
        "startedTime": "1795251600",
        "answeredTime": "1795251605",
        "endedTime": "1795251725",
    }
    started = time.monotonic()
    response = case.client.post("/CallFlow", json={"inputs": inputs}, headers=HEADERS)
    elapsed = time.monotonic() - started

    if (kind, failure) == ("rest", "http_junk"):
        # Not a failure for the generic REST backend: the API answered 2xx, so the call was created;
        # only its id is unreadable (crm_backends/rest.py log_call). Failing would make the connector
        # post it again.
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_json() == {"id": None, "url": ""}
        return
    # kept in the outbox and answered with the call's own key; delivered once the CRM is back
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert len(body["id"]) == 64 and body["url"] == "", body
    item = case.service.ledger.get(body["id"])
    assert item is not None and item.state == "pending" and item.backend == "broken"
    limit = min(KINDS[kind].call_hang_s, case.service.outbox.deadline_s) if failure == "hang" else TIMEOUT_S + 0.5
    assert elapsed < limit + 0.2, f"{kind} CallFlow took {elapsed:.2f}s to answer on {failure!r}"
    # the same call posted again: the same answer, still one item
    if failure != "hang":
        again = case.client.post("/CallFlow", json={"inputs": inputs}, headers=HEADERS)
        assert again.status_code == 200 and again.get_json() == body


# --- LDAP: a server that binds, then answers the search with something else than LDAP ---------------------
def ldap_answer(op: bytes) -> Callable[[bytes], bytes]:
    """A reply to an LDAP request: an LDAPMessage with the request's message id and ``op``."""

    def reply(request: bytes) -> bytes:
        start = 2 if request[1] < 0x80 else 2 + (request[1] & 0x7F)  # after the SEQUENCE header
        assert request[start] == 0x02, "an LDAPMessage starts with its INTEGER message id"
        message_id = request[start : start + 2 + request[start + 1]]
        body = message_id + op
        return bytes([0x30, len(body)]) + body

    return reply


BIND_SUCCESS = bytes.fromhex("61070a010004000400")  # BindResponse: success, no DN, no message


@pytest.mark.parametrize(
    "search_answer",
    [
        pytest.param(ldap_answer(bytes.fromhex("6400")), id="empty-search-entry"),
        pytest.param(ldap_answer(bytes.fromhex("7f00")), id="unknown-operation"),
        pytest.param(PLAIN_HTTP_400, id="http"),
        pytest.param(GARBAGE, id="garbage"),
    ],
)
def test_ldap_search_answered_with_junk_after_a_good_bind(tmp_path, search_answer) -> None:
    with MisbehavingServer("script", [ldap_answer(BIND_SUCCESS), search_answer]) as server:
        table = {
            "name": "staff", "type": "ldap", "url": f"ldap://127.0.0.1:{server.port}",
            "base_dn": "ou=people,dc=example,dc=org", "bind_dn": "cn=lookup,dc=example,dc=org",
            "password": "ldap-secret", "timeout": TIMEOUT_S,
        }
        options = load_options(LdapBackend, table, "tenant 't', backend 'staff'")
        spec = BackendSpec(tenant="t", name="staff", options=options, instance_dir=str(tmp_path))
        backend = LdapBackend(spec)
        try:
            started = time.monotonic()
            with pytest.raises(BackendUnavailable) as raised:
                backend.lookup(parse_number(NUMBER, "CH"), 5)
            assert time.monotonic() - started < TIMEOUT_S + 0.5
            assert_transport_error(raised.value)
            assert server.accepted >= 1
        finally:
            backend.close()


# --- PostgreSQL: a server that completes the handshake, then never answers ----------------------------------
def pg_message(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("!i", len(payload) + 4) + payload


PG_READY = (
    pg_message(b"R", struct.pack("!i", 0))  # AuthenticationOk
    + b"".join(
        pg_message(b"S", f"{name}\0{value}\0".encode())  # ParameterStatus
        for name, value in (("server_version", "15.4"), ("server_encoding", "UTF8"),
                            ("client_encoding", "UTF8"), ("standard_conforming_strings", "on"),
                            ("DateStyle", "ISO, MDY"), ("integer_datetimes", "on"))
    )
    + pg_message(b"K", struct.pack("!ii", 1, 2))  # BackendKeyData
    + pg_message(b"Z", b"I")  # ReadyForQuery
)


def test_sql_server_silent_after_the_handshake_is_unavailable_within_the_timeout(tmp_path) -> None:
    outcome: dict[str, object] = {}
    # SSLRequest -> "N" (no TLS), startup -> authenticated and ready; the first query gets no answer
    with MisbehavingServer("script", [b"N", PG_READY], hang_after=True) as server:
        table = {
            "name": "erp", "type": "sql", "url": f"postgresql+psycopg://lookup@127.0.0.1:{server.port}/crm",
            "password": "db-secret", "timeout": TIMEOUT_S,
            "query": "SELECT id, name, phone FROM customers WHERE phone = :e164",
            "fields": {"id": "id", "name": "name", "phones": "phone"},
        }
        options = load_options(SqlBackend, table, "tenant 't', backend 'erp'")
        backend = SqlBackend(BackendSpec(tenant="t", name="erp", options=options, instance_dir=str(tmp_path)))

        def run() -> None:
            try:
                backend.lookup(parse_number(NUMBER, "CH"), 5)
                outcome["result"] = "answered"
            except Exception as exc:  # noqa: BLE001 - inspected below
                outcome["result"] = exc

        worker = threading.Thread(target=run, name="sql-silent-server", daemon=True)
        worker.start()
        worker.join(3.0)  # the libpq connect minimum (2 s) and then some
        hung = worker.is_alive()
    worker.join(5)  # the server has closed its sockets: the stuck call ends now
    backend.close()
    assert not hung, f"the lookup still waited 3 s after its {TIMEOUT_S} s timeout"
    assert isinstance(outcome.get("result"), BackendUnavailable), outcome
