"""A real gunicorn, started as the Procfile starts it, on a free port of 127.0.0.1, with its log
captured to a file: for the tests that need the HTTP server itself (its parser, its worker, its log).
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.servers import free_port
from tests.servers.lookup_process import procfile_command

ROOT = Path(__file__).resolve().parent.parent


class LiveGunicorn:
    """``start()`` waits until /healthz answers; ``stop()`` ends the process group it started."""

    def __init__(self, folder: Path, env: dict[str, str], extra_args: tuple[str, ...] = ()):
        self.folder = folder
        self.extra_args = list(extra_args)  # after the Procfile's, e.g. ("--worker-class", "gthread")
        self.port = free_port()
        self.log_path = folder / "gunicorn.log"
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("LOOKUP_") and k != "REDIS_URL"}
        self.env = {**inherited, "PORT": str(self.port), "WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "4",
                    "LOOKUP_DIRECTORY": str(folder / "directory.sqlite3"),
                    "LOOKUP_STATE_DB": str(folder / "state.sqlite3"), "LOOKUP_INSTANCE_DIR": str(folder),
                    "LOOKUP_PHONE_INDEX": "0", "LOOKUP_STARTUP_CHECK": "off", **env}
        self.process: subprocess.Popen | None = None

    def start(self) -> LiveGunicorn:
        with open(self.log_path, "ab") as log:
            command = procfile_command()
            command[-1:-1] = self.extra_args  # before the application, which comes last
            self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=log,
                                            start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log()
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    connection.close()
                    return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError("gunicorn did not start: " + self.log())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def raw(self, data: bytes, timeout: float = 10.0, half_close: bool = True) -> bytes:
        """Sends ``data`` as it is and returns everything the server answers until it closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            try:
                sock.sendall(data)
                if half_close:
                    sock.shutdown(socket.SHUT_WR)
            except OSError:  # the server may answer and close before it has read everything
                pass
            answer = b""
            stop_at = time.monotonic() + timeout
            while time.monotonic() < stop_at:
                try:
                    chunk = sock.recv(65536)
                except (ConnectionResetError, TimeoutError):
                    break
                if not chunk:
                    break
                answer += chunk
            return answer

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()
