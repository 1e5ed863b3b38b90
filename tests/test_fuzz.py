"""5,000 generated malformed requests against a real gunicorn run with the project's configuration
(Procfile, config/gunicorn.conf.py, the balanced worker): none may get a 5xx, an HTML page or a
traceback in the log. Requests are built from a fixed seed, so a failure is reproducible; each is
sent on its own connection, whose sending half is then closed (a short body ends there)."""

from __future__ import annotations

import json
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.live_gunicorn import LiveGunicorn

TOKEN = "fuzz-token-0123456789"
COUNT = 5000
SEED = 20261201

NUMBERS = ["41215522000", "+41 21 552 20 00", "%2B41215522000", "0", "", " " * 3000, "1" * 65, "1" * 64, "+",
           "41215522000;ext=12", "tel:+41-21-552-20-00", "(021) 552 20 00 x 123", "٤١٢١٥٥٢٢٠٠٠", "41215522000" * 7,
           "-1", "1e999", "0x41", "4" * 4400, "NaN", "+" * 200, "41\u2028215", "%00", "%FF%FE", "%ED%A0%80",
           "%C3%28", "41%0d%0aX-Injected:%201", "*", "../../etc/passwd", "\\ud800"]
JSON_VALUES = ['"41215522000"', "41215522000", "4.1215522e10", "1e999", "-0", "true", "null", "[]", "{}",
               '"\\ud800"', '"\\udfff41215522000"', '"' + " " * 60000 + '"', "4" * 5000, "NaN", "-Infinity",
               '"\\u0000"', '"' + "\\u00e9" * 2000 + '"', "[" * 5000 + "]" * 5000, '{"a":' * 2000 + "1" + "}" * 2000]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT", "get", "P0ST", "",
           "G\x00T", "GET GET", "X" * 300, "PRI", "\xe9GET", "QUERY"]
PATHS = ["/Lookup", "/CallFlow", "/healthz", "/metrics", "/", "/lookup", "/Lookup/", "/%FF", "/%2e%2e/%2e%2e/etc",
         "*", "http://127.0.0.1/Lookup", "//Lookup", "/Lookup#frag", "/Lookup;x", "/" + "a" * 5000,
         "/Lookup\x00", "/Lo okup", "/\xc3\xa9", "/\xff", "/CallFlow?x=%C3%28", "/Unknown", "/readyz", "/CreateContact",
         "/contacts", "/contacts/search", "/contacts/match", "/contacts/view", "/status"]
VERSIONS = ["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/1.1x", "", "HTTP/1.1 extra", "http/1.1", "HTTP/11",
            "HTTP/1.2"]
CONTENT_TYPES = ["application/json", "application/json; charset=utf-16", "text/plain",
                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=",
                 "multipart/form-data; boundary=xyz", "application/json; charset=latin-1", "", "*/*",
                 "application/json\x00", "application/" + "j" * 9000]


def _body(rng: random.Random) -> bytes:
    kind = rng.randrange(12)
    if kind == 0:
        return b""
    if kind == 1:
        return rng.randbytes(rng.randrange(1, 400))
    if kind == 2:
        return b"\xef\xbb\xbf" + json.dumps({"inputs": {"phoneNumber": "41215522000"}}).encode()
    if kind == 3:
        return json.dumps({"inputs": {"phoneNumber": rng.choice(NUMBERS)}}).encode("utf-16")
    if kind == 4:
        return b'{"inputs": {"phoneNumber": "' + rng.randbytes(20) + b'"}}'
    if kind == 5:
        return b"x" * 70_000  # over the 64 KiB limit
    field = rng.choice(["phoneNumber", "contactCrmId", "originatorNumber", "startedTime", "direction", "inputs",
                        "PHONENUMBER", "\\ud800", "", "type", "time", "messageId", "text", "note", "conversationId"])
    value = rng.choice(JSON_VALUES)
    if kind == 6:
        return ('{"' + field + '": ' + value + "}").encode()
    if kind == 7:
        crm_id = rng.choice(JSON_VALUES)
        return ('{"inputs": {"contactCrmId": ' + crm_id + ', "' + field + '": ' + value + "}}").encode()
    if kind == 8:
        return ('{"inputs": {"phoneNumber": ' + value + "}}").encode()
    if kind == 9:
        text = '{"inputs": {"contactCrmId": "directory:alexa", "startedTime": ' + value + "}}"
        return text.encode()[: rng.randrange(1, len(text) + 1)]  # cut anywhere
    if kind == 10:
        if rng.random() < 0.5:  # a message whose one field is odd
            inputs = {"contactCrmId": "directory:alexa", "type": "SMS", "direction": "incoming", "text": "hi",
                      "fromNumber": "41215522000", "time": "2026-11-21T09:00:00Z"}
            text = json.dumps({"inputs": inputs})[:-2] + ', "' + field + '": ' + value + "}}"
            return text.encode()
        return b"phoneNumber=41215522000&x=%ED%A0%80"
    return ('[{"inputs": ' + value + "}]").encode()


