"""gunicorn's threaded worker, made to share keep-alive connections evenly between the workers.

A keep-alive connection stays with the worker that accepted it. The stock gthread workers all
watch the listening socket, and the first one to wake takes the connection, so a load balancer
or a PaaS router that opens a set of long-lived connections at once often leaves one worker with
nearly all of them while another idles: measured here, 15 of 16 connections on one worker, and
half the throughput of an even split. This worker stops watching the socket while it already
holds at least as many connections as it has threads, so an idle sibling gets the new one. Every
``HOLD_OFF_S`` it looks whether a connection is waiting, and takes one that was already waiting
at its previous look (or that waits at a look the worker's loop was late for): no idle sibling is
there to take it. So when every worker is busy a new connection waits about twice ``HOLD_OFF_S``.

Slow clients: the stock worker hands a connection to a thread as soon as its first byte arrives,
and the thread then reads the rest blocking, so clients sending one byte a second pin every
thread. This worker reads a request's head (and a body of announced length) in its main loop,
without blocking, as bytes arrive, and gives the connection to a thread only once the request is
all there. A request that is not complete within ``LOOKUP_CLIENT_TIMEOUT_S`` seconds (default 5)
of its first byte gets a 408 and the connection is closed; reads a thread still does (a chunked
body, a body beyond what is buffered here) are held to the same deadline.

Requests gunicorn's parser rejects get the service's JSON error ``{"error", "message"}`` rather
than gunicorn's HTML page, and neither the answer nor the log repeats what the request contained
(a request line carries the phone number).
"""

from __future__ import annotations

import errno
import json
import os
import re
import select
import selectors
import socket
import time
from collections import deque
from datetime import timedelta
from functools import partial

from gunicorn import util
from gunicorn.http import errors as http_errors
from gunicorn.http.wsgi import Response, default_environ
from gunicorn.http2 import negotiation
from gunicorn.workers.gthread import TConn, ThreadWorker
from werkzeug.exceptions import RequestTimeout

HOLD_OFF_S = 0.002
CLIENT_TIMEOUT_S = float(os.environ.get("LOOKUP_CLIENT_TIMEOUT_S", "5"))
# Bytes gathered in the main loop before a thread takes over (so at most about 100 KiB held per
# connection): a longer head is read on by the thread, whose parser refuses it past gunicorn's
# limits (414, 431); a longer body is more than the service accepts (413) and is not waited for.
HEAD_CAP = 32 * 1024
BODY_CAP = 64 * 1024
_CONTENT_LENGTH = re.compile(rb"\r?\ncontent-length[ \t]*:[ \t]*(\d{1,12})[ \t]*\r?\n", re.IGNORECASE)
# a chunked body is read by the thread; so is the body of a client waiting for "100 Continue"
_BODY_ELSEWHERE = re.compile(rb"\r?\n(?:transfer-encoding|expect)[ \t]*:", re.IGNORECASE)


class ClientTooSlow(RequestTimeout):
    """The request did not arrive within the client timeout (a 408, also inside the app)."""

    description = "the request was not received in time"


