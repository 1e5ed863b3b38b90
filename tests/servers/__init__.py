"""Helpers that start real servers (slapd, PostgreSQL, ...) on 127.0.0.1 for the tests."""

import socket
import time
from collections.abc import Callable


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (yet): for a server to start, or to be refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout: float = 2.0, interval: float = 0.01) -> bool:
    """Poll ``predicate`` for at most ``timeout`` seconds; its last value (for assertions on state
    that a server or a background thread changes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
