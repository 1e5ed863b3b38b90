"""Mirror mode through the service: the sync command, its status in config check and /metrics,
lookups in any format from the local copy, and a source that is down still answering."""

from __future__ import annotations

import sqlite3

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
