"""The embedded directory on PostgreSQL (DATABASE_URL): same answers as SQLite, shared by processes.

Runs against the real PostgreSQL server of tests/servers/postgres.py, one fresh database per test.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from config.settings import ConfigError, load_settings
from crm_backends import pg_store, phone_index
from crm_backends.contact_store import ContactStore
from crm_backends.directory_import import import_file
from crm_backends.pg_store import PgContactStore, libpq_url, schema_name
from lookup_core.errors import BackendUnavailable
from lookup_core.phone import parse_number
from lookup_core.types import CallRecord, Contact, Message, MessageLog
from lookup_service import create_app
from tests.conftest import HEADERS, TOKEN, write_csv
from tests.servers import free_port, wait_until
from tests.servers.lookup_process import procfile_command
from tests.servers.postgres import PASSWORD, Postgres, postgres_server
from tests.test_phone_index import POOL, _contacts, _fill

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(120)

CSV = """id;name;company;phone;mobile;email
ann;Ann Muster;Acme;+41 21 552 20 00;;ann@acme.example
ben;Ben Keller;Acme;+41 21 552 20 00 ext. 12;+41 79 123 45 67;
cleo;Cleo Zürcher;;+41 21 552 20 00;;
reception;Reception;Acme;201;;
emile;Émile;;+41 44 668 18 00;;
"""


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    with postgres_server() as server:
        yield server


def paas_url(pg: Postgres) -> str:
    """A fresh database, its URL spelled as a PaaS add-on spells it."""
    name = "t_" + uuid.uuid4().hex[:12]
    pg.create_database(name)
    return f"postgres://lookup:{PASSWORD}@127.0.0.1:{pg.port}/{name}"


StoreFactory = Callable[..., object]


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request, tmp_path) -> Iterator[StoreFactory]:
    """Opens stores on one directory (SQLite file or PostgreSQL database); each call is another
    process's view of it, with its own instance folder."""
    opened = []
    url = paas_url(request.getfixturevalue("pg")) if request.param == "postgres" else None

    def open_(phone_index: bool = False, instance: str = "a"):
        if url:
            store = PgContactStore(url, "directory_default_directory", "CH", phone_index=phone_index,
                                   instance_dir=str(tmp_path / instance))
        else:
            store = ContactStore(str(tmp_path / "directory.sqlite3"), "CH", phone_index=phone_index)
        opened.append(store)
        return store

    open_.kind = request.param
    yield open_
    for store in opened:
        store.close()


def ids(store, number: str, limit: int = 5) -> list[tuple[str, bool]]:
    return [(c.id, c.exact) for c in store.lookup(parse_number(number, "CH"), limit)]


# --- the same semantics on both stores ------------------------------------------------------------

def test_import_and_lookup(open_store, tmp_path):
    store = open_store()
    report = import_file(store, write_csv(tmp_path / "c.csv", CSV))
    assert report.imported == 5 and report.problems == []
    # exact matches first (ties by name in byte order: "Ann" < "Cleo"), the extension's owner after
    assert ids(store, "021 552 20 00") == [("ann", True), ("cleo", True), ("ben", False)]
    assert ids(store, "021 552 20 00", limit=1) == [("ann", True)]
    assert ids(store, "201") == [("reception", True)]  # a short number matches only itself
    assert ids(store, "0215522201") == []
    assert ids(store, "+41 79 123 45 67") == [("ben", True)]
    [emile] = store.lookup(parse_number("044 668 18 00", "CH"), 5)
    assert (emile.name, emile.custom_data) == ("Émile", {})
    [ann] = store.lookup(parse_number("021 552 20 00", "CH"), 1)
    assert (ann.company, ann.email) == ("Acme", "ann@acme.example")
    assert store.stats() == {"contacts": 5, "phone_numbers": 6, "calls": 0}