class BalancedThreadWorker(ThreadWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._next_look = 0.0
        self._waited: set = set()  # listening sockets with a connection waiting at the last look
        self._reading: deque[DeadlineConn] = deque()  # connections part of whose request has arrived

    def _busy(self) -> bool:
        return self.alive and self.nr_conns >= self.cfg.threads

    def set_accept_enabled(self, enabled: bool) -> None:
        # run() turns accepting on at each turn of its loop while below worker_connections
        super().set_accept_enabled(enabled and not self._busy())

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        if self._busy() and self.nr_conns < self.worker_connections:
            self.set_accept_enabled(False)
            now = time.monotonic()
            if now >= self._next_look:
                # A look that comes late (the loop waited for the GIL behind busy request threads)
                # takes what waits: an idle sibling, which wakes at once, would have taken it.
                late = now - self._next_look > HOLD_OFF_S
                self._next_look = now + HOLD_OFF_S
                waiting = set(select.select(self.sockets, [], [], 0)[0])
                for listener in waiting if late else waiting & self._waited:
                    self.accept(listener)
                self._waited = waiting
            timeout = min(timeout, max(0.0, self._next_look - now))
        if self._reading:
            timeout = min(timeout, max(0.0, self._reading[0].deadline - time.monotonic()))
        super().wait_for_and_dispatch_events(timeout)
        self._murder_slow()

    # --- slow clients -------------------------------------------------------------------------

    def accept(self, listener) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        if self.cfg.is_ssl or negotiation.prior_knowledge_allowed(self.cfg, client_addr):
            # TLS, or HTTP/2 sniffed on the socket: the bytes are not ours to read here, as gunicorn does
            client_sock.setblocking(True)
            self.enqueue_req(TConn(self.cfg, client_sock, client_addr, listener.getsockname()))
            return
        conn = DeadlineConn(self.cfg, client_sock, client_addr, listener.getsockname())  # non-blocking
        conn.timeout = time.monotonic() + self.cfg.keepalive  # for its first byte, as a kept-alive one
        self.pending_conns.append(conn)
        self.poller.register(client_sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn))
        self._on_data(conn, self.pending_conns)  # a request often comes with the connection

    def on_client_socket_readable(self, conn, client) -> None:
        if not isinstance(conn, DeadlineConn):
            return super().on_client_socket_readable(conn, client)
        self._on_data(conn, self.keepalived_conns)
        return None

    def on_pending_socket_readable(self, conn, client) -> None:
        if not isinstance(conn, DeadlineConn):
            return super().on_pending_socket_readable(conn, client)
        self._on_data(conn, self.pending_conns)
        return None

    def _on_data(self, conn: DeadlineConn, idle: deque) -> None:
        """Reads what a connection has sent, without blocking; hands it to a thread once complete."""
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if conn.deadline is None:  # the first bytes of a request: it leaves the idle connections
            if not data:
                self._forget(conn, idle)
                return
            idle.remove(conn)
            conn.deadline = time.monotonic() + CLIENT_TIMEOUT_S
            self._reading.append(conn)
        conn.head += data
        # at the end of what the client sends (it may still read), the parser says what is missing
        if not data or _request_complete(conn.head):
            self._reading.remove(conn)
            self.poller.unregister(conn.sock)
            conn.data_ready = True
            self.enqueue_req(conn)

    def _forget(self, conn: DeadlineConn, held: deque, answer: bytes = b"") -> None:
        held.remove(conn)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        self.nr_conns -= 1
        if answer:
            try:
                conn.sock.send(answer)
            except OSError:
                pass
        conn.close()

    def _murder_slow(self) -> None:
        now = time.monotonic()
        while self._reading and self._reading[0].deadline <= now:  # in deadline order: one timeout for all
            self._forget(self._reading[0], self._reading, _error_response(408, *_STATUS[ClientTooSlow][1:]))

    def handle(self, conn):
        if not isinstance(conn, DeadlineConn):
            return super().handle(conn)
        if conn.deadline is None:  # a pipelined request, taken straight from the parser's buffer
            conn.deadline = time.monotonic() + CLIENT_TIMEOUT_S
        if conn.initialized and conn.head:
            conn.parser.unreader.unread(bytes(conn.head))
            conn.head.clear()
        conn.timed_out = False
        try:
            return super().handle(conn)
        finally:
            conn.deadline = None

    def handle_request(self, req, conn):
        if not isinstance(conn, DeadlineConn):
            return super().handle_request(req, conn)
        try:
            keepalive = super().handle_request(req, conn)
        finally:
            conn.deadline = None  # draining an unread body is bounded by gunicorn itself
        # the app answered 408 to a body that did not arrive in time: the rest of it may still come
        return keepalive and not conn.timed_out

    # --- parser errors ------------------------------------------------------------------------

    def handle_error(self, req, client, addr, exc) -> None:
        status, code, message = _STATUS.get(type(exc)) or next(
            (answer for kind, answer in _STATUS.items() if isinstance(exc, kind)), (500, "internal_error", ""))
        addr = addr or ("", -1)
        if status == 500:
            self.log.exception("error handling a request (%s)", type(exc).__name__)
            message = "the service failed; the error is logged"
        else:  # the class of error only: the request line and headers may carry a number or a token
            self.log.warning("invalid request from ip=%s: %s (%s)", addr[0], code, type(exc).__name__)
        if req is None and isinstance(exc, http_errors.InvalidHeader | http_errors.InvalidHeaderName):
            req = getattr(exc, "req", None)
        if req is not None:
            try:
                environ = default_environ(req, client, self.cfg)
                environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = addr[0], str(addr[1])
                resp = Response(req, client, self.cfg)
                resp.status = f"{status} {_REASONS.get(status, 'Error')}"
                resp.response_length = len(message)
                self.log.access(resp, req, environ, timedelta(0))
            except Exception:
                self.log.debug("no access log line for a rejected request")
        try:
            util.write_nonblock(client, _error_response(status, code, message))
        except Exception:
            self.log.debug("failed to send an error answer")


