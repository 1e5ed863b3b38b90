"""A TCP server on 127.0.0.1 that fails the way real networks and servers fail.

Modes (``MODES``):

- ``refuse``: nothing listens. The port stays bound (without ``listen()``) for the server's life,
  so no other process takes it and every connection attempt is refused (RST to the SYN).
- ``hang``: accepts, reads what the client sends, never answers; connections stay open until stop.
- ``reset``: accepts, reads a little, closes with ``SO_LINGER`` 0, which sends an RST.
- ``script``: accepts and answers each chunk the client sends with the next reply of ``replies``,
  then half-closes (FIN) and drains until the client closes; with ``hang_after`` it goes silent
  instead (a server that completes the handshake and never answers the query). Garbage, a
  plain-text HTTP answer to a TLS ClientHello, an "SSL yes" byte then plain text for PostgreSQL's
  SSLRequest: all are scripts.

One thread serves every connection with a selector, so a test gets one thread per server, a
bounded number of sockets, and a bounded stop.
"""

from __future__ import annotations

import logging
import random
import selectors
import socket
import struct
import threading
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

MODES = ("refuse", "hang", "reset", "script")
# A scripted reply: fixed bytes, or made from the chunk the client sent (to echo a message id).
Reply = bytes | Callable[[bytes], bytes]
MAX_CONNECTIONS = 64  # a misbehaving client beyond this is closed at once

# Bytes that are no protocol's answer: not a TLS record, not HTTP, not a PostgreSQL or LDAP message
# (the first byte is none of TLS's 0x14-0x18, PostgreSQL's 'S'/'N'/'E'/'R', or BER's SEQUENCE 0x30).
GARBAGE = b"\xde\xad\xbe\xef\x00\xff" + random.Random(20240502).randbytes(250)

# What a plain web server says to anything it does not understand (a TLS ClientHello, LDAP, ...).
PLAIN_HTTP_400 = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n"
    b"Connection: close\r\n\r\nthis is not TLS, bye\n"
)


def http_response(status: str, content_type: str, body: bytes) -> bytes:
    """A well-formed HTTP/1.1 answer carrying ``body`` (a protocol-level valid, content-level junk)."""
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class MisbehavingServer:
    """Use as a context manager; ``host``/``port`` are set once it is entered."""

    def __init__(self, mode: str, replies: Sequence[Reply] = (), hang_after: bool = False):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
        if mode == "script" and not replies:
            raise ValueError("mode 'script' needs at least one reply")
        self.mode = mode
        self.replies = list(replies)
        self.hang_after = hang_after  # script: after the last reply, stay silent instead of closing
        self.host = "127.0.0.1"
        self.port = 0
        self.accepted = 0  # connections accepted (a test can prove the client reached the server)
        self._listener: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._waker_r: socket.socket | None = None
        self._waker_w: socket.socket | None = None

    # --- life cycle ------------------------------------------------------------------------------
    def start(self) -> MisbehavingServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        self._listener = sock
        if self.mode == "refuse":
            return self  # bound, never listening: the kernel refuses every connection
        sock.listen(16)
        sock.setblocking(False)
        self._waker_r, self._waker_w = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._selector.register(sock, selectors.EVENT_READ, "accept")
        self._selector.register(self._waker_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._serve, name=f"misbehaving-{self.mode}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._waker_w is not None:
            try:
                self._waker_w.send(b"x")
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(5)
            if self._thread.is_alive():
                log.warning("misbehaving server on port %d did not stop within 5 s", self.port)
        if self._listener is not None:
            self._listener.close()
        for sock in (self._waker_r, self._waker_w):
            if sock is not None:
                sock.close()

    def __enter__(self) -> MisbehavingServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- serving -----------------------------------------------------------------------------------
    def _serve(self) -> None:
        assert self._selector is not None
        # per connection: how many replies it has had
        state: dict[socket.socket, int] = {}
        try:
            while not self._stop.is_set():
                for key, _ in self._selector.select(timeout=0.5):
                    if key.data == "wake":
                        return
                    if key.data == "accept":
                        self._accept(state)
                    else:
                        self._on_readable(key.fileobj, state)  # type: ignore[arg-type]
        finally:
            for conn in list(state):
                self._close(conn, state)
            self._selector.close()

    def _accept(self, state: dict[socket.socket, int]) -> None:
        assert self._listener is not None and self._selector is not None
        try:
            conn, _ = self._listener.accept()
        except BlockingIOError:
            return
        self.accepted += 1
        if len(state) >= MAX_CONNECTIONS:
            conn.close()
            return
        conn.setblocking(False)
        state[conn] = 0
        self._selector.register(conn, selectors.EVENT_READ, "conn")

    def _on_readable(self, conn: socket.socket, state: dict[socket.socket, int]) -> None:
        try:
            data = conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client gave up
            self._close(conn, state)
            return
        if self.mode == "hang":
            return  # read and keep: the client waits for an answer that never comes
        if self.mode == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self._close(conn, state)
            return
        index = state[conn]
        if index >= len(self.replies):
            return  # all said and half-closed: drain until the client closes
        state[conn] = index + 1
        reply = self.replies[index]
        try:
            payload = reply(data) if callable(reply) else reply
        except Exception:  # a broken script must not stop the server thread
            log.exception("misbehaving server: the scripted reply failed")
            self._close(conn, state)
            return
        try:
            conn.setblocking(True)
            conn.settimeout(2)
            conn.sendall(payload)
            conn.setblocking(False)
        except OSError:
            self._close(conn, state)
            return
        if index + 1 >= len(self.replies) and not self.hang_after:
            # FIN now, so the client sees the end of the answer; the socket itself is closed when the
            # client closes (closing with unread data would turn the FIN into an RST)
            try:
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                self._close(conn, state)

    def _close(self, conn: socket.socket, state: dict[socket.socket, int]) -> None:
        state.pop(conn, None)
        if self._selector is not None:
            try:
                self._selector.unregister(conn)
            except (KeyError, ValueError):
                pass
        conn.close()
