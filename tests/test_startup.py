"""The service started the four ways a user may start it, each a real process on 127.0.0.1.

`waitress-serve wsgi:app`, `flask --app wsgi run`, `gunicorn wsgi:app` and gunicorn with the
Procfile's configuration must behave the same with a mirrored backend: nothing but the
application starts the mirror's sync (the gunicorn configuration has no hooks); until the first
successful sync a lookup answers partially, never a `[]` cached as a no-match; `/readyz` says 503
until then and 200 after.

The source is a SQLite database whose table does not exist yet, so the mirror cannot sync until
the test creates it: the "not synced" phase lasts as long as the test needs, without any timing.
"""

from __future__ import annotations

import http.client
import json
import os
import runpy
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TOKEN = "startup-token-0123"
METRICS_TOKEN = "startup-metrics-0123"
NUMBER = "41215522000"
pytestmark = pytest.mark.timeout(60)

COMMANDS = {
    "waitress": lambda port: [str(BIN / "waitress-serve"), f"--listen=127.0.0.1:{port}", "wsgi:app"],
    "flask": lambda port: [str(BIN / "flask"), "--app", "wsgi", "run", "--port", str(port)],
    "gunicorn": lambda port: [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "wsgi:app"],
    # the Procfile's command; the bind on the command line keeps it on 127.0.0.1
    "gunicorn-config": lambda port: [str(BIN / "gunicorn"), "--config", "config/gunicorn.conf.py",
                                     "--bind", f"127.0.0.1:{port}", "wsgi:app"],
    # the master loads the app before forking: the workers must start the syncs themselves
    "gunicorn-preload": lambda port: [str(BIN / "gunicorn"), "--preload", "--workers", "2",
                                      "--bind", f"127.0.0.1:{port}", "wsgi:app"],
}


def _config(tmp_path: Path, source: Path) -> Path:
    config = tmp_path / "lookup.toml"
    if config.exists():  # a test wrote its own
        return config
    config.write_text(f"""
[[tenant]]
name = "acme"
tokens = ["{TOKEN}"]
  [[tenant.backend]]
  name = "erp"
  type = "sql"
  mode = "mirror"
  url = "sqlite:///{source}"
  list_query = "SELECT id, name, phone FROM people"
  sync_interval = 1
  [tenant.backend.fields]
  id = "id"
  name = "name"
  phones = ["phone"]
""")
    return config


@pytest.fixture
def serve(tmp_path):
    """Start the service with ``command``; yields (port, log path)."""
    started: list[subprocess.Popen] = []

    def start(command, **env_extra: str) -> tuple[int, Path]:
        port = free_port()
        multiproc = tmp_path / "metrics"
        multiproc.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKUP_") and k != "REDIS_URL"}
        env.update(LOOKUP_CONFIG=str(_config(tmp_path, tmp_path / "erp.sqlite3")),
                   LOOKUP_STATE_DB=str(tmp_path / "state.sqlite3"), LOOKUP_INSTANCE_DIR=str(tmp_path / "instance"),
                   LOOKUP_METRICS_TOKEN=METRICS_TOKEN, PROMETHEUS_MULTIPROC_DIR=str(multiproc),
                   LOOKUP_ACCESS_LOG="0", WEB_CONCURRENCY="2", GUNICORN_THREADS="4", PYTHONUNBUFFERED="1",
                   **env_extra)
        env.pop("PORT", None)
        log_path = tmp_path / "server.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(command(port), cwd=ROOT, env=env, stdout=log, stderr=log,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        started.append(process)
        stop_at = time.monotonic() + 30  # a loaded machine boots gunicorn's workers slowly
        while time.monotonic() < stop_at:
            if process.poll() is not None:
                return port, log_path
            if _get(port, "/healthz")[0] == 200:
                return port, log_path
            time.sleep(0.05)
        raise AssertionError("the service did not start: " + log_path.read_text())

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    except OSError:
        return 0, b""
    finally:
        connection.close()


def _lookup(port: int) -> list:
    status, body = _get(port, f"/Lookup?PhoneNumber={NUMBER}", {"X-Execution-Token": TOKEN})
    assert status == 200, body
    return json.loads(body)


