"""Mirror mode through the service: the sync command, its status in config check and /metrics,
lookups in any format from the local copy, and a source that is down still answering."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time

import pytest

HEADERS = {"X-Execution-Token": "acme-token-1234"}


@pytest.fixture
def mirrored(tmp_path, make_app):
    source = tmp_path / "erp.sqlite3"
    with sqlite3.connect(source) as conn:
        conn.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, company TEXT, phone TEXT)")
        conn.executemany("INSERT INTO people VALUES (?, ?, ?, ?)", [
            (1, "Anna Muster", "Muster AG", "(021) 552 20 00"),
            (2, "Beat Keller", "Keller GmbH", "044/668.18.00"),
        ])
    config = tmp_path / "lookup.toml"
    config.write_text(f"""
[[tenant]]
name = "acme"
tokens = ["acme-token-1234"]
  [[tenant.backend]]
  name = "erp"
  type = "sql"
  mode = "mirror"
  url = "sqlite:///{source}"
  list_query = "SELECT id, name, company, phone FROM people"
  [tenant.backend.fields]
  id = "id"
  name = "name"
  company = "company"
  phones = ["phone"]
""")
    app = make_app(LOOKUP_CONFIG=str(config), LOOKUP_METRICS_TOKEN="metrics-token-1")
    return app, source


def lookup(app, number):
    return [c["name"] for c in app.test_client().get(f"/Lookup?PhoneNumber={number}", headers=HEADERS).get_json()]


def test_sync_command_fills_the_mirror_and_reports_its_status(mirrored):
    app, source = mirrored
    assert lookup(app, "41215522000") == []  # nothing synced yet
    runner = app.test_cli_runner()
    result = runner.invoke(args=["sync", "acme", "erp"])
    assert result.exit_code == 0, result.output
    assert "acme/erp:" in result.output and "ok (full, 2 written, 0 deleted" in result.output
    assert lookup(app, "41215522000") == ["Anna Muster"]  # stored as (021) 552 20 00
    assert lookup(app, "0446681800") == ["Beat Keller"]  # stored as 044/668.18.00
    check = runner.invoke(args=["config", "check", "--no-connect"])
    assert "last sync: " in check.output and "ok (full, 2 written" in check.output
    metrics = app.test_client().get("/metrics", headers={"Authorization": "Bearer metrics-token-1"}).get_data(True)
    assert 'lookup_mirror_last_sync_success{backend="erp",tenant="acme"} 1.0' in metrics
    assert 'lookup_mirror_contacts{backend="erp",tenant="acme"} 2.0' in metrics


def test_changes_and_deletions_at_the_source_reach_the_mirror(mirrored):
    app, source = mirrored
    runner = app.test_cli_runner()
    runner.invoke(args=["sync"])
    with sqlite3.connect(source) as conn:
        conn.execute("DELETE FROM people WHERE id = 2")
        conn.execute("UPDATE people SET name = 'Anna Muster-Frei' WHERE id = 1")
    result = runner.invoke(args=["sync", "--full"])
    assert "1 written" not in result.output or "1 deleted" in result.output
    assert lookup(app, "41215522000") == ["Anna Muster-Frei"]
    assert lookup(app, "41446681800") == []


def test_a_source_that_is_down_still_answers_from_the_last_mirror(mirrored):
    app, source = mirrored
    runner = app.test_cli_runner()
    runner.invoke(args=["sync"])
    with sqlite3.connect(source) as conn:  # the source now fails every listing
        conn.execute("ALTER TABLE people RENAME TO people_gone")
    result = runner.invoke(args=["sync", "--full"])
    assert result.exit_code == 1 and "FAILED" in result.output
    assert lookup(app, "41215522000") == ["Anna Muster"]
    metrics = app.test_client().get("/metrics", headers={"Authorization": "Bearer metrics-token-1"}).get_data(True)
    assert 'lookup_mirror_last_sync_success{backend="erp",tenant="acme"} 0.0' in metrics


READY_HEADERS = {"Authorization": "Bearer metrics-token-1"}


def _mirror(app):
    service = app.extensions["lookup"]
    return service.mirrors()[0][1]


def test_readyz_is_503_until_the_first_sync_then_200(mirrored):
    app, _source = mirrored
    client = app.test_client()
    response = client.get("/readyz")  # no token needed
    assert response.status_code == 503
    body = response.get_json()
    assert body["error"] == "not_ready" and "acme" in body["message"]
    assert body["not_ready"] == [{"tenant": "acme", "backend": "erp", "reason": "mirror: first sync not finished"}]
    assert client.get("/healthz").status_code == 200  # liveness is not readiness
    assert app.test_cli_runner().invoke(args=["sync"]).exit_code == 0
    response = client.get("/readyz")
    assert response.status_code == 200 and response.get_json() == {"status": "ready", "degraded": []}


def test_a_failed_first_sync_keeps_it_not_ready_without_telling_the_error(mirrored):
    app, source = mirrored
    with sqlite3.connect(source) as conn:
        conn.execute("ALTER TABLE people RENAME TO people_gone")
    assert app.test_cli_runner().invoke(args=["sync"]).exit_code == 1
    body = app.test_client().get("/readyz").get_json()
    assert body["not_ready"][0]["reason"] == "mirror: first sync failed, retrying"
    assert "people" not in json.dumps(body)


def test_a_stale_mirror_is_reported_but_still_answers(mirrored):
    app, _source = mirrored
    app.test_cli_runner().invoke(args=["sync"])
    mirror = _mirror(app)
    assert mirror.max_staleness == 3 * 900  # 3 x the default sync_interval
    mirror.store.set_meta("last_success", repr(time.time() - 3 * 900 - 60))  # as if syncs had failed since
    response = app.test_client().get("/readyz")
    assert response.status_code == 200  # it can answer: taking it out of rotation would answer nothing
    degraded = response.get_json()["degraded"]
    assert len(degraded) == 1 and degraded[0]["backend"] == "erp"
    assert degraded[0]["reason"].startswith("mirror: stale: last successful sync 2760s ago (max_staleness 2700s)")
    assert lookup(app, "41215522000") == ["Anna Muster"]
    metrics = app.test_client().get("/metrics", headers=READY_HEADERS).get_data(True)
    assert 'lookup_mirror_stale{backend="erp",tenant="acme"} 1.0' in metrics
    assert 'lookup_mirror_last_success_timestamp_seconds{backend="erp",tenant="acme"}' in metrics


def test_max_staleness_is_configurable_per_backend(tmp_path, make_app, mirrored):
    app, _source = mirrored
    config = tmp_path / "lookup.toml"
    config.write_text(config.read_text().replace('mode = "mirror"', 'mode = "mirror"\n  max_staleness = 60'))
    other = make_app(LOOKUP_CONFIG=str(config))
    mirror = _mirror(other)
    assert mirror.max_staleness == 60
    other.test_cli_runner().invoke(args=["sync"])
    assert not mirror.sync_state()["stale"]
    assert mirror.sync_state(now=time.time() + 61)["stale"]


def test_a_mirror_not_synced_answers_live_where_the_source_can(tmp_path, make_app, mirrored):
    _app, _source = mirrored
    config = tmp_path / "lookup.toml"
    config.write_text(config.read_text().replace(
        'list_query = ', "query = \"SELECT id, name, company, phone FROM people WHERE replace(replace(replace("
        "phone, ' ', ''), '(', ''), ')', '') LIKE '%' || :nsn\"\n  list_query = "))
    app = make_app(LOOKUP_CONFIG=str(config), LOOKUP_METRICS_TOKEN="metrics-token-1")
    assert lookup(app, "41215522000") == ["Anna Muster"]  # asked live: the copy is empty
    assert app.test_client().get("/readyz").status_code == 503  # but the mirror is still not ready
    assert _mirror(app).store.stats()["contacts"] == 0


def test_a_sync_skipped_for_another_process_records_nothing(mirrored):
    app, _source = mirrored
    mirror = _mirror(app)
    with open(mirror.store_path + ".lock", "w") as held:  # another process is syncing
        fcntl.flock(held, fcntl.LOCK_EX)
        outcome = mirror.sync_now()
    assert outcome.skipped
    assert mirror.last_sync() is None and mirror.last_success() is None  # not a success of its own
    assert not mirror.sync_state()["ready"]


def test_any_other_server_starts_the_syncs_at_the_first_request(mirrored):
    app, _source = mirrored
    client = app.test_client()
    client.get("/healthz")
    assert not [t for t in threading.enumerate() if t.name == "sync-erp"]  # tests drive syncs themselves
    app.testing = False  # as under a server the app does not recognise: nothing started at creation
    try:
        assert client.get("/healthz").status_code == 200
        stop_at = time.monotonic() + 10
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < stop_at, "the first request did not start the mirror's sync"
            time.sleep(0.05)
        assert lookup(app, "41215522000") == ["Anna Muster"]
        assert [t for t in threading.enumerate() if t.name == "sync-erp"]
        started = app.extensions["lookup"].started_pid
        client.get("/healthz")
        assert app.extensions["lookup"].started_pid == started  # once per process
    finally:
        app.extensions["lookup"].close()


def test_a_forked_child_opens_its_own_sqlite_connections(mirrored):
    app, _source = mirrored
    service = app.extensions["lookup"]
    mirror = _mirror(app)
    ledger = service.ledger
    ledger._run("SELECT 1")  # the parent's pool holds a connection now
    parent_connection = mirror.store.conn
    pid = os.fork()
    if pid == 0:  # the child: as a gunicorn --preload worker
        ledger._run("SELECT 1")
        ok = ledger._pid == os.getpid() and mirror.store.conn is not parent_connection
        os._exit(0 if ok and mirror.last_sync() is None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert mirror.store.conn is parent_connection and ledger._pid == os.getpid()  # the parent keeps its own
