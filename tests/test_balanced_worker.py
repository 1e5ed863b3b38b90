"""The gunicorn worker class (config/balanced_worker.py), run as the Procfile runs it.

gunicorn is started for real with two workers; which worker holds a connection is read from
/proc (the sockets each worker process has open).
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.servers import free_port
from tests.servers.lookup_process import procfile_command

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "worker-test-token-0123"
pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads sockets from Linux /proc")


@pytest.fixture
def gunicorn(tmp_path):
    """Start gunicorn with ``threads`` per worker; yields (port, master pid)."""
    started: list[subprocess.Popen] = []

    def start(threads: int) -> tuple[int, int]:
        port = free_port()
        env = {**os.environ, "PORT": str(port), "WEB_CONCURRENCY": "2", "GUNICORN_THREADS": str(threads),
               "LOOKUP_TOKENS": TOKEN, "LOOKUP_DIRECTORY": str(tmp_path / "directory.sqlite3"),
               "LOOKUP_STATE_DB": str(tmp_path / "state.sqlite3"), "LOOKUP_INSTANCE_DIR": str(tmp_path),
               "LOOKUP_ACCESS_LOG": "0", "LOOKUP_PHONE_INDEX": "0"}
        env.pop("LOOKUP_CONFIG", None)
        log = open(tmp_path / "gunicorn.log", "ab")  # noqa: SIM115 - closed with the process below
        process = subprocess.Popen(procfile_command(), cwd=ROOT, env=env, stdout=log, stderr=log,
                                   start_new_session=True)
        log.close()
        started.append(process)
        deadline = time.monotonic() + 30
        served: set[int] = set()
        while time.monotonic() < deadline:  # until both workers have loaded the app and answered
            assert process.poll() is None, (tmp_path / "gunicorn.log").read_text()
            served.update(_answered_by(process.pid, port))
            if len(served) == 2:
                _wait_until_released(process.pid, port)
                return port, process.pid
            time.sleep(0.05)
        raise AssertionError("gunicorn did not start: " + (tmp_path / "gunicorn.log").read_text())

    yield start
    for process in started:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)


def _answered_by(master: int, port: int) -> set[int]:
    """The worker that answered a /healthz request (empty if none could)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        response.read()
        return set(_connections_per_worker(master, port)) if response.status == 200 else set()
    except OSError:
        return set()
    finally:
        connection.close()


def _wait_until_released(master: int, port: int) -> None:
    deadline = time.monotonic() + 5  # until the workers have let go of every closed connection
    while sum(_connections_per_worker(master, port, established_only=False).values()) and \
            time.monotonic() < deadline:
        time.sleep(0.02)


def _workers(master: int) -> list[int]:
    try:
        return [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]
    except OSError:
        return []


def _connections_per_worker(master: int, port: int, established_only: bool = True) -> Counter:
    """How many connections to ``port`` each worker process holds: established ones, or all
    (also those the client has closed and the worker not yet)."""
    established: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            state = fields[3]
            wanted = state == "01" or (not established_only and state != "0A")  # 0A: the listening socket
            if wanted and int(fields[1].rsplit(":", 1)[1], 16) == port:
                established.add(fields[9])
    held: Counter = Counter()
    for worker in _workers(master):
        for fd in Path(f"/proc/{worker}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in established:
                held[worker] += 1
    return held


def _lookup(connection: http.client.HTTPConnection) -> int:
    connection.request("GET", "/Lookup?PhoneNumber=41215522000", headers={"X-Execution-Token": TOKEN})
    response = connection.getresponse()
    response.read()
    return response.status


def test_keep_alive_connections_are_shared_evenly_between_workers(gunicorn):
    port, master = gunicorn(threads=4)
    for _ in range(3):  # three sets of connections: the stock workers split them evenly by chance only
        connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=5) for _ in range(8)]
        for connection in connections:
            assert _lookup(connection) == 200
        assert sorted(_connections_per_worker(master, port).values()) == [4, 4]
        for connection in connections:
            connection.close()
        _wait_until_released(master, port)


def test_connections_beyond_every_workers_threads_are_still_served(gunicorn):
    port, master = gunicorn(threads=1)
    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=5) for _ in range(6)]
    for _ in range(3):  # every connection, kept alive, gets its answers although both workers are busy
        for connection in connections:
            assert _lookup(connection) == 200
    assert sum(_connections_per_worker(master, port).values()) == 6
    for connection in connections:
        connection.close()