def _metric(port: int, name: str) -> float:
    """The sum of a metric's samples whose line starts with ``name`` (labels included)."""
    status, body = _get(port, "/metrics", {"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert status == 200, body
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.decode().splitlines() if line.startswith(name))


def _fill_source(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, phone TEXT)")
        conn.execute("INSERT INTO people VALUES (1, 'Anna Muster', '(021) 552 20 00')")
    conn.close()


@pytest.mark.parametrize("way", list(COMMANDS))
def test_every_start_command_syncs_and_tells_the_truth_until_it_has(serve, tmp_path, way):
    source = tmp_path / "erp.sqlite3"
    sqlite3.connect(source).close()  # exists, but without the table the listing needs
    port, log_path = serve(COMMANDS[way], LOOKUP_STARTUP_CHECK="warn")
    assert _get(port, "/healthz")[0] == 200, log_path.read_text()

    status, body = _get(port, "/readyz")
    assert status == 503, body
    answer = json.loads(body)
    assert answer["error"] == "not_ready"
    assert answer["not_ready"] == [{"tenant": "acme", "backend": "erp", "reason": answer["not_ready"][0]["reason"]}]
    assert answer["not_ready"][0]["reason"].startswith("mirror: first sync")
    assert "people" not in body.decode()  # reasons carry no error text from the source

    # not synced: an answer without the mirror, counted partial, never cached as a no-match
    assert _lookup(port) == [] and _lookup(port) == []
    assert _metric(port, 'lookup_requests_total{outcome="partial_empty"') == 2
    assert _metric(port, 'lookup_requests_total{outcome="cache_hit"') == 0
    assert _metric(port, 'lookup_requests_total{outcome="empty"') == 0

    _fill_source(source)
    stop_at = time.monotonic() + 20  # the failed sync is retried after sync_interval (1 s)
    while _get(port, "/readyz")[0] != 200:
        assert time.monotonic() < stop_at, log_path.read_text()
        time.sleep(0.1)
    status, body = _get(port, "/readyz")
    assert json.loads(body) == {"status": "ready", "degraded": []}
    assert [c["name"] for c in _lookup(port)] == ["Anna Muster"]
    assert _metric(port, "lookup_mirror_last_success_timestamp_seconds") > 0
    assert _metric(port, 'lookup_http_request_duration_seconds_count{endpoint="/Lookup"') == 3

    log = log_path.read_text()
    assert "start-up check:" in log and "backend 'erp'" in log  # the check ran, inside the app
    assert 1 <= log.count("has not finished its first sync") <= 2  # once per process (at most two here)
    assert "Traceback" not in log


def test_a_strict_start_up_check_stops_gunicorn_with_the_reason(serve, tmp_path):
    sqlite3.connect(tmp_path / "erp.sqlite3").close()  # the list_query's table is missing
    port, log_path = serve(COMMANDS["gunicorn"])  # LOOKUP_STARTUP_CHECK defaults to strict
    process_log = log_path.read_text()
    assert _get(port, "/healthz")[0] == 0, process_log
    assert "lookup service: configuration error: " in process_log and "backend 'erp'" in process_log
    assert "Worker failed to boot" in process_log


@pytest.mark.parametrize("path", ["gunicorn.conf.py", "config/gunicorn.conf.py"])
def test_the_gunicorn_configuration_holds_only_gunicorn_settings(path):
    settings = runpy.run_path(str(ROOT / path))
    hooks = [name for name, value in settings.items() if callable(value) and not name.startswith("__")]
    assert hooks == [], f"server hooks in the gunicorn configuration: {hooks}"
    assert settings["worker_class"] == "config.balanced_worker.BalancedThreadWorker"


def test_a_plain_gunicorn_start_runs_the_projects_worker(serve, tmp_path):
    """`gunicorn wsgi:app` without --config reads ./gunicorn.conf.py: the worker that answers the
    parser's errors in JSON and the masking logger are in place, as under the Procfile."""
    _fill_source(tmp_path / "erp.sqlite3")
    port, log_path = serve(COMMANDS["gunicorn"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /Lookup?phoneNumber=41215522000 HTTP/9.9\r\nHost: a\r\n\r\n")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"application/json" in answer and b'"error"' in answer, answer
    assert b"<html" not in answer.lower()
    assert "41215522000" not in log_path.read_text()


def test_a_carddav_mirror_answers_the_first_lookup_live_or_synced(serve, tmp_path):
    from tests.servers.radicale import RadicaleServer

    with RadicaleServer(tmp_path / "radicale", {"alice": "alice-secret"}) as radicale:
        book = radicale.create_addressbook("contacts", "alice")
        radicale.put_card(book, "anna.vcf", "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:anna\r\nFN:Anna Muster\r\n"
                          "TEL;TYPE=work:021 552 20 00\r\nEND:VCARD\r\n", "alice")
        (tmp_path / "lookup.toml").write_text(f"""
[[tenant]]
name = "acme"
tokens = ["{TOKEN}"]
  [[tenant.backend]]
  name = "book"
  type = "carddav"
  mode = "mirror"
  url = "{book}"
  username = "alice"
  password = "${{BOOK_PASSWORD}}"
""")
        port, log_path = serve(COMMANDS["gunicorn-config"], BOOK_PASSWORD="alice-secret")
        # whether the sync has finished or not yet: the contact, never an empty answer
        assert [c["name"] for c in _lookup(port)] == ["Anna Muster"], log_path.read_text()
        stop_at = time.monotonic() + 20
        while _get(port, "/readyz")[0] != 200:
            assert time.monotonic() < stop_at, log_path.read_text()
            time.sleep(0.1)
        assert _metric(port, 'lookup_requests_total{outcome="partial') == 0
        assert "alice-secret" not in log_path.read_text()


def test_loaded_in_process_the_app_checks_nothing_at_creation(make_app):
    from config.settings import ConfigError
    from lookup_service.startup import serving_process

    assert serving_process() is None  # pytest is no server: nothing starts before a request
    with pytest.raises(ConfigError, match="LOOKUP_STARTUP_CHECK: 'sometimes' is not one of strict, warn, off"):
        make_app(LOOKUP_STARTUP_CHECK="sometimes")
