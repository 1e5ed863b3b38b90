"""No request can break a worker: oversized numbers, deep or invalid JSON, invalid UTF-8, broken
bodies, requests gunicorn's own parser refuses, and slow clients. The app through Flask's test
client, and a real gunicorn on 127.0.0.1 (tests/live_gunicorn.py) where the HTTP server matters."""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time

import pytest

from tests.conftest import HEADERS, TOKEN
from tests.live_gunicorn import LiveGunicorn

NUMBER = "41798615237"


def _error(response) -> dict:
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error", "message"}
    return body


# --- the app itself ---------------------------------------------------------------------------------

def test_a_phone_number_longer_than_64_characters_is_refused_before_parsing(client, monkeypatch):
    import lookup_service.routes as routes

    def no_parsing(*_args, **_kwargs):
        raise AssertionError("the phone parser must not see an oversized number")

    monkeypatch.setattr(routes, "parse_number", no_parsing)
    spaces = {"inputs": {"phoneNumber": " " * 65_000}}  # the body stays within the 64 KiB limit
    response = client.post("/Lookup", json=spaces, headers=HEADERS)
    assert response.status_code == 400
    assert _error(response)["error"] == "invalid_number"
    assert "64 characters" in _error(response)["message"]
    response = client.get("/Lookup?PhoneNumber=" + "1" * 65, headers=HEADERS)
    assert response.status_code == 400 and _error(response)["error"] == "invalid_number"