class DeadlineConn(TConn):
    """A connection that gathers its request's bytes in ``head`` and holds its reads to ``deadline``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.head = bytearray()
        self.deadline: float | None = None
        self.timed_out = False

    def init(self) -> None:
        if self.initialized:
            return
        super().init()
        unreader = getattr(self.parser, "unreader", None)
        if unreader is not None and getattr(unreader, "sock", None) is self.sock:
            unreader.sock = _DeadlineSocket(self.sock, self)
        if self.head and unreader is not None:
            unreader.unread(bytes(self.head))
            self.head.clear()


class _DeadlineSocket:
    """The connection's socket as gunicorn's parser reads it: no read goes past the deadline."""

    def __init__(self, sock: socket.socket, conn: DeadlineConn):
        self._sock = sock
        self._conn = conn

    def recv(self, size: int) -> bytes:
        deadline = self._conn.deadline
        if deadline is None:
            return self._sock.recv(size)
        remaining = deadline - time.monotonic()
        if remaining > 0:
            self._sock.settimeout(remaining)
            try:
                return self._sock.recv(size)
            except TimeoutError:
                pass
            finally:
                self._sock.settimeout(None)
        self._conn.timed_out = True
        raise ClientTooSlow()

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


def _request_complete(head: bytearray) -> bool:
    """Whether the head has arrived, and the body too when its length is announced and small."""
    end = head.find(b"\r\n\r\n")
    if end < 0:
        end = head.find(b"\n\n")  # not valid HTTP/1.1: the parser will say so
        if end < 0:
            return len(head) >= HEAD_CAP
    header = bytes(head[:end + 2])
    match = _CONTENT_LENGTH.search(header)
    if match is None or _BODY_ELSEWHERE.search(header):
        return True
    length = int(match.group(1))
    return length > BODY_CAP or len(head) >= end + 4 + length


_REASONS = {400: "Bad Request", 403: "Forbidden", 408: "Request Timeout", 414: "URI Too Long",
            417: "Expectation Failed", 431: "Request Header Fields Too Large", 500: "Internal Server Error"}
# Every client error is a 4xx: "never a 5xx" for bad input (an unknown transfer coding is 400 here,
# where gunicorn says 501). The message names the kind of fault, never the request's content.
_STATUS: dict[type, tuple[int, str, str]] = {
    ClientTooSlow: (408, "request_timeout", f"the request was not received within {CLIENT_TIMEOUT_S:g} s"),
    http_errors.LimitRequestLine: (414, "uri_too_long", "the request line is too long"),
    http_errors.LimitRequestHeaders: (431, "headers_too_large", "the request headers are too large or too many"),
    http_errors.InvalidRequestLine: (400, "bad_request", "the request line is malformed"),
    http_errors.InvalidRequestMethod: (400, "bad_request", "the request method is not valid"),
    http_errors.InvalidHTTPVersion: (400, "bad_request", "the HTTP version is not supported"),
    http_errors.ObsoleteFolding: (400, "bad_request", "a header uses obsolete line folding"),
    http_errors.InvalidResponseHeader: (500, "internal_error", ""),
    http_errors.InvalidResponseHeaderName: (500, "internal_error", ""),
    http_errors.InvalidHeaderName: (400, "bad_request", "a header name is not valid"),
    http_errors.InvalidHeader: (400, "bad_request", "a header is not valid"),
    http_errors.UnsupportedTransferCoding: (400, "bad_request", "the transfer coding is not supported; use chunked"),
    http_errors.InvalidChunkSize: (400, "bad_request", "the chunked body is malformed"),
    http_errors.ChunkMissingTerminator: (400, "bad_request", "the chunked body is malformed"),
    http_errors.InvalidChunkExtension: (400, "bad_request", "the chunked body is malformed"),
    http_errors.ExpectationFailed: (417, "expectation_failed", "only Expect: 100-continue is supported"),
    http_errors.InvalidProxyLine: (400, "bad_request", "the PROXY protocol line is malformed"),
    http_errors.ForbiddenProxyRequest: (403, "forbidden", "PROXY protocol is not accepted from this address"),
    http_errors.InvalidSchemeHeaders: (400, "bad_request", "the scheme headers contradict each other"),
    http_errors.InvalidH2CPreface: (400, "bad_request", "the HTTP/2 preface is malformed"),
    http_errors.ParseException: (400, "bad_request", "the request is malformed"),
}


def _error_response(status: int, code: str, message: str) -> bytes:
    body = json.dumps({"error": code, "message": message}).encode()
    head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body