def _chunked(rng: random.Random, body: bytes) -> bytes:
    style = rng.randrange(8)
    pieces = [body[i:i + 700] for i in range(0, len(body), 700)] or [b""]
    if style == 0:
        return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"
    if style == 1:
        return b"".join(b"%X;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\nTrailer: 41215522000\r\n\r\n"
    if style == 2:
        return b"zz\r\n" + body + b"\r\n0\r\n\r\n"
    if style == 3:
        return b"%x\r\n%s" % (len(body) + 5, body)  # shorter than announced, no last chunk
    if style == 4:
        return b"-5\r\n" + body
    if style == 5:
        return b"ffffffffffffffffffff\r\n" + body
    if style == 6:
        return b"%x\r\n%sXX0\r\n\r\n" % (len(body), body)
    return b"2;\x01\r\nab\r\n0\r\n\r\n"


def _request(rng: random.Random) -> bytes:
    method = rng.choice(METHODS) if rng.random() < 0.3 else rng.choice(["GET", "POST"])
    path = rng.choice(PATHS) if rng.random() < 0.4 else rng.choice(["/Lookup", "/CallFlow", "/MessageLog"])
    if rng.random() < 0.5:
        path += "?PhoneNumber=" + rng.choice(NUMBERS)
    version = rng.choice(VERSIONS) if rng.random() < 0.2 else "HTTP/1.1"
    line = f"{method} {path} {version}".encode("latin-1", "replace") if rng.random() < 0.95 else rng.randbytes(30)
    headers: list[bytes] = []
    if rng.random() < 0.8:
        token = TOKEN if rng.random() < 0.8 else rng.choice(["wrong", "", "x" * 9000, TOKEN + "\x00", "\udc80"])
        headers.append(b"X-Execution-Token: " + token.encode("utf-8", "surrogateescape"))
    if rng.random() < 0.7:
        headers.append(b"Content-Type: " + rng.choice(CONTENT_TYPES).encode())
    if rng.random() < 0.1:
        headers.append(rng.choice([b"Bad Header: 1", b"X-\xe9: 1", b"X-Fold: a\r\n folded", b": empty",
                                   b"X-Long: " + b"4" * 9000, b"Host: a\r\nHost: b", b"X-Request-ID: 41215522000",
                                   b"Expect: 100-continue", b"Expect: teapot", b"Connection: upgrade\r\nUpgrade: h2c",
                                   b"X-Null: a\x00b", b"Content-Length: 5\r\nTransfer-Encoding: chunked"]))
    if rng.random() < 0.03:
        headers.extend(b"X-%d: %d" % (i, i) for i in range(120))
    body = _body(rng) if method not in ("GET", "HEAD") or rng.random() < 0.2 else b""
    framing = rng.random()
    if framing < 0.55:
        length = len(body) if rng.random() < 0.8 else rng.choice([len(body) + 10, max(len(body) - 3, 0), 0])
        headers.append(b"Content-Length: %d" % length)
        payload = body
    elif framing < 0.8:
        coding = rng.choice([b"chunked", b"chunked", b"gzip, chunked", b"chunked, chunked", b"identity", b"Chunked",
                             b"xchunked"])
        headers.append(b"Transfer-Encoding: " + coding)
        payload = _chunked(rng, body)
    elif framing < 0.9:
        headers.append(rng.choice([b"Content-Length: -1", b"Content-Length: abc", b"Content-Length: 1e3",
                                   b"Content-Length: 99999999999999999999", b"Content-Length: 4, 4",
                                   b"Content-Length: 2\r\nContent-Length: 3", b"Content-Length: +4"]))
        payload = body
    else:
        payload = body  # no framing at all
    separator = b"\r\n" if rng.random() < 0.97 else rng.choice([b"\n", b"\r", b"\r\r\n"])
    return separator.join([line, *headers]) + separator + separator + payload


_STATUS = re.compile(rb"HTTP/1\.\d (\d{3}) ")
_HOME = re.compile(rb"(GET|HEAD) /(\?[^ ]*)? HTTP/1\.\d\r?\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = LiveGunicorn(tmp_path_factory.mktemp("fuzz"), {"LOOKUP_TOKENS": TOKEN, "WEB_CONCURRENCY": "2",
                                                          "LOOKUP_CLIENT_TIMEOUT_S": "2", "LOG_LEVEL": "INFO"})
    live.start()
    yield live
    live.stop()


def test_generated_malformed_requests_never_get_a_5xx_or_html(server):
    rng = random.Random(SEED)
    requests = [_request(rng) for _ in range(COUNT)]
    stop_at = time.monotonic() + 300  # a bound on the whole run, not a measurement

    def send(raw: bytes) -> tuple[bytes, bytes]:
        if time.monotonic() > stop_at:
            return raw, b"<not sent: out of time>"
        return raw, server.raw(raw, timeout=10)

    answered = 0
    failures: list[tuple[bytes, bytes]] = []
    with ThreadPoolExecutor(8) as pool:
        for raw, answer in pool.map(send, requests):
            statuses = [int(s) for s in _STATUS.findall(answer)]
            if statuses:
                answered += 1
            home = _HOME.match(raw) is not None  # the one HTML page (lookup_service/pages.py); its errors are JSON
            bad = answer.startswith(b"<not sent") or any(s >= 500 for s in statuses) \
                or (b"<html" in answer.lower() and not home) \
                or (answer and not answer.startswith(b"HTTP/1.")) \
                or any(not ct.startswith(b"application/json") and not (home and ct.startswith(b"text/html"))
                       for ct in re.findall(rb"(?im)^content-type: ([^\r\n]*)", answer))
            if bad:
                failures.append((raw[:300], answer[:300]))
    assert not failures, f"{len(failures)} bad answers, e.g. {failures[:3]}"
    assert answered >= COUNT * 0.95, f"only {answered} of {COUNT} requests got an answer"
    log = server.log()
    assert "Traceback" not in log and "internal_error" not in log and "Error handling request" not in log, log[-4000:]
