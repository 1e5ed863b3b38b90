"""A fault-injecting HTTP proxy on 127.0.0.1, put between a backend and the fake of its API.

Requests are passed on to the fake (so they still meet the fake's documented strictness) unless an
injected :class:`Fault` matches them. A fault can answer in the API's place (a refusal, an HTML page,
a truncated or wrongly shaped JSON document), hang (never answer), answer slowly, or lose the answer:
the request is passed on and carried out by the fake, then the connection closes before a byte of the
response, exactly what a client sees when a CRM stored a record and the network lost its answer.
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

KINDS = ("answer", "hang", "slow", "lose")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "proxy-connection"}
MAX_HANG_S = 30.0  # a hanging request is released by stop() or after this long


@dataclass
class Fault:
    kind: str
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0  # "slow": before passing the request on
    # which requests it applies to: (method, path, body) -> bool; None: every request
    match: Callable[[str, str, bytes], bool] | None = None
    times: int | None = None  # None: every matching request until cleared

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {KINDS}")


class FaultProxy:
    """``with FaultProxy(fake_url) as proxy``: point the backend at ``proxy.url``."""

    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.faults: list[Fault] = []
        self.seen = 0  # requests received
        self.injected = 0  # requests a fault applied to
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the proxy first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def inject(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def _take(self, method: str, path: str, body: bytes) -> Fault | None:
        with self._lock:
            self.seen += 1
            for fault in self.faults:
                if fault.match is None or fault.match(method, path, body):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self.faults.remove(fault)
                    self.injected += 1
                    return fault
        return None

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, list, bytes]:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=MAX_HANG_S)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}
            conn.request(method, path, body=body or None, headers=sent)
            response = conn.getresponse()
            data = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
            return response.status, kept, data
        finally:
            conn.close()

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = dict(self.headers.items())
                fault = proxy._take(self.command, urlsplit(self.path).path, body)
                if fault is not None and fault.kind == "hang":
                    proxy._release.wait(MAX_HANG_S)
                    self.close_connection = True
                    return
                if fault is not None and fault.kind == "answer":
                    self._answer(fault.status, list(fault.headers.items()), fault.body)
                    return
                if fault is not None and fault.kind == "slow":
                    proxy._release.wait(fault.delay)
                try:
                    status, kept, data = proxy._forward(self.command, self.path, headers, body)
                except OSError:
                    self._answer(502, [("Content-Type", "text/plain")], b"upstream unreachable")
                    return
                if fault is not None and fault.kind == "lose":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self._answer(status, kept, data)

            def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                try:
                    self.send_response(status)
                    for name, value in headers:
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