def test_a_64_kib_body_of_spaces_as_the_number_answers_400(client):
    body = b'{"inputs":{"phoneNumber":"' + b" " * (65536 - 40) + b'"}}'
    response = client.post("/Lookup", data=body, headers={**HEADERS, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert _error(response)["error"] == "invalid_number"


@pytest.mark.parametrize("depth", [10_000, 100])
@pytest.mark.parametrize("path", ["/Lookup", "/CallFlow"])
def test_deeply_nested_json_is_a_400(client, depth, path):
    body = "[" * depth + "]" * depth
    response = client.post(path, data=body, headers={**HEADERS, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert _error(response)["error"] == "malformed_json"
    nested = '{"inputs": {"contactCrmId": "directory:alexa", "x": ' + "[" * depth + "]" * depth + "}}"
    response = client.post(path, data=nested, headers={**HEADERS, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert "deeper than" in _error(response)["message"]


CALL = {"contactCrmId": "directory:alexa", "originatorNumber": "+41215522000", "direction": "incoming",
        "startedTime": "2026-12-01T04:35:58Z"}


@pytest.mark.parametrize("broken", [
    '"contactCrmId": "directory:alexa\\ud800"',  # the id SQLite would fail to store
    '"originatorName": "x\\ud800y"',
    '"direction": "\\udfff"',
    '"unknownField": ["a", {"b": "\\udbff"}]',
    '"\\ud800key": 1',
])
def test_a_lone_surrogate_anywhere_is_a_400_before_anything_is_stored(client, broken):
    fields = {**CALL}
    name = broken.split('"')[1]
    fields.pop(name, None)
    members = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in fields.items()] + [broken]
    body = '{"inputs": {' + ", ".join(members) + "}}"
    response = client.post("/CallFlow", data=body, headers={**HEADERS, "Content-Type": "application/json"})
    assert response.status_code == 400, response.get_data(as_text=True)
    assert _error(response)["error"] == "malformed_json"
    assert "surrogate" in _error(response)["message"]
    # the same call without the surrogate is then recorded (the store never saw the broken one)
    good = client.post("/CallFlow", json={"inputs": CALL}, headers=HEADERS)
    assert good.status_code == 200 and good.get_json()["id"]


def test_a_lone_surrogate_in_the_number_is_a_400(client):
    response = client.post("/Lookup", data='{"inputs": {"phoneNumber": "+4121\\ud8005522000"}}',
                           headers={**HEADERS, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert _error(response)["error"] == "malformed_json"


@pytest.mark.parametrize("body", [b'{"inputs": {"phoneNumber": "\xff\xfe41"}}', b"\xc3\x28", b'{"a": "\xed\xa0\x80"}'])
def test_invalid_utf8_in_a_body_is_a_400(client, body):
    for path in ("/Lookup", "/CallFlow"):
        response = client.post(path, data=body, headers={**HEADERS, "Content-Type": "application/json"})
        assert response.status_code == 400
        assert _error(response)["error"] == "malformed_json"


@pytest.mark.parametrize("query", ["PhoneNumber=%FF41215522000", "PhoneNumber=41215522000&x=%C3%28",
                                   "PhoneNumber=%ED%A0%80"])
def test_invalid_utf8_in_a_query_is_a_400(client, query):
    response = client.get("/Lookup?" + query, headers=HEADERS)
    assert response.status_code == 400
    assert _error(response)["message"] == "the query string is not valid UTF-8"
    response = client.post("/CallFlow?" + query, json={"inputs": {"contactCrmId": "directory:alexa"}}, headers=HEADERS)
    assert response.status_code == 400


@pytest.mark.parametrize("number", ["1e999", "-0", "4" * 4400, "NaN", "Infinity", "1.5e3", "[1]", "{}", "true"])
def test_numbers_of_every_shape_never_fail_the_service(client, number):
    response = client.post("/Lookup", data='{"inputs": {"phoneNumber": ' + number + "}}",
                           headers={**HEADERS, "Content-Type": "application/json"})
    assert response.status_code in (200, 400)
    if response.status_code == 400:
        _error(response)


# --- a real gunicorn -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = LiveGunicorn(tmp_path_factory.mktemp("hardening"),
                        {"LOOKUP_TOKENS": TOKEN, "LOOKUP_CLIENT_TIMEOUT_S": "2", "GUNICORN_THREADS": "2"})
    live.start()
    yield live
    live.stop()


def _answer(raw: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert headers["content-type"] == "application/json", raw
    length = int(headers["content-length"])
    parsed = json.loads(body[:length])
    assert set(parsed) == {"error", "message"}, parsed
    return status, headers, parsed


LINE = f"GET /Lookup?PhoneNumber={NUMBER}".encode()
TOKEN_HEADER = f"X-Execution-Token: {TOKEN}\r\n".encode()


@pytest.mark.parametrize(("raw", "status"), [
    (LINE + b"&pad=" + b"7" * 5000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    (LINE + b" HTTP/1.1\r\nHost: a\r\nX-Pad: " + NUMBER.encode() * 900 + b"\r\n\r\n", 431),
    (LINE + b" HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n", 431),
    (LINE + b" HTTP/9.9\r\nHost: a\r\n\r\n", 400),
    (LINE + b" HTTP/1.1\r\nHost: a\r\nX-N\xe4me: " + NUMBER.encode() + b"\r\n\r\n", 400),
    (LINE + b"\xff\xfe HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (LINE + b" HTTP/1.1\r\nHost: a\r\nBad Header(: 1\r\n\r\n", 400),
    (b"G\x00T /Lookup HTTP/1.1\r\n\r\n", 400),
    (b"POST /CallFlow HTTP/1.1\r\nContent-Length: 12abc\r\n" + TOKEN_HEADER + b"\r\n{}", 400),
    (b"POST /CallFlow HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n" + TOKEN_HEADER + b"\r\n{}", 400),
    (b"POST /CallFlow HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n" + TOKEN_HEADER + b"\r\n0\r\n\r\n", 400),
])
def test_requests_gunicorn_refuses_get_the_json_error_without_their_content(server, raw, status):
    answer = server.raw(raw)
    got, headers, body = _answer(answer)
    assert got == status
    assert headers["connection"] == "close"
    assert NUMBER not in answer.decode("latin-1") and TOKEN not in answer.decode("latin-1")
    assert b"<html" not in answer.lower()


@pytest.mark.parametrize("body", [
    b"zz\r\n{}\r\n0\r\n\r\n",  # a chunk size that is no hex number
    b"5\r\n{}\r\n0\r\n\r\n",  # a chunk shorter than its size
    b"2\r\n{}XX0\r\n\r\n",  # no CRLF after the chunk
    b"2;\x01=\r\n{}\r\n0\r\n\r\n",  # a broken chunk extension
])
def test_a_malformed_chunked_body_is_a_400(server, body):
    raw = b"POST /CallFlow HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n" \
          + TOKEN_HEADER + b"\r\n" + body
    status, _, error = _answer(server.raw(raw))
    assert status == 400, error


def test_a_content_length_longer_than_the_body_is_a_400_when_the_client_stops_sending(server):
    raw = b"POST /CallFlow HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\nContent-Type: application/json\r\n" \
          + TOKEN_HEADER + b'\r\n{"inputs": {}}'
    status, _, error = _answer(server.raw(raw))  # sent, then the sending half closed
    assert status == 400, error


def test_a_content_length_longer_than_the_body_is_a_408_when_the_client_holds_on(server):
    raw = b"POST /CallFlow HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\nContent-Type: application/json\r\n" \
          + TOKEN_HEADER + b'\r\n{"inputs": {}}'
    status, headers, error = _answer(server.raw(raw, half_close=False))
    assert status == 408 and error["error"] == "request_timeout"
    assert headers["connection"] == "close"


def test_a_content_length_shorter_than_the_body_gives_json_errors_only(server):
    body = json.dumps({"inputs": {"contactCrmId": "directory:x"}}).encode()
    raw = b"POST /CallFlow HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Type: application/json\r\n" \
          + TOKEN_HEADER + b"\r\n" + body
    answer = server.raw(raw)
    statuses = [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]
    assert statuses and all(400 <= s < 500 for s in statuses), answer
    assert b"<html" not in answer.lower()


def _lookup_ok(port: int, timeout: float) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", f"/Lookup?PhoneNumber={NUMBER}", headers={"X-Execution-Token": TOKEN})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_slow_clients_and_idle_connections_do_not_hold_the_threads(server):
    """One worker with two threads: 20 clients sending their request a byte every 0.3 s would pin
    both threads of gunicorn's stock worker, so these lookups (bounded to 5 s each) would fail."""
    stop = threading.Event()
    closed_by_server: list[bytes] = []

    def slow_client() -> None:
        request = f"GET /Lookup?PhoneNumber={NUMBER} HTTP/1.1\r\nHost: a\r\n".encode() + TOKEN_HEADER + b"\r\n"
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            for byte in request:
                if stop.is_set():
                    return
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    break
                if stop.wait(0.3):
                    return
            try:
                closed_by_server.append(sock.recv(4096))
            except OSError:
                closed_by_server.append(b"")

    idle = []
    for _ in range(200):  # kept-alive connections that stay idle after one request
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("GET", "/healthz")
        connection.getresponse().read()
        idle.append(connection)
    threads = [threading.Thread(target=slow_client, daemon=True) for _ in range(20)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1.0)  # every slow client has started its request
        statuses = [_lookup_ok(server.port, timeout=5) for _ in range(10)]
        assert statuses == [200] * 10
        for thread in threads:
            thread.join(15)
        # the server gave up on each slow client (its request took longer than 2 s) with a 408
        assert len(closed_by_server) == 20
        assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in closed_by_server), closed_by_server[:3]
        # and every idle kept-alive connection that has not expired still serves a request
        assert _lookup_ok(server.port, timeout=5) == 200
    finally:
        stop.set()
        for connection in idle:
            connection.close()


def test_a_client_waiting_for_100_continue_gets_it_and_its_answer(server):
    body = json.dumps({"inputs": {"phoneNumber": NUMBER}}).encode()
    head = (f"POST /Lookup HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
            f"Content-Length: {len(body)}\r\n").encode() + TOKEN_HEADER + b"\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        assert sock.recv(4096).startswith(b"HTTP/1.1 100 Continue")  # before the body was sent
        sock.sendall(body)
        answer = b""
        for _ in range(20):  # headers and body may come in separate segments
            answer += sock.recv(65536)
            head_end = answer.find(b"\r\n\r\n")
            if head_end >= 0 and answer.endswith(b"[]"):
                break
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert answer.endswith(b"[]")


def test_a_chunked_body_that_stops_coming_is_a_408_and_the_connection_closes(server):
    head = b"POST /CallFlow HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n" \
           + TOKEN_HEADER + b'\r\n5\r\n{"inp\r\n'
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        answer = b""
        while b"}" not in answer:
            chunk = sock.recv(4096)
            assert chunk, answer
            answer += chunk
        status, _, error = _answer(answer)
        assert status == 408 and error["error"] == "request_timeout"
        assert sock.recv(4096) == b""  # closed by the server (a socket timeout here would fail the test)