def test_reimport_is_idempotent_and_updates(open_store, tmp_path):
    store = open_store()
    path = write_csv(tmp_path / "c.csv", CSV)
    import_file(store, path)
    import_file(store, path)
    assert store.stats() == {"contacts": 5, "phone_numbers": 6, "calls": 0}
    assert ids(store, "021 552 20 00") == [("ann", True), ("cleo", True), ("ben", False)]
    import_file(store, write_csv(tmp_path / "d.csv", "id;name;phone\ncleo;Cleo Zürcher;+41 44 668 18 00\n"))
    assert ids(store, "021 552 20 00") == [("ann", True), ("ben", False)]  # her old number went
    assert ids(store, "044 668 18 00") == [("cleo", True), ("emile", True)]
    assert store.delete(["cleo", "nobody"]) == 1
    assert store.contact_ids() == {"ann", "ben", "reception", "emile"}


def test_call_records_rank_and_are_kept_once(open_store, tmp_path):
    store = open_store()
    import_file(store, write_csv(tmp_path / "c.csv", CSV))
    call = CallRecord(contact_id="cleo", direction="incoming", started=datetime(2026, 11, 1, tzinfo=UTC),
                      answered=datetime(2026, 11, 1, 0, 0, 5, tzinfo=UTC),
                      ended=datetime(2026, 11, 1, 0, 5, tzinfo=UTC), key="k1", originator_number="41215522000")
    assert store.record_call(call, "call-1") == "call-1"
    assert store.record_call(call, "call-other") == "call-1"  # the same call again: the first record
    assert ids(store, "021 552 20 00") == [("cleo", True), ("ann", True), ("ben", False)]
    [record] = store.calls()
    assert record["id"] == "call-1" and record["contact_id"] == "cleo" and record["duration"] == 295
    assert record["ended"] == "2026-11-01T00:05:00+00:00" and store.calls("ann") == []
    assert store.has_contact("cleo") and not store.has_contact("nobody")


def test_a_later_post_updates_the_call_and_digests_keep_one_record(open_store, tmp_path):
    store = open_store()
    import_file(store, write_csv(tmp_path / "c.csv", CSV))
    ringing = CallRecord(contact_id="cleo", direction="incoming", started=datetime(2026, 11, 1, tzinfo=UTC), key="k2")
    assert store.record_call(ringing, "call-2") == "call-2"
    ended = ringing.merged(CallRecord(contact_id="cleo", direction="incoming", key="k2", note="call back Monday",
                                      answered=datetime(2026, 11, 1, 0, 0, 5, tzinfo=UTC),
                                      ended=datetime(2026, 11, 1, 0, 1, 5, tzinfo=UTC)))
    assert store.record_call(ended, "call-2") == "call-2"
    [record] = store.calls()
    assert (record["status"], record["duration"], record["note"]) == ("answered", 60, "call back Monday")
    first = Message(id="m1", time=datetime(2026, 11, 1, 9, tzinfo=UTC), direction="incoming",
                    from_number="+41445001020", from_name="Cleo", text="hello")
    digest = MessageLog(contact_id="cleo", kind="SMS", conversation_id="c", day="2026-11-01", zone="UTC",
                        messages=(first,), key="d1")
    assert store.record_message(digest, "msg-1") == "msg-1"
    later = digest.with_message(Message(id="m2", time=datetime(2026, 11, 1, 10, tzinfo=UTC), direction="outgoing",
                                        to_number="+41445001020", to_name="Cleo", text="hi Cleo"))
    assert store.record_message(later, "msg-other") == "msg-1"  # the same digest: its record, updated
    [message] = store.messages("cleo")
    assert message["message_count"] == 2 and message["body"].endswith("10:00 \u2192 Cleo: hi Cleo")
    assert message["title"] == "SMS conversation with Cleo \u2013 2026-11-01"


