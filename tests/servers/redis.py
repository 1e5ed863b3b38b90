"""A throw-away redis-server on 127.0.0.1 and a free port, for the Redis scale-out tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.servers import free_port


class RedisServer:
    """redis-server on 127.0.0.1 and a free port; ``persistent`` keeps an append-only file, so a
    :meth:`restart` (same port, same data folder) finds what was written before, as a managed
    Redis with persistence does."""

    def __init__(self, persistent: bool = False):
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError("redis-server not found: install the Debian package 'redis-server'")
        self.port = free_port()
        self.workdir = tempfile.mkdtemp(prefix="lookup-redis-")
        self.persistent = persistent
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.persistent else "no", "--appendfsync", "always", "--dir", self.workdir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("redis-server did not start within 10 s") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextmanager
def redis_server(persistent: bool = False) -> Iterator[str]:
    """Start redis-server (Debian package 'redis-server'); yields its URL; stops it at the end."""
    server = RedisServer(persistent)
    try:
        server.start()
        yield server.url
    finally:
        server.remove()
