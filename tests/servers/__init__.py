"""Helpers that start real servers (slapd, PostgreSQL, ...) on 127.0.0.1 for the tests."""

import socket


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (yet): for a server to start, or to be refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