def test_sqlite_and_postgres_give_the_same_answers(pg, tmp_path):
    """Random contacts sharing few numbers, ties in activity and names, extensions, calls: every
    key, every limit, the same contacts in the same order from both stores and from the snapshot."""
    sqlite = ContactStore(str(tmp_path / "directory.sqlite3"))
    postgres = PgContactStore(paas_url(pg), "d", instance_dir=str(tmp_path / "i"))
    try:
        contacts = _contacts(seed=11, count=400)
        batch = contacts[:250] + [Contact(id="c3", name="Twice", phones=[POOL[0]])] + contacts[250:]
        for store in (sqlite, postgres):
            _fill(store, batch)
            _fill(store, contacts[100:150])  # re-imported: same places
            store.delete(["c7", "c8"])
            for n, contact_id in enumerate(("c10", "c20", "c30")):
                started = datetime(2026, 11, 1, n, tzinfo=UTC)
                store.record_call(CallRecord(contact_id=contact_id, direction="outgoing", started=started,
                                             ended=started, key=f"k{n}"), f"call-{n}")
        keys = [parse_number(p, "CH") for p in POOL]
        for number in keys:
            for limit in (1, 3, 5, 50):
                assert postgres.lookup(number, limit) == sqlite.lookup(number, limit), (number.key, limit)
        assert postgres.stats() == sqlite.stats()
        strip = [{k: v for k, v in r.items() if k != "created_at"} for r in sqlite.calls()]
        assert [{k: v for k, v in r.items() if k != "created_at"} for r in postgres.calls()] == strip
        assert postgres.build_index().built
        assert sqlite.build_index().built
        assert Path(sqlite.path + ".index").read_bytes()[40:] == Path(postgres.path + ".index").read_bytes()[40:]
    finally:
        sqlite.close()
        postgres.close()


# --- PostgreSQL: generations, snapshot, migrations, bounds ---------------------------------------

@pytest.fixture
def quick_polls(monkeypatch):
    started: list[str] = []
    monkeypatch.setattr(pg_store, "POLL_EVERY_S", 0.05)
    monkeypatch.setattr(phone_index, "CHECK_EVERY_S", 0.0)
    monkeypatch.setattr(phone_index, "REBUILD_EVERY_S", 0.0)
    monkeypatch.setattr(PgContactStore, "_start_builder", lambda store: started.append(store.path))
    return started


def test_a_write_by_one_process_reaches_the_others_snapshot(pg, tmp_path, quick_polls):
    url = paas_url(pg)
    writer = PgContactStore(url, "d", instance_dir=str(tmp_path / "one-off"))
    reader = PgContactStore(url, "d", phone_index=True, instance_dir=str(tmp_path / "web"))
    try:
        import_file(writer, write_csv(tmp_path / "c.csv", CSV))
        assert reader.snapshot.find(parse_number("201", "CH").key, 5) is None  # no snapshot yet
        assert reader.build_index().built
        assert reader.snapshot_state().startswith("current")
        assert [r[0] for r in reader.snapshot.find(parse_number("201", "CH").key, 5)] == ["reception"]
        before = reader.generation()
        _fill(writer, [Contact(id="new", name="New", phones=["201"])])
        assert wait_until(lambda: reader.generation() > before, timeout=10)  # the shared counter, polled
        assert reader.snapshot.find(parse_number("201", "CH").key, 5) is None  # stale: not trusted
        assert ids(reader, "201") == [("new", True), ("reception", True)]  # from PostgreSQL
        assert set(quick_polls) == {reader.path}  # and a rebuild was asked for
        reader.build_index()
        assert [r[0] for r in reader.snapshot.find(parse_number("201", "CH").key, 5)] == ["new", "reception"]
    finally:
        writer.close()
        reader.close()


def test_the_builder_process_reads_postgresql(pg, tmp_path):
    url = paas_url(pg)
    store = PgContactStore(url, "d", instance_dir=str(tmp_path))
    try:
        import_file(store, write_csv(tmp_path / "c.csv", CSV))
        process = store._start_builder()
        assert process.wait(60) == 0
        assert store.snapshot_state().startswith("current")
        assert url not in " ".join(process.args)  # the URL (and its password) is not on a command line
    finally:
        store.close()


