"""A real HTTP server on 127.0.0.1 standing in for an in-house ERP's JSON API.

Tests and the benchmark route (method, path) pairs to handler functions, which answer with a
:class:`Reply`; every request is recorded, raw path and body included, so a test can assert exactly
what the backend sent. A reply can be slow (``delay``) or lost (``drop``: the handler ran, so what it
stored stays stored, and the connection closes before a byte of the answer).

:class:`ErpRecords` routes a whole in-house ERP onto it: people searched by their exact phone text,
call and message records created and updated, the ERP's users. Its request schemas are the ones
documented for the example API in docs/backends/rest.md ("The example ERP's records API"); it rejects
what that documentation says the ERP rejects: unknown or read-only fields, wrong types, missing
required ones (422), unknown ids (404).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    raw_path: str  # path and query exactly as sent (percent-encoded)
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    body: bytes | None = None  # raw body, wins over json
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False  # close the connection instead of answering


Handler = Callable[[Request], Reply]


class FakeRestApi:
    """Start with :meth:`start`, stop with :meth:`stop`; ``url`` is the root URL."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        self.requests: list[Request] = []
        self.record = True
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def route(self, method: str, path: str, handler: Handler) -> None:
        """``path`` ending in ``/*`` also takes every path below it (``/api/calls/*``: ``/api/calls/17``)."""
        self.routes[(method.upper(), path)] = handler

    def reset(self) -> None:
        with self._lock:
            self.routes.clear()
            self.requests.clear()

    def _handle(self, request: Request) -> Reply:
        if self.record:
            with self._lock:
                self.requests.append(request)
        handler = self.routes.get((request.method, request.path))
        if handler is None and "/" in request.path.strip("/"):
            handler = self.routes.get((request.method, request.path.rsplit("/", 1)[0] + "/*"))
        if handler is None:
            return Reply(404, {"error": "no such route"})
        return handler(request)

    def start(self) -> FakeRestApi:
        api = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real APIs do
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = Request(
                    method=self.command,
                    raw_path=self.path,
                    path=parts.path,
                    query={k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()},
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                reply = api._handle(request)
                if reply.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if reply.delay:
                    time.sleep(reply.delay)
                payload = (
                    reply.body
                    if reply.body is not None
                    else (b"" if reply.json is None else json.dumps(reply.json).encode())
                )
                try:
                    self.send_response(reply.status)
                    headers = {"Content-Type": "application/json", **reply.headers}
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# --- an in-house ERP: records, users, an exact phone search -------------------------------------------
Schema = dict[str, tuple[tuple[type, ...], bool]]  # field -> (JSON types, required)
_TEXT = (str,)
_OPTIONAL_TEXT = (str, type(None))
CALL_CREATE: Schema = {
    "contact_id": (_TEXT, True), "direction": (_TEXT, True), "status": (_TEXT, True), "key": (_TEXT, True),
    "started": (_OPTIONAL_TEXT, False), "answered": (_OPTIONAL_TEXT, False), "ended": (_OPTIONAL_TEXT, False),
    "duration": ((int,), False), "subject": (_OPTIONAL_TEXT, False), "note": (_OPTIONAL_TEXT, False),
    "owner": (_OPTIONAL_TEXT, False),
}
CALL_CHANGE: Schema = {  # contact_id, direction, key and owner are fixed once created
    "status": (_TEXT, False), "answered": (_OPTIONAL_TEXT, False), "ended": (_OPTIONAL_TEXT, False),
    "duration": ((int,), False), "subject": (_OPTIONAL_TEXT, False), "note": (_OPTIONAL_TEXT, False),
}
MESSAGE_CREATE: Schema = {
    "contact_id": (_TEXT, True), "kind": (_TEXT, True), "key": (_TEXT, True), "title": (_TEXT, True),
    "text": (_TEXT, True), "count": ((int,), True), "link": (_OPTIONAL_TEXT, False), "owner": (_OPTIONAL_TEXT, False),
}
MESSAGE_CHANGE: Schema = {
    "title": (_TEXT, False), "text": (_TEXT, False), "count": ((int,), False), "link": (_OPTIONAL_TEXT, False),
}
STATUSES = ("answered", "missed", "declined")
KINDS = ("SMS", "Voicemail", "Fax")


def schema_errors(body: Any, schema: Schema) -> str | None:
    """Why ``body`` does not fit ``schema``, None when it does (a bool is no integer)."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    for name in body:
        if name not in schema:
            return f"unknown or read-only field {name!r}"
    for name, (types, required) in schema.items():
        if name not in body:
            if required:
                return f"missing required field {name!r}"
            continue
        value = body[name]
        if isinstance(value, bool) or not isinstance(value, types):
            return f"field {name!r} has the wrong type ({type(value).__name__})"
    return None


class ErpRecords:
    """The example ERP of docs/backends/rest.md, served by ``api`` under ``/erp``:

    - ``GET /erp/people?phone=``: the people whose stored phone is exactly that text;
    - ``POST /erp/calls``, ``PATCH /erp/calls/<id>``: call records (CALL_CREATE, CALL_CHANGE);
    - ``POST /erp/messages``, ``PATCH /erp/messages/<id>``, ``GET /erp/messages?key=``: message
      records (MESSAGE_CREATE, MESSAGE_CHANGE);
    - ``GET /erp/users``: ``{"users": [{"login", "profile": {"display", "mail"}}]}``.

    A POST with an ``Idempotency-Key`` seen before answers the record that key made, unchanged
    (``idempotent = False``: the key is ignored, as by many in-house APIs). ``lose``: that many
    answers to a POST are dropped after the record was stored."""

    def __init__(self, api: FakeRestApi, people: list[dict[str, Any]] | None = None,
                 users: list[dict[str, Any]] | None = None, idempotent: bool = True):
        self.idempotent = idempotent
        self.people = people if people is not None else [{"id": 1, "name": "Anna Muster", "phone": "+41215522000"}]
        self.users = users if users is not None else [
            {"login": "u7", "profile": {"display": "Ursula Seven", "mail": "u7@erp.example"}},
            {"login": "u8", "profile": {"display": "Ulf Eight", "mail": None}},
        ]
        self.calls: dict[int, dict[str, Any]] = {}
        self.messages: dict[int, dict[str, Any]] = {}
        self.by_idempotency: dict[tuple[str, str], int] = {}
        self.lose = 0
        self._lock = threading.Lock()
        api.route("GET", "/erp/people", self.search)
        api.route("POST", "/erp/calls", lambda r: self.create(r, self.calls, CALL_CREATE, "calls"))
        api.route("PATCH", "/erp/calls/*", lambda r: self.change(r, self.calls, CALL_CHANGE, "calls"))
        api.route("POST", "/erp/messages", lambda r: self.create(r, self.messages, MESSAGE_CREATE, "messages"))
        api.route("PATCH", "/erp/messages/*", lambda r: self.change(r, self.messages, MESSAGE_CHANGE, "messages"))
        api.route("GET", "/erp/messages", self.find_message)
        api.route("GET", "/erp/users", lambda r: Reply(200, {"users": self.users}))

    def search(self, request: Request) -> Reply:
        wanted = request.query.get("phone", "")
        return Reply(200, {"items": [p for p in self.people if p["phone"] == wanted]})

    @staticmethod
    def _shown(kind: str, record: dict[str, Any]) -> dict[str, Any]:
        return {**record, "url": f"https://erp.example/{kind}/{record['id']}"}

    def _body(self, request: Request, schema: Schema) -> tuple[Any, Reply | None]:
        try:
            body = request.json()
        except ValueError:
            return None, Reply(400, {"error": "the body is not JSON"})
        problem = schema_errors(body, schema)
        if problem is None and "status" in body and body["status"] not in STATUSES:
            problem = f"status must be one of {', '.join(STATUSES)}"
        if problem is None and "kind" in body and body["kind"] not in KINDS:
            problem = f"kind must be one of {', '.join(KINDS)}"
        if problem is None and "contact_id" in body and all(str(p["id"]) != body["contact_id"] for p in self.people):
            return None, Reply(404, {"error": f"no person {body['contact_id']!r}"})
        return body, (Reply(422, {"error": problem}) if problem else None)

    def create(self, request: Request, table: dict[int, dict[str, Any]], schema: Schema, kind: str) -> Reply:
        body, refusal = self._body(request, schema)
        if refusal is not None:
            return refusal
        with self._lock:
            key = request.headers.get("idempotency-key") if self.idempotent else None
            made = self.by_idempotency.get((kind, key)) if key else None
            if made is not None:
                record = table[made]
            else:
                record = {"id": 100 + len(self.calls) + len(self.messages), **body}
                table[record["id"]] = record
                if key:
                    self.by_idempotency[(kind, key)] = record["id"]
            reply = Reply(201, {"data": self._shown(kind, record)})
            if self.lose:
                self.lose -= 1
                reply.drop = True
        return reply

    def change(self, request: Request, table: dict[int, dict[str, Any]], schema: Schema, kind: str) -> Reply:
        tail = request.path.rsplit("/", 1)[1]
        record = table.get(int(tail)) if tail.isdigit() else None
        if record is None:
            return Reply(404, {"error": f"no {kind} record {tail!r}"})
        body, refusal = self._body(request, schema)
        if refusal is not None:
            return refusal
        with self._lock:
            record.update(body)
        return Reply(200, {"data": self._shown(kind, record)})

    def find_message(self, request: Request) -> Reply:
        key = request.query.get("key")
        return Reply(200, {"items": [self._shown("messages", m) for m in self.messages.values() if m["key"] == key]})