def test_migrations_are_numbered_and_run_once_by_concurrent_starters(pg, tmp_path, monkeypatch):
    url = paas_url(pg)
    stores: list[PgContactStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            stores.append(PgContactStore(url, "d", instance_dir=str(tmp_path)))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and len(stores) == 4
    with psycopg.connect(libpq_url(url)) as conn:
        versions = [(version,) for version, _ in pg_store.MIGRATIONS]
        assert conn.execute("SELECT version FROM d.schema_version ORDER BY 1").fetchall() == versions
    step = len(versions) + 1
    monkeypatch.setattr(pg_store, "MIGRATIONS", [*pg_store.MIGRATIONS,
                                                 (step, "ALTER TABLE {s}.contacts ADD COLUMN title TEXT")])
    stores.append(PgContactStore(url, "d", instance_dir=str(tmp_path)))
    stores.append(PgContactStore(url, "d", instance_dir=str(tmp_path)))
    with psycopg.connect(libpq_url(url)) as conn:
        assert conn.execute("SELECT version FROM d.schema_version ORDER BY 1").fetchall() == [*versions, (step,)]
    for store in stores:
        store.close()


def test_a_lookup_that_postgresql_cannot_answer_in_time_is_a_backend_failure(pg, tmp_path):
    url = paas_url(pg)
    store = PgContactStore(url, "d", instance_dir=str(tmp_path), lookup_timeout_s=0.2)
    try:
        import_file(store, write_csv(tmp_path / "c.csv", CSV))
        with psycopg.connect(libpq_url(url)) as blocker:
            blocker.execute("LOCK TABLE d.phones IN ACCESS EXCLUSIVE MODE")  # held until the rollback
            with pytest.raises(BackendUnavailable, match="statement timeout"):
                store.lookup(parse_number("201", "CH"), 5)
            blocker.rollback()
        assert ids(store, "201") == [("reception", True)]
    finally:
        store.close()


def test_schema_names_are_valid_and_distinct():
    assert schema_name("default", "directory") == "directory_default_directory"
    names = {schema_name(t, b) for t, b in [("a-b", "d"), ("a_b", "d"), ("A_b", "d"), ("x" * 80, "d"), ("x" * 81, "d")]}
    assert len(names) == 5 and all(re.fullmatch(r"[a-z0-9_]{1,63}", n) for n in names)


def test_import_from_standard_input_recognizes_vcards(make_app):
    vcard = (ROOT / "tests" / "data" / "contacts-v4.vcf").read_bytes()
    app = make_app()
    result = app.test_cli_runner().invoke(args=["directory", "import", "-"], input=vcard)
    assert result.exit_code == 0 and "imported" in result.output, result.output
    found = app.test_client().get("/Lookup?PhoneNumber=41313104040", headers=HEADERS).get_json()
    assert found[0]["name"] == "Frieda Huber"


def test_settings_accept_paas_urls_and_hide_the_password(pg):
    settings = load_settings({"LOOKUP_TOKENS": TOKEN, "DATABASE_URL": "postgres://u:s3cret-pw@db.example:5432/x"})
    assert settings.database_url == "postgres://u:s3cret-pw@db.example:5432/x"
    assert "s3cret-pw" in settings.secrets()
    assert load_settings({"LOOKUP_TOKENS": TOKEN, "DATABASE_URL": "postgresql://u@h/x"}).database_url
    with pytest.raises(ConfigError, match="DATABASE_URL: expected postgres://"):
        load_settings({"LOOKUP_TOKENS": TOKEN, "DATABASE_URL": "mysql://u:p@h/x"})


def test_an_unreachable_database_stops_the_start_in_one_line(tmp_path):
    url = f"postgres://lookup:{PASSWORD}@127.0.0.1:{free_port()}/nothing"
    with pytest.raises(ConfigError) as failure:
        create_app({"LOOKUP_TOKENS": TOKEN, "DATABASE_URL": url, "LOOKUP_INSTANCE_DIR": str(tmp_path)})
    message = str(failure.value)
    assert "key 'database_url'" in message and "PostgreSQL not usable" in message
    assert PASSWORD not in message and "\n" not in message


def test_the_app_and_its_cli_use_postgresql(pg, tmp_path):
    url = paas_url(pg)
    app = create_app({"LOOKUP_TOKENS": TOKEN, "DATABASE_URL": url, "LOOKUP_INSTANCE_DIR": str(tmp_path / "i"),
                      "LOOKUP_STATE_DB": str(tmp_path / "state.sqlite3"), "LOOKUP_PHONE_INDEX": "0"})
    try:
        runner = app.test_cli_runner()
        result = runner.invoke(args=["directory", "import", "-"], input=CSV.encode())
        assert result.exit_code == 0 and "imported 5 contacts" in result.output, result.output
        body = app.test_client().get("/Lookup?PhoneNumber=201", headers=HEADERS).get_json()
        assert [c["id"] for c in body] == ["directory:reception"]
        stats = runner.invoke(args=["directory", "stats"]).output
        assert "contacts: 5" in stats
        assert "phone index: 4 numbers" in runner.invoke(args=["directory", "index"]).output
        checked = runner.invoke(args=["config", "check", "--no-connect"]).output
        assert "database_url = '***'" in checked and PASSWORD not in checked
        assert not os.path.exists(tmp_path / "directory.sqlite3") and not os.path.exists("instance/directory.sqlite3")
    finally:
        app.extensions["lookup"].close()


# --- two service processes, one database ---------------------------------------------------------


def _environment(url: str, instance: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKUP_") and k != "REDIS_URL"}
    env.update({"DATABASE_URL": url, "LOOKUP_TOKENS": TOKEN, "LOOKUP_INSTANCE_DIR": str(instance),
                "LOOKUP_STATE_DB": str(instance / "state.sqlite3"), "LOOKUP_ACCESS_LOG": "0",
                "WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "2", **extra})
    return env


def _request(port: int, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {**HEADERS, "Content-Type": "application/json"}
        connection.request(method, path, json.dumps(body) if body is not None else None, headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


@pytest.fixture
def two_services(pg, tmp_path) -> Iterator[tuple[str, list[int]]]:
    """Two gunicorn services (as the Procfile starts them) on one database, each with its own
    instance folder: two dynos."""
    url = paas_url(pg)
    processes: list[subprocess.Popen] = []
    ports: list[int] = []
    try:
        for name in ("dyno1", "dyno2"):
            port = free_port()
            instance = tmp_path / name
            instance.mkdir()
            log = open(tmp_path / f"{name}.log", "ab")  # noqa: SIM115 - closed once the process has it
            processes.append(subprocess.Popen(procfile_command(), cwd=ROOT, env=_environment(url, instance,
                             PORT=str(port)), stdout=log, stderr=log, start_new_session=True))
            log.close()
            ports.append(port)
        for process, port, name in zip(processes, ports, ("dyno1", "dyno2"), strict=True):
            def up(process=process, port=port, name=name) -> bool:
                assert process.poll() is None, (tmp_path / f"{name}.log").read_text()
                try:
                    return _request(port, "GET", "/healthz")[0] == 200
                except OSError:
                    return False
            assert wait_until(up, timeout=30), (tmp_path / f"{name}.log").read_text()
        yield url, ports
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(15)


def _one_off(url: str, instance: Path, *args: str, stdin: bytes | None = None) -> str:
    """``heroku run flask --app wsgi ...``: another process, another instance folder."""
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args], cwd=ROOT,
                            env=_environment(url, instance), input=stdin, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.decode()


def test_two_services_share_the_directory_and_its_call_records(two_services, tmp_path):
    url, ports = two_services
    for port in ports:  # nothing yet; a no-match each service caches under the old generation
        assert _request(port, "GET", "/Lookup?PhoneNumber=41215522000") == (200, [])
    output = _one_off(url, tmp_path / "one-off", "directory", "import", "-", stdin=CSV.encode())
    assert "imported 5 contacts" in output

    def names(port: int) -> list[str]:
        status, body = _request(port, "GET", "/Lookup?PhoneNumber=41215522000")
        assert status == 200
        return [c["name"] for c in body]

    expected = ["Ann Muster", "Cleo Zürcher", "Ben Keller"]
    for port in ports:
        assert wait_until(lambda port=port: names(port) == expected, timeout=30), names(port)
    for dyno, port in zip(("dyno1", "dyno2"), ports, strict=True):  # each built its snapshot from the database
        assert wait_until(lambda dyno=dyno, port=port: names(port) == expected
                          and any((tmp_path / dyno).glob("*.pg.index")), timeout=30)
    # an update reaches both as well, whether they answer from their snapshot or not yet
    _one_off(url, tmp_path / "one-off", "directory", "import", "-",
             stdin=b"id;name;phone\nann;Ann Renamed;+41 21 552 20 00\n")
    renamed = ["Ann Renamed", "Cleo Zürcher", "Ben Keller"]
    for port in ports:
        assert wait_until(lambda port=port: names(port) == renamed, timeout=30), names(port)

    # a call logged through the first service reorders the second's answer
    flow = {"inputs": {"contactCrmId": "directory:cleo", "direction": "incoming", "originatorNumber": "41215522000",
                       "destinationNumber": "41445001020", "startedTime": "2026-11-21T09:00:00Z",
                       "answeredTime": "2026-11-21T09:00:05Z", "endedTime": "2026-11-21T09:03:20Z"}}
    status, first = _request(ports[0], "POST", "/CallFlow", flow)
    assert status == 200, first
    reordered = ["Cleo Zürcher", "Ann Renamed", "Ben Keller"]
    assert wait_until(lambda: names(ports[1]) == reordered, timeout=30), names(ports[1])
    # the same CallFlow posted to the other service: the directory keeps one record
    status, second = _request(ports[1], "POST", "/CallFlow", flow)
    assert status == 200 and second["id"] == first["id"]
    stats = _one_off(url, tmp_path / "one-off", "directory", "stats")
    assert "contacts: 5" in stats and "calls: 1" in stats


def test_a_database_outage_is_a_clear_answer_and_the_service_recovers(pg, tmp_path):
    url = paas_url(pg)
    database = url.rsplit("/", 1)[1]
    app = create_app({"LOOKUP_TOKENS": TOKEN, "DATABASE_URL": url, "LOOKUP_INSTANCE_DIR": str(tmp_path / "i"),
                      "LOOKUP_STATE_DB": str(tmp_path / "state.sqlite3"), "LOOKUP_PHONE_INDEX": "0",
                      "LOOKUP_CACHE_TTL": "0", "LOOKUP_NEGATIVE_CACHE_TTL": "0"})
    client = app.test_client()
    flow = {"inputs": {"contactCrmId": "directory:ann", "direction": "outgoing", "originatorNumber": "41445001020",
                       "destinationNumber": "41215522000", "startedTime": "2026-11-21T09:00:00Z",
                       "endedTime": "2026-11-21T09:03:20Z"}}
    try:
        app.test_cli_runner().invoke(args=["directory", "import", "-"], input=CSV.encode())
        with psycopg.connect(pg.dsn(), autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))
            try:
                response = client.post("/CallFlow", json=flow, headers=HEADERS)
                assert response.status_code == 503 and response.get_json()["error"], response.data
                lookup = client.get("/Lookup?PhoneNumber=201", headers=HEADERS)
                assert lookup.status_code == 200 and lookup.get_json() == []  # the backend did not answer
                assert PASSWORD.encode() not in response.data + lookup.data
            finally:
                admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        assert client.post("/CallFlow", json=flow, headers=HEADERS).status_code == 200
        body = client.get("/Lookup?PhoneNumber=201", headers=HEADERS).get_json()
        assert [c["id"] for c in body] == ["directory:reception"]
    finally:
        app.extensions["lookup"].close()


def test_a_forked_process_polls_and_connects_on_its_own(pg, tmp_path, monkeypatch):
    """As gunicorn forks a worker from a master that built the app (preload): the child's store
    neither uses the parent's connections nor relies on the parent's poller thread."""
    monkeypatch.setattr(pg_store, "POLL_EVERY_S", 0.05)
    url = paas_url(pg)
    store = PgContactStore(url, "d", instance_dir=str(tmp_path))
    writer = PgContactStore(url, "d", instance_dir=str(tmp_path / "w"))
    try:
        import_file(store, write_csv(tmp_path / "c.csv", CSV))
        before = store.generation()  # the parent's poller runs
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child, reports through the pipe
            code = 1
            try:
                _fill(writer, [Contact(id="new", name="New", phones=["201"])])
                seen = wait_until(lambda: store.generation() > before, timeout=10)
                found = ids(store, "201")
                os.write(write_end, json.dumps([seen, found]).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        _, status = os.waitpid(child, 0)
        reported = os.read(read_end, 4096)
        os.close(read_end)
        assert status == 0 and json.loads(reported) == [True, [["new", True], ["reception", True]]]
        assert ids(store, "201") == [("new", True), ("reception", True)]  # the parent's pool still works
    finally:
        store.close()
        writer.close()


# --- CreateContact on the directory, both stores -----------------------------------------------------
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_create_contact_writes_one_contact_that_the_next_lookup_finds(pg, tmp_path, kind):
    from crm_backends.directory import DirectoryBackend
    from crm_backends.registry import load_spec
    from lookup_core.types import NewContact

    table = {"name": "dir", "type": "directory", "path": str(tmp_path / "d.sqlite3")}
    if kind == "postgres":
        table["database_url"] = paas_url(pg)
    backend = DirectoryBackend(load_spec(table, "t", "test", ("CallFlow",), instance_dir=str(tmp_path)))
    try:
        number = parse_number("41791234567", "CH")
        assert backend.lookup(number, 5) == []
        before = backend.data_version()
        new = NewContact(number="+41791234567", name="Alexa Holiday", company="Holiday AG", key="k" * 64)
        first = backend.create_contact(new)
        assert backend.create_contact(new) == first  # an attempt repeated after a lost answer: the same row
        [found] = backend.lookup(number, 5)
        assert (found.id, found.name, found.company) == (first.id, "Alexa Holiday", "Holiday AG")
        assert backend.data_version() != before  # cached answers of this directory are stale at once
    finally:
        backend.close()


def test_a_directory_of_schema_version_2_migrates_and_its_contacts_answer_unknown(pg, tmp_path, monkeypatch):
    url = paas_url(pg)
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        with monkeypatch.context() as patch:
            patch.setattr(pg_store, "MIGRATIONS", [m for m in pg_store.MIGRATIONS if m[0] <= 2])
            assert pg_store.migrate(conn, "d") == 2
        conn.execute("""INSERT INTO d.contacts (id, name, phones, updated_at, words)
                        VALUES ('old', 'Olga Alt', '["+41 79 555 10 20"]', 1.0, ' olga alt | #41795551020')""")
        conn.execute("INSERT INTO d.phones (key, contact_pk) SELECT '+41795551020', pk FROM d.contacts")
    store = PgContactStore(url, "d", instance_dir=str(tmp_path))
    try:
        with psycopg.connect(libpq_url(url)) as conn:
            assert conn.execute("SELECT MAX(version) FROM d.schema_version").fetchone()[0] == pg_store.MIGRATIONS[-1][0]
        old = store.get("old")
        assert old.phones == ["+41 79 555 10 20"] and old.phone_types == {} and old.job_title is None
        typed = Contact(id="old", name="Olga Alt", phones=["+41 79 555 10 20"],
                        phone_types={"+41 79 555 10 20": "mobile"}, job_title="Buyer")
        store.upsert([(typed, store.normalize_phones(typed.phones))])
        [listed] = store.listing(0, 10, 0.0)[0]
        assert listed.phone_types == {"+41 79 555 10 20": "mobile"} and listed.job_title == "Buyer"
    finally:
        store.close()
