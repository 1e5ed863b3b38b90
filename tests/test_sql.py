"""The generic SQL backend against SQLite and a real PostgreSQL server started for this module."""

from __future__ import annotations

import re
import socket
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from crm_backends.base import load_options
from crm_backends.mirror import MirroredBackend
from crm_backends.sql import SqlBackend
from lookup_core.errors import (
    BackendConfigError,
    BackendUnavailable,
    ContactNotFound,
    CredentialsRejected,
    DeliveryRefused,
)
from lookup_core.phone import parse_number
from lookup_core.types import CallRecord, CrmUser, Message, MessageLog
from tests.conftest import backend_builder
from tests.servers import free_port
from tests.servers.postgres import Postgres, postgres_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    with postgres_server() as server:
        yield server


@dataclass
class Db:
    kind: str
    url: str
    engine: Engine

    def run(self, *statements: str, **params: object) -> None:
        with self.engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement), params)

    def rows(self, query: str, **params: object) -> list[tuple]:
        with self.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(query), params)]


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path) -> Iterator[Db]:
    if request.param == "sqlite":
        path = tmp_path / "erp.sqlite3"
        url = f"sqlite:///{path}"
    else:
        server = request.getfixturevalue("pg")
        url = server.create_database("t_" + uuid.uuid4().hex[:12])
    engine = create_engine(url)
    database = Db(request.param, url, engine)
    timestamp = "TEXT" if request.param == "sqlite" else "TIMESTAMP"
    database.run(
        f"""CREATE TABLE customers (
            id INTEGER PRIMARY KEY, first_name TEXT, last_name TEXT, company TEXT,
            phone TEXT, mobile TEXT, email TEXT, lang TEXT,
            updated_at {timestamp}, is_deleted INTEGER NOT NULL DEFAULT 0)"""
    )
    for row in CUSTOMERS:
        add_customer(database, *row)
    yield database
    engine.dispose()


def add_customer(db: Db, cid: int, first: str, last: str, company: str | None, phone: str | None,
                 mobile: str | None = None, updated: str | None = None, deleted: int = 0) -> None:
    updated = updated or f"2024-01-{(cid - 1) % 28 + 1:02d} 10:00:00"
    db.run(
        """INSERT INTO customers (id, first_name, last_name, company, phone, mobile, email, lang,
               updated_at, is_deleted)
           VALUES (:id, :first, :last, :company, :phone, :mobile, :email, :lang, :updated, :deleted)""",
        id=cid, first=first, last=last, company=company, phone=phone, mobile=mobile,
        email=f"{first.lower()}@example.ch", lang="fr" if cid % 2 else "de", updated=updated, deleted=deleted,
    )


# The partner's ERP stores numbers the way people typed them.
CUSTOMERS = [
    (1, "Anna", "Muster", "Muster AG", "(021) 552 20 00"),
    (2, "Bruno", "Beispiel", "Beispiel GmbH", "+41 44 668 18 00"),
    (3, "Clara", "Rossi", "Rossi SA", "0041 31 322 21 11", "079 123 45 67"),
    (4, "Dario", "Bianchi", None, "022/345.67.89"),
    # ends with the same nine digits as Anna's number: a LIKE on the tail finds it too
    (5, "Decoy", "Français", "Société Française", "+33 2 15 52 20 00"),
    (6, "Nophone", "Person", "Nowhere", None),
    (7, "Frieda", "Gone", "Deleted AG", "044 668 18 01", None, None, 1),
]

# Digits only, the same expression on SQLite and PostgreSQL.
STRIP = "REPLACE(REPLACE(REPLACE(REPLACE(REPLACE(REPLACE(REPLACE({}, ' ', ''), '(', ''), ')', ''), '-', ''), '/', ''), '.', ''), '+', '')"  # noqa: E501
COLUMNS = "id, first_name, last_name, company, phone, mobile, email, lang, updated_at, is_deleted"
NORMALIZED_QUERY = (
    f"SELECT {COLUMNS} FROM customers WHERE {STRIP.format('phone')} IN (:digits, :national, :digits00) "
    f"OR {STRIP.format('mobile')} IN (:digits, :national, :digits00) ORDER BY id"
)
LIKE_QUERY = (
    f"SELECT {COLUMNS} FROM customers WHERE {STRIP.format('phone')} LIKE '%' || :nsn "
    f"OR {STRIP.format('mobile')} LIKE '%' || :nsn ORDER BY id"
)
FIELDS = {
    "id": "id",
    "first_name": "first_name",
    "last_name": "last_name",
    "company": "company",
    "phones": ["phone", "mobile"],
    "email": "email",
    "deleted": "is_deleted",
    "custom_data": {"Language": "lang"},
}


def make_backend(db: Db | str, tmp_path, **options: object) -> SqlBackend:
    url = db if isinstance(db, str) else db.url
    raw = {"url": url, "fields": FIELDS, **options}
    if "query" not in raw and raw.get("mode") != "mirror":
        raw["query"] = NORMALIZED_QUERY
    return backend_builder(tmp_path)("sql", name="erp", **raw)


def ids(contacts) -> list[str]:
    return [c.id for c in contacts]


def lookup(backend, digits: str, limit: int = 5):
    return backend.lookup(parse_number(digits), limit)


# live lookups -------------------------------------------------------------------------------------
def test_live_finds_numbers_stored_in_every_format(db, tmp_path):
    backend = make_backend(db, tmp_path)
    backend.check()
    [anna] = lookup(backend, "41215522000")
    assert (anna.id, anna.name, anna.company) == ("1", "Anna Muster", "Muster AG")
    assert anna.email == "anna@example.ch"
    assert anna.phones == ["(021) 552 20 00"] and anna.exact is True
    assert anna.custom_data == {"Language": "fr"}
    assert ids(lookup(backend, "41446681800")) == ["2"]
    assert ids(lookup(backend, "41313222111")) == ["3"]
    [clara] = lookup(backend, "41791234567")  # her mobile
    assert clara.name == "Clara Rossi" and clara.phones == ["0041 31 322 21 11", "079 123 45 67"]
    [dario] = lookup(backend, "41223456789")
    assert dario.company is None and dario.custom_data == {"Language": "de"}
    assert lookup(backend, "41446681801") == []  # Frieda: flagged deleted in the source
    assert lookup(backend, "41999999999") == []
    backend.close()


def test_like_query_candidate_is_rechecked(db, tmp_path):
    # the loose query returns Anna and the French decoy; only Anna has the number
    raw = db.rows(LIKE_QUERY.replace(":nsn", "'215522000'"))
    assert [r[0] for r in raw] == [1, 5]
    backend = make_backend(db, tmp_path, query=LIKE_QUERY)
    assert ids(lookup(backend, "41215522000")) == ["1"]
    assert ids(lookup(backend, "33215522000")) == ["5"]
    backend.close()


def test_binds_only_the_parameters_the_query_uses(tmp_path):
    path = tmp_path / "x.sqlite3"
    path.touch()
    query = "SELECT * FROM c WHERE p = :national LIMIT :limit"
    backend = make_backend(f"sqlite:///{path}", tmp_path, query=query)
    assert backend.lookup_params(parse_number("41215522000")) == {"national": "0215522000", "limit": 50}
    # an internal number is asked only from a query written for it (with :short)
    assert backend.lookup_params(parse_number("201")) is None
    assert backend.lookup(parse_number("201"), 5) == []
    backend = make_backend(f"sqlite:///{path}", tmp_path, query="SELECT * FROM c WHERE p IN (:e164, :short)")
    assert backend.lookup_params(parse_number("201")) == {"e164": None, "short": "201"}
    assert backend.lookup_params(parse_number("0215522000")) == {"e164": "+41215522000", "short": None}


def test_short_numbers_match_only_exactly(db, tmp_path):
    add_customer(db, 20, "Reception", "Desk", "Us", "201")
    add_customer(db, 21, "Someone", "Else", "Them", "+41 21 552 02 01")
    query = (
        f"SELECT {COLUMNS} FROM customers WHERE phone = :short "
        f"OR {STRIP.format('phone')} LIKE '%' || COALESCE(:nsn, :short) ORDER BY id"
    )
    backend = make_backend(db, tmp_path, query=query)
    assert ids(lookup(backend, "201")) == ["20"]  # the LIKE also returned 21; the re-check drops it
    backend.close()


def test_limit_and_rows_of_one_contact_merged(db, tmp_path):
    db.run("CREATE TABLE phones (customer_id INTEGER, number TEXT)")
    for cid in range(30, 37):
        add_customer(db, cid, f"Staff{cid}", "Switchboard", "Big AG", None)
        db.run("INSERT INTO phones VALUES (:c, '058 100 10 00')", c=cid)
    db.run("INSERT INTO phones VALUES (1, '+41 58 100 10 99')")
    query = (
        "SELECT c.id, c.first_name, c.last_name, c.company, p.number, c.lang FROM customers c "
        f"JOIN phones p ON p.customer_id = c.id WHERE c.id IN (SELECT customer_id FROM phones "
        f"WHERE {STRIP.format('number')} IN (:digits, :national)) ORDER BY c.id"
    )
    fields = {"id": "id", "first_name": "first_name", "last_name": "last_name", "company": "company",
              "phones": "number", "custom_data": {"Language": "lang"}}
    backend = make_backend(db, tmp_path, query=query, fields=fields)
    found = lookup(backend, "41581001000", limit=5)
    assert ids(found) == ["30", "31", "32", "33", "34"]
    db.run("INSERT INTO phones VALUES (1, '058 100 10 00')")
    [anna] = lookup(backend, "41581001099")
    assert anna.phones == ["+41 58 100 10 99", "058 100 10 00"]  # two rows, one contact
    backend.close()


def test_uri_templates_and_name_column(db, tmp_path):
    query = NORMALIZED_QUERY.replace("SELECT id,", "SELECT first_name || ' ' || last_name AS full_name, id,")
    fields = {**FIELDS, "name": "full_name"}
    backend = make_backend(
        db, tmp_path, query=query, fields=fields,
        contact_uri_template="https://erp.example.ch/customers/{id}?lang={LANG}",
        company_uri_template="https://erp.example.ch/companies?name={company}",
    )
    backend.check()
    [anna] = lookup(backend, "41215522000")
    assert anna.name == "Anna Muster"
    assert anna.contact_uri == "https://erp.example.ch/customers/1?lang=fr"
    assert anna.company_uri == "https://erp.example.ch/companies?name=Muster%20AG"
    backend.close()


# mirror -------------------------------------------------------------------------------------------
MIRROR_FIELDS = {**FIELDS, "updated_at": "updated_at"}
LIST_QUERY = f"SELECT {COLUMNS} FROM customers ORDER BY id"
SINCE_QUERY = f"SELECT {COLUMNS} FROM customers WHERE updated_at >= :since ORDER BY id"


def make_mirror(db: Db, tmp_path, **options: object) -> MirroredBackend:
    backend = make_backend(db, tmp_path, mode="mirror", list_query=LIST_QUERY, **options)
    return MirroredBackend(backend)


def test_mirror_full_sync_and_deletion(db, tmp_path):
    mirror = make_mirror(db, tmp_path, batch_size=2)
    assert mirror.source.modes == frozenset({"live", "mirror"})
    outcome = mirror.sync_now()
    assert outcome.ok and outcome.written == 5 and not outcome.incremental  # no phone / deleted: skipped
    # nothing special for '(021) 552 20 00': the mirror normalizes what it stores
    [anna] = mirror.lookup(parse_number("41215522000"), 5)
    assert (anna.id, anna.name, anna.company) == ("1", "Anna Muster", "Muster AG")
    assert anna.custom_data == {"Language": "fr"}
    assert ids(mirror.lookup(parse_number("0223456789"), 5)) == ["4"]
    assert ids(mirror.lookup(parse_number("41791234567"), 5)) == ["3"]
    assert ids(mirror.lookup(parse_number("33215522000"), 5)) == ["5"]
    assert mirror.lookup(parse_number("41446681801"), 5) == []
    db.run("DELETE FROM customers WHERE id = 2")
    db.run("UPDATE customers SET phone = NULL WHERE id = 4")
    outcome = mirror.sync_now()
    assert outcome.ok and outcome.written == 3 and outcome.deleted == 2
    assert mirror.lookup(parse_number("41446681800"), 5) == []
    assert mirror.lookup(parse_number("41223456789"), 5) == []
    assert mirror.store.contact_ids() == {"1", "3", "5"}
    mirror.close()


def test_mirror_streams_in_batches_and_merges_rows_across_them(db, tmp_path):
    db.run("CREATE TABLE phones (customer_id INTEGER, number TEXT)")
    for cid in (1, 2, 3, 4):
        for n in range(3):
            db.run("INSERT INTO phones VALUES (:c, :n)", c=cid, n=f"044 668 1{cid} 0{n}")
    query = ("SELECT c.id, c.first_name, c.last_name, c.company, p.number, c.lang FROM customers c "
             "JOIN phones p ON p.customer_id = c.id ORDER BY c.id, p.number")
    fields = {"id": "id", "first_name": "first_name", "last_name": "last_name", "company": "company",
              "phones": "number"}
    backend = make_backend(db, tmp_path, mode="mirror", list_query=query, fields=fields, batch_size=2)
    batches = list(backend.sync(None))
    assert [len(b.contacts) for b in batches] == [1, 1, 1, 1, 0]  # the last contact of a batch waits
    assert [b.complete for b in batches] == [False, False, False, False, True]
    contacts = [c for b in batches for c in b.contacts]
    assert ids(contacts) == ["1", "2", "3", "4"]
    assert all(len(c.phones) == 3 for c in contacts)
    backend.close()


def test_mirror_incremental_sync_with_since_query(db, tmp_path):
    mirror = make_mirror(db, tmp_path, since_query=SINCE_QUERY, fields=MIRROR_FIELDS)
    mirror.check()
    first = mirror.sync_now()
    assert first.ok and not first.incremental and first.written == 5
    db.run("UPDATE customers SET last_name = 'Neu', updated_at = '2024-03-01 09:00:00' WHERE id = 1")
    add_customer(db, 8, "Gina", "New", "Neu AG", "031 322 21 12", updated="2024-03-01 09:00:00")
    second = mirror.sync_now()
    assert second.ok and second.incremental and second.written == 2 and second.deleted == 0
    assert [c.name for c in mirror.lookup(parse_number("41215522000"), 5)] == ["Anna Neu"]
    assert ids(mirror.lookup(parse_number("41313222112"), 5)) == ["8"]
    # committed late with an earlier time: still read, thanks to since_overlap (60 s)
    db.run("UPDATE customers SET company = 'Late AG', updated_at = '2024-03-01 08:59:30' WHERE id = 2")
    # flagged deleted, and a number removed: both leave the mirror
    db.run("UPDATE customers SET is_deleted = 1, updated_at = '2024-03-02 00:00:00' WHERE id = 3")
    db.run("UPDATE customers SET phone = NULL, updated_at = '2024-03-02 00:00:00' WHERE id = 4")
    third = mirror.sync_now()
    assert third.ok and third.incremental and third.deleted == 2
    assert third.written == 3  # 1 and 8 read again (overlap), and 2
    assert [c.company for c in mirror.lookup(parse_number("41446681800"), 5)] == ["Late AG"]
    assert mirror.store.contact_ids() == {"1", "2", "5", "8"}
    # a hard delete is invisible to an incremental sync; the next full listing removes it
    db.run("DELETE FROM customers WHERE id = 5")
    assert mirror.sync_now().deleted == 0
    full = mirror.sync_now(full=True)
    assert full.ok and not full.incremental and full.deleted == 1
    assert mirror.store.contact_ids() == {"1", "2", "8"}
    mirror.close()


def test_mirror_deleted_query_removes_hard_deleted_rows(db, tmp_path):
    timestamp = "TEXT" if db.kind == "sqlite" else "TIMESTAMP"
    db.run(f"CREATE TABLE customer_deletions (customer_id INTEGER, deleted_at {timestamp})")
    mirror = make_mirror(
        db, tmp_path, since_query=SINCE_QUERY, fields=MIRROR_FIELDS,
        deleted_query="SELECT customer_id FROM customer_deletions WHERE deleted_at >= :since",
    )
    mirror.check()
    mirror.sync_now()
    db.run("DELETE FROM customers WHERE id = 2")
    db.run("INSERT INTO customer_deletions VALUES (2, '2024-02-01 00:00:00')")
    outcome = mirror.sync_now()
    assert outcome.ok and outcome.incremental and outcome.deleted == 1
    assert mirror.lookup(parse_number("41446681800"), 5) == []
    mirror.close()


def test_full_sync_interval_forces_a_full_listing(db, tmp_path):
    backend = make_backend(db, tmp_path, mode="mirror", list_query=LIST_QUERY, since_query=SINCE_QUERY,
                           fields=MIRROR_FIELDS, full_sync_interval=3600)
    batches = list(backend.sync(None))
    cursor = batches[-1].cursor
    assert batches[-1].complete and '"since"' in cursor
    assert not list(backend.sync(cursor))[-1].complete  # with a cursor: incremental
    # a cursor written when the backend kept its own schedule (with "full_at") still resumes
    old = cursor[:-1] + f', "full_at": {time.time() - 7200}}}'
    assert not list(backend.sync(old))[-1].complete
    # when to list everything again is the mirror's decision
    mirror = MirroredBackend(backend)
    assert not mirror.sync_now().incremental
    assert mirror.sync_now().incremental
    mirror.store.set_meta("last_full_sync", str(time.time() - 7200))
    assert not mirror.sync_now().incremental
    mirror.close()


# CallFlow -------------------------------------------------------------------------------------------
CALL_LOG_QUERY = """
INSERT INTO call_log (contact_id, direction, status, remote_number, remote_name, started, answered, ended,
                      duration, user_id, call_key, summary)
VALUES (:contact_id, :direction, :status, :remote_number, :remote_name, :started, :answered, :ended,
        :duration, :user_id, :call_key, :summary)
ON CONFLICT (call_key) DO UPDATE SET call_key = excluded.call_key
RETURNING id
"""


def create_call_log(db: Db) -> None:
    if db.kind == "sqlite":
        key, times = "INTEGER PRIMARY KEY AUTOINCREMENT", "TEXT"
    else:
        key, times = "BIGSERIAL PRIMARY KEY", "TIMESTAMPTZ"
    db.run(
        f"""CREATE TABLE call_log (id {key}, contact_id INTEGER NOT NULL REFERENCES customers (id),
            direction TEXT, status TEXT, remote_number TEXT, remote_name TEXT, started {times},
            answered {times}, ended {times}, duration INTEGER, user_id TEXT, call_key TEXT UNIQUE,
            summary TEXT)"""
    )


def t(hh_mm_ss: str) -> datetime:
    return datetime.fromisoformat(f"2024-05-02T{hh_mm_ss}+00:00")


def test_call_flow_inserts_answered_and_missed_calls(db, tmp_path):
    create_call_log(db)
    backend = make_backend(db, tmp_path, call_log_query=CALL_LOG_QUERY,
                           call_url_template="https://erp.example.ch/calls/{id}?customer={contact_id}")
    assert backend.can_log_calls is True and MirroredBackend(backend).can_log_calls is True
    backend.check()
    answered = CallRecord(
        contact_id="1", direction="incoming", originator_number="41215522000", originator_name="Anna",
        destination_number="41215550000", started=t("10:00:00"), answered=t("10:00:05"),
        ended=t("10:02:10"), user_id="u7", key="k-answered",
    )
    first = backend.log_call(answered)
    assert backend.log_call(answered) == first  # posted twice: one row, the same id
    missed = CallRecord(contact_id="3", direction="outgoing", destination_number="41313222111",
                        started=t("11:00:00"), ended=t("11:00:30"), key="k-missed")
    second = backend.log_call(missed)
    rows = db.rows("SELECT id, contact_id, direction, status, remote_number, remote_name, started, answered, "
                   "ended, duration, user_id, call_key, summary FROM call_log ORDER BY id")
    assert [first.id, second.id] == [str(row[0]) for row in rows]  # from RETURNING id
    assert first.url == f"https://erp.example.ch/calls/{first.id}?customer=1"
    if db.kind == "sqlite":  # no time zone type: UTC as text
        times = ["2024-05-02 10:00:00.000000", "2024-05-02 10:00:05.000000", "2024-05-02 10:02:10.000000",
                 "2024-05-02 11:00:00.000000", "2024-05-02 11:00:30.000000"]
    else:
        times = [t("10:00:00"), t("10:00:05"), t("10:02:10"), t("11:00:00"), t("11:00:30")]
    assert [row[1:] for row in rows] == [
        (1, "incoming", "answered", "41215522000", "Anna", times[0], times[1], times[2], 125, "u7",
         "k-answered", "Incoming call from Anna, answered, 2:05"),
        (3, "outgoing", "missed", "41313222111", None, times[3], None, times[4], 0, None, "k-missed",
         "Outgoing call to 41313222111, missed"),
    ]
    backend.close()


def test_call_flow_without_returning_uses_the_call_key(db, tmp_path):
    create_call_log(db)
    query = "INSERT INTO call_log (contact_id, direction, status, call_key) VALUES (:contact_id, :direction, :status, :call_key)"  # noqa: E501
    backend = make_backend(db, tmp_path, call_log_query=query)
    result = backend.log_call(CallRecord(contact_id="2", direction="incoming", key="abc123"))
    assert result.id == "abc123" and result.url is None
    assert db.rows("SELECT contact_id, status, call_key FROM call_log") == [(2, "missed", "abc123")]
    backend.close()


def test_call_flow_unknown_contact(pg, tmp_path):
    db_url = pg.create_database("calls_fk")
    db = Db("postgres", db_url, create_engine(db_url))
    db.run("CREATE TABLE customers (id INTEGER PRIMARY KEY, phone TEXT)")
    create_call_log(db)
    backend = make_backend(db, tmp_path, call_log_query=CALL_LOG_QUERY,
                           query="SELECT * FROM customers WHERE phone = :e164",
                           fields={"id": "id", "phones": "phone"})
    with pytest.raises(ContactNotFound):
        backend.log_call(CallRecord(contact_id="999", direction="incoming", key="k"))
    backend.close()
    db.engine.dispose()


def test_call_logging_only_when_configured(db, tmp_path):
    backend = make_backend(db, tmp_path)
    assert backend.can_log_calls is False and MirroredBackend(backend).can_log_calls is False
    with pytest.raises(NotImplementedError):
        backend.log_call(CallRecord(contact_id="1", direction="incoming", key="k"))
    backend.close()


# errors -----------------------------------------------------------------------------------------------
def test_server_down_is_unavailable(tmp_path):
    url = f"postgresql+psycopg://lookup:secret@127.0.0.1:{free_port()}/erp"
    backend = make_backend(url, tmp_path, list_query=LIST_QUERY)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as error:
        lookup(backend, "41215522000")
    assert "41215522000" not in str(error.value)
    with pytest.raises(BackendUnavailable):
        backend.check()
    mirror = MirroredBackend(make_backend(url, tmp_path, mode="mirror", list_query=LIST_QUERY))
    outcome = mirror.sync_now()
    assert not outcome.ok and "127.0.0.1" in outcome.error
    assert time.monotonic() - started < 10
    mirror.close()
    backend.close()


def test_server_restart_is_survived(pg, tmp_path):
    url = pg.create_database("restart")
    db = Db("postgres", url, create_engine(url))
    db.run("CREATE TABLE customers (id INTEGER PRIMARY KEY, phone TEXT)",
           "INSERT INTO customers VALUES (1, '+41215522000')")
    db.engine.dispose()
    backend = make_backend(url, tmp_path, query="SELECT * FROM customers WHERE phone = :e164",
                           fields={"id": "id", "phones": "phone"})
    assert ids(lookup(backend, "41215522000")) == ["1"]  # a pooled connection now exists
    pg.stop()
    try:
        with pytest.raises(BackendUnavailable):
            lookup(backend, "41215522000")
    finally:
        pg.start()
    assert ids(lookup(backend, "41215522000")) == ["1"]  # pool_pre_ping replaced the dead connection
    backend.close()


def test_statement_timeout_inside_the_deadline(pg, tmp_path):
    url = pg.create_database("slow")
    db = Db("postgres", url, create_engine(url))
    db.run("CREATE TABLE customers (id INTEGER PRIMARY KEY, phone TEXT)")
    db.engine.dispose()
    query = "SELECT c.* FROM customers c, (SELECT pg_sleep(5)) s WHERE c.phone = :e164"
    backend = make_backend(url, tmp_path, query=query, fields={"id": "id", "phones": "phone"}, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="statement timeout"):
        lookup(backend, "41215522000")
    assert time.monotonic() - started < 2
    backend.close()


def test_wrong_password_and_missing_database(pg, tmp_path):
    fields = {"id": "id", "phones": "phone"}
    backend = make_backend(pg.url(password="wrong"), tmp_path, query="SELECT 1 AS id, :e164 AS phone",
                           fields=fields)
    with pytest.raises(CredentialsRejected):
        backend.check()
    with pytest.raises(CredentialsRejected):
        lookup(backend, "41215522000")
    assert "wrong" not in str(backend.describe()) and "***" in backend.describe()["url"]
    backend = make_backend(pg.url("nope"), tmp_path, query="SELECT 1 AS id, :e164 AS phone", fields=fields)
    with pytest.raises(BackendConfigError) as error:
        backend.check()
    assert error.value.key == "url"
    # the password may also come apart from the URL (no escaping needed)
    backend = make_backend(pg.url(password="x"), tmp_path, password="pg-test-secret",
                           query="SELECT '1' AS id, CAST(:e164 AS TEXT) AS phone", fields=fields)
    backend.check()
    assert ids(lookup(backend, "41215522000")) == ["1"]


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"query": f"SELECT {COLUMNS} FROM no_such_table WHERE phone = :e164"}, "query"),
        ({"query": f"SELECT {COLUMNS} FROM customers WHERE phone = :e164 AND"}, "query"),
        ({"query": "SELECT id, phone FROM customers WHERE phone = :e164"}, "fields.first_name"),
        ({"fields": {**FIELDS, "custom_data": {"Region": "region"}}}, "fields.custom_data.Region"),
        ({"contact_uri_template": "https://erp/{customer_no}"}, "contact_uri_template"),
        ({"list_query": "SELECT * FROM customer"}, "list_query"),
        ({"list_query": LIST_QUERY, "since_query": "SELECT * FROM customers WHERE modified >= :since",
          "fields": MIRROR_FIELDS}, "since_query"),
        ({"list_query": LIST_QUERY, "since_query": SINCE_QUERY, "fields": MIRROR_FIELDS,
          "deleted_query": "SELECT id FROM tombstones WHERE at >= :since"}, "deleted_query"),
        ({"call_log_query": "INSERT INTO calls (contact) VALUES (:contact_id)"}, "call_log_query"),
    ],
)
def test_bad_query_names_the_key(db, tmp_path, options, key):
    create_call_log(db)
    backend = make_backend(db, tmp_path, **options)
    with pytest.raises(BackendConfigError) as error:
        backend.check()
    assert error.value.key == key
    assert f"key {key!r}" in str(error.value)
    backend.close()


def test_check_accepts_a_valid_call_log_query_despite_dummy_values(db, tmp_path):
    create_call_log(db)  # contact 0 does not exist: the foreign key rejects the dummy row
    make_backend(db, tmp_path, call_log_query=CALL_LOG_QUERY).check()
    assert db.rows("SELECT COUNT(*) FROM call_log") == [(0,)]


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"query": "SELECT * FROM c WHERE p = :phone"}, "query"),
        ({"list_query": "SELECT * FROM c WHERE x = :since"}, "list_query"),
        ({"since_query": "SELECT * FROM c"}, "since_query"),
        ({"since_query": "SELECT * FROM c WHERE u >= :since"}, "since_query"),  # needs fields.updated_at
        ({"deleted_query": "SELECT id FROM d WHERE at >= :since"}, "deleted_query"),
        ({"call_log_query": "INSERT INTO calls VALUES (:contact_id, :who)"}, "call_log_query"),
        ({"call_url_template": "https://erp/calls/{call}"}, "call_url_template"),
        ({"fields": {"phones": ["phone"]}}, "fields.id"),
        ({"fields": {"id": "id"}}, "fields.phones"),
        ({"fields": {"id": "id", "phones": []}}, "fields.phones"),
        ({"fields": {"id": "id", "phones": "p", "mail": "x"}}, "fields.mail"),
        ({"url": "not a url"}, "url"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_options_are_validated(tmp_path, options, key):
    raw = {"name": "erp", "type": "sql", "url": "sqlite:///x.db", "query": "SELECT 1 WHERE 1 = :e164",
           "fields": {"id": "id", "phones": "phone"}, **options}
    with pytest.raises(BackendConfigError) as error:
        load_options(SqlBackend, raw, "tenant 't', backend 'erp'")
    assert error.value.key == key


def test_mode_needs_its_query(tmp_path):
    path = tmp_path / "x.sqlite3"
    path.touch()
    with pytest.raises(BackendConfigError) as error:
        make_backend(f"sqlite:///{path}", tmp_path, mode="mirror")
    assert error.value.key == "list_query"
    with pytest.raises(BackendConfigError) as error:
        make_backend(f"sqlite:///{path}", tmp_path, mode="live", query=None)
    assert error.value.key == "query"
    with pytest.raises(BackendConfigError) as error:
        make_backend(f"sqlite:///{tmp_path}/missing.db", tmp_path)
    assert error.value.key == "url"
    with pytest.raises(BackendConfigError) as error:
        make_backend("mysql+nosuchdriver://u@h/db", tmp_path)
    assert error.value.key == "url"


# the examples of docs/backends/sql.md -------------------------------------------------------------------
DOCS = Path(__file__).resolve().parent.parent / "docs" / "backends" / "sql.md"


def doc_backends() -> list[dict]:
    backends = []
    for block in re.findall(r"```toml\n(.*?)```", DOCS.read_text(), re.S):
        tenants = tomllib.loads(block)["tenant"]
        for tenant in tenants if isinstance(tenants, list) else [tenants]:
            backends.extend(tenant["backend"])
    return backends


def test_docs_examples_are_valid_options():
    backends = doc_backends()
    assert len(backends) == 4 and {b["type"] for b in backends} == {"sql"}
    for raw in backends:
        load_options(SqlBackend, raw, f"docs backend {raw['name']!r}")


def test_partner_example_numbers_typed_with_parentheses(db, tmp_path):
    live, mirrored = [b for b in doc_backends() if b["name"] == "partner-db"]
    query = live["query"]
    if db.kind == "sqlite":  # the docs' portable expression instead of regexp_replace
        sqlite_digits = "REPLACE(REPLACE(REPLACE(REPLACE(REPLACE(phone, ' ', ''), '(', ''), ')', ''), '/', ''), '+', '')"  # noqa: E501
        query = query.replace("regexp_replace(phone, '[^0-9]', '', 'g')", sqlite_digits)
    backend = make_backend(db, tmp_path, query=query, fields=live["fields"])
    backend.check()
    [anna] = lookup(backend, "41215522000")
    assert (anna.name, anna.company, anna.phones) == ("Anna Muster", "Muster AG", ["(021) 552 20 00"])
    assert ids(lookup(backend, "41313222111")) == ["3"]  # stored as 0041 31 322 21 11
    assert ids(lookup(backend, "41446681800")) == ["2"]  # stored as +41 44 668 18 00
    source = make_backend(db, tmp_path, mode="mirror", list_query=mirrored["list_query"],
                          fields=mirrored["fields"])
    mirror = MirroredBackend(source)
    mirror.check()
    assert mirror.sync_now().written == 6  # every row with a number
    assert [c.name for c in mirror.lookup(parse_number("41215522000"), 5)] == ["Anna Muster"]
    assert ids(mirror.lookup(parse_number("41223456789"), 5)) == ["4"]  # stored as 022/345.67.89
    mirror.close()
    backend.close()


# exactly once through lost answers --------------------------------------------------------------------
CALL_INSERT = """
INSERT INTO call_log (contact_id, direction, status, started, call_key)
VALUES (:contact_id, :direction, :status, :started, :call_key)
"""
CALL_FIND = "SELECT id FROM call_log WHERE call_key = :call_key"
LOST = CallRecord(contact_id="1", direction="incoming", started=t("10:00:00"), ended=t("10:01:00"),
                  key="4f9c" * 16)


@pytest.mark.parametrize(
    "insert",
    [
        pytest.param(CALL_INSERT + " ON CONFLICT (call_key) DO NOTHING RETURNING id", id="on-conflict-do-nothing"),
        pytest.param(CALL_INSERT + " ON CONFLICT (call_key) DO NOTHING", id="on-conflict-no-returning"),
        pytest.param(CALL_INSERT, id="plain-insert-unique-column"),
    ],
)
def test_call_written_by_an_earlier_attempt_is_found_not_duplicated(db, tmp_path, insert):
    create_call_log(db)
    make_backend(db, tmp_path, call_log_query=insert, call_find_query=CALL_FIND).log_call(LOST)  # answer lost
    again = make_backend(db, tmp_path, call_log_query=insert, call_find_query=CALL_FIND)
    again.check()
    result = again.log_call(LOST)
    assert db.rows("SELECT id, call_key FROM call_log") == [(int(result.id), LOST.key)]
    other = again.log_call(CallRecord(contact_id="2", direction="incoming", started=t("11:00:00"), key="k2"))
    assert other.id != result.id and len(db.rows("SELECT id FROM call_log")) == 2
    again.close()


def test_insert_refused_for_good_is_a_permanent_error(db, tmp_path):
    create_call_log(db)
    query = "INSERT INTO call_log (contact_id, direction, call_key) VALUES (:contact_id, NULL, :call_key)"
    db.run("ALTER TABLE call_log ADD CONSTRAINT has_direction CHECK (direction IS NOT NULL)"
           if db.kind == "postgres" else "CREATE TRIGGER no_null BEFORE INSERT ON call_log WHEN NEW.direction IS NULL "
           "BEGIN SELECT RAISE(ABORT, 'CHECK constraint failed: has_direction'); END")
    backend = make_backend(db, tmp_path, call_log_query=query)
    with pytest.raises(DeliveryRefused, match="has_direction"):  # the same INSERT would fail again
        backend.log_call(LOST)
    backend.close()


def test_call_find_query_needs_call_log_query(tmp_path):
    with pytest.raises(BackendConfigError) as raised:
        load_options(SqlBackend, {"name": "erp", "type": "sql", "url": "sqlite://", "fields": FIELDS,
                                  "query": NORMALIZED_QUERY, "call_find_query": CALL_FIND}, "t")
    assert raised.value.key == "call_find_query"


class CommitLosingProxy:
    """A TCP proxy to PostgreSQL that forwards a COMMIT to the server, lets the server carry it
    out, and then closes the client's connection instead of passing the answer on: the call is
    stored, the backend never learns it."""

    def __init__(self, host: str, port: int):
        self.upstream = (host, port)
        self.armed = threading.Event()
        self.dropped = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream, timeout=10)
            self.sockets += [client, server]
            state = {"committing": False}
            threading.Thread(target=self._pump, args=(client, server, True, state), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False, state), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, from_client: bool, state: dict) -> None:
        try:
            while chunk := source.recv(65536):
                if from_client and self.armed.is_set() and b"COMMIT\x00" in chunk:
                    self.armed.clear()
                    state["committing"] = True
                    target.sendall(chunk)
                    continue
                if not from_client and state["committing"]:
                    # the server answered the COMMIT: it is done; the client never hears of it
                    self.dropped.set()
                    target.shutdown(socket.SHUT_RDWR)
                    return
                target.sendall(chunk)
        except OSError:
            pass  # the other direction closed both sockets
        finally:
            for sock in (source, target):
                try:
                    sock.close()
                except OSError:
                    pass

    def close(self) -> None:
        for sock in self.sockets:
            try:
                sock.close()
            except OSError:
                pass


def test_postgres_commit_answer_lost_the_retry_finds_the_row(pg, tmp_path):
    url = pg.create_database("lost_" + uuid.uuid4().hex[:8])
    db = Db("postgres", url, create_engine(url))
    db.run("CREATE TABLE customers (id INTEGER PRIMARY KEY, phone TEXT)", "INSERT INTO customers VALUES (1, NULL)")
    create_call_log(db)
    parsed = make_url(url)
    proxy = CommitLosingProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
    insert = CALL_INSERT + " ON CONFLICT (call_key) DO NOTHING RETURNING id"
    options = {"call_log_query": insert, "call_find_query": CALL_FIND,
               "query": "SELECT * FROM customers WHERE phone = :e164", "fields": {"id": "id", "phones": "phone"}}
    try:
        lossy = make_backend(parsed.set(port=proxy.port).render_as_string(hide_password=False), tmp_path, **options)
        lossy.check()
        proxy.armed.set()
        with pytest.raises(BackendUnavailable) as raised:
            lossy.log_call(LOST)
        assert proxy.dropped.is_set(), f"the proxy never saw the COMMIT ({raised.value})"
        [(stored,)] = db.rows("SELECT id FROM call_log")  # committed although the answer was lost
        lossy.close()
        retry = make_backend(parsed.set(port=proxy.port).render_as_string(hide_password=False), tmp_path, **options)
        assert retry.log_call(LOST).id == str(stored)
        assert db.rows("SELECT id FROM call_log") == [(stored,)]
        retry.close()
    finally:
        proxy.close()
        db.engine.dispose()


def test_name_query_searches_by_name_as_typed(db, tmp_path):
    query = (f"SELECT {COLUMNS} FROM customers WHERE LOWER(first_name || ' ' || last_name) LIKE LOWER(:pattern) "
             "OR LOWER(company) LIKE LOWER(:pattern) ORDER BY last_name LIMIT :limit")
    backend = make_backend(db, tmp_path, name_query=query)
    assert ids(backend.search("rossi", 20)) == ["3"]
    assert ids(backend.search("Bruno B", 20)) == ["2"]
    assert ids(backend.search("a", 2)) == ["4", "5"]  # the query's order, at most the limit
    assert ids(backend.search("gone", 20)) == []  # a deleted row is no contact
    assert backend.search("  ", 20) == [] and make_backend(db, tmp_path).search("rossi", 20) == []
    with pytest.raises(BackendConfigError, match="unknown parameter"):
        make_backend(db, tmp_path, name_query="SELECT * FROM customers WHERE first_name = :e164")


# CreateContact: insert_contact_query ---------------------------------------------------------------
INSERT_CONTACT = ("INSERT INTO customers (id, first_name, company, phone, email) "
                  "VALUES ((SELECT MAX(id) + 1 FROM customers), :name, :company, :e164, :email)")


@pytest.mark.parametrize("returning", [False, True])
def test_create_contact_inserts_and_reads_the_contact_back(db, tmp_path, returning):
    from lookup_core.types import NewContact

    query = INSERT_CONTACT + (" RETURNING id" if returning else "")
    backend = make_backend(db, tmp_path, insert_contact_query=query,
                           contact_uri_template="https://erp.example/customers/{id}")
    assert type(backend).can_create_contacts(backend.options)
    assert lookup(backend, "41791112233") == []
    result = backend.create_contact(NewContact(number="+41791112233", name="Alexa Holiday", company="Holiday AG"))
    assert result.id == "8" and result.url == "https://erp.example/customers/8"
    [found] = lookup(backend, "41791112233")
    assert found.id == "8" and found.company == "Holiday AG"


def test_create_contact_refused_by_a_constraint_is_a_refusal_for_good(db, tmp_path):
    from lookup_core.errors import DeliveryRefused
    from lookup_core.types import NewContact

    backend = make_backend(db, tmp_path, insert_contact_query="INSERT INTO customers (id, phone) VALUES (1, :e164)")
    with pytest.raises(DeliveryRefused, match="insert_contact_query"):
        backend.create_contact(NewContact(number="+41791112233", name="x"))


def test_insert_contact_query_parameters_are_checked(tmp_path):
    with pytest.raises(BackendConfigError, match="insert_contact_query.*:phone"):
        make_backend("sqlite:///" + str(tmp_path / "x.sqlite3"), tmp_path,
                     insert_contact_query="INSERT INTO customers (phone) VALUES (:phone)")


def test_numbers_take_the_type_of_their_column_or_of_the_rows_label(db, tmp_path):
    typed = {**FIELDS, "phone_types": {"phone": "work", "MOBILE": "mobile"}, "job_title": "lang"}
    [clara] = lookup(make_backend(db, tmp_path, fields=typed), "41313222111")
    assert clara.phone_types == {"0041 31 322 21 11": "business", "079 123 45 67": "mobile"}
    assert clara.job_title == "fr"  # any column can be the job title; this table has none of its own
    # a phones table with a label per number: one row per number, merged into one contact
    db.run("CREATE TABLE numbers (customer_id INTEGER, number TEXT, kind TEXT)")
    db.run("INSERT INTO numbers VALUES (2, '+41 44 668 18 00', 'Büro'), (2, '079 555 10 20', 'Handy'), "
           "(2, '+41 44 668 18 09', NULL)")
    query = ("SELECT c.id, c.first_name, c.last_name, n.number, n.kind FROM customers c "
             "JOIN numbers n ON n.customer_id = c.id WHERE c.id IN (SELECT customer_id FROM numbers "
             f"WHERE {STRIP.format('number')} IN (:digits, :national)) ORDER BY c.id")
    fields = {"id": "id", "first_name": "first_name", "last_name": "last_name", "phones": "number",
              "phone_type": "kind"}
    [bruno] = lookup(make_backend(db, tmp_path, query=query, fields=fields), "41446681800")
    assert bruno.phone_types == {"+41 44 668 18 00": "business", "079 555 10 20": "mobile"}  # no kind: unknown
    with pytest.raises(BackendConfigError, match="phone_types"):
        make_backend(db, tmp_path, fields={**FIELDS, "phone_types": {"fax": "fax"}})
# call updates, MessageLog digests, users ------------------------------------------------------------
CALL_UPDATE = """
UPDATE call_log SET status = :status, answered = :answered, ended = :ended, duration = :duration,
       summary = :summary, note = :note
WHERE id = :record_id
"""
MESSAGE_INSERT = """
INSERT INTO message_log (contact_id, type, conversation_id, day, title, body, message_count, link, owner,
                         record_key, first_time, last_time)
VALUES (:contact_id, :type, :conversation_id, :day, :title, :body, :message_count, :link, :user_id,
        :record_key, :first_time, :last_time)
"""
MESSAGE_FIND = "SELECT id FROM message_log WHERE record_key = :record_key"
MESSAGE_UPDATE = """
UPDATE message_log SET title = :title, body = :body, message_count = :message_count, link = :link,
       last_time = :last_time
WHERE id = :record_id
"""
USERS_QUERY = "SELECT login AS id, full_name AS name, mail AS Email FROM crm_users ORDER BY login"


def create_records(db: Db) -> None:
    """The call table (with a note), a message table with a unique record key, and the CRM's users."""
    create_call_log(db)
    db.run("ALTER TABLE call_log ADD COLUMN note TEXT")
    if db.kind == "sqlite":
        key, times = "INTEGER PRIMARY KEY AUTOINCREMENT", "TEXT"
    else:
        key, times = "BIGSERIAL PRIMARY KEY", "TIMESTAMPTZ"
    db.run(
        f"""CREATE TABLE message_log (id {key}, contact_id INTEGER NOT NULL REFERENCES customers (id),
            type TEXT NOT NULL, conversation_id TEXT, day TEXT, title TEXT, body TEXT, message_count INTEGER,
            link TEXT, owner TEXT, record_key TEXT UNIQUE, first_time {times}, last_time {times})""",
        "CREATE TABLE crm_users (login TEXT PRIMARY KEY, full_name TEXT, mail TEXT)",
        "INSERT INTO crm_users VALUES ('u7', 'Ursula Seven', 'u7@erp.example'), ('u8', 'Ulf Eight', NULL)",
    )


def record_backend(db: Db, tmp_path, **options: object) -> SqlBackend:
    table = {"call_log_query": CALL_LOG_QUERY, "call_log_update_query": CALL_UPDATE,
             "message_log_insert_query": MESSAGE_INSERT + " ON CONFLICT (record_key) DO NOTHING RETURNING id",
             "message_log_find_query": MESSAGE_FIND, "message_log_update_query": MESSAGE_UPDATE,
             "users_query": USERS_QUERY, "message_url_template": "https://erp.example/customers/{contact_id}",
             **options}
    return make_backend(db, tmp_path, **{k: v for k, v in table.items() if v is not None})


def sms_digest(count: int, day: str = "2026-11-21", **fields: object) -> MessageLog:
    digest = None
    for n in range(1, count + 1):
        message = Message(id=f"m-{day}-{n}", time=datetime.fromisoformat(f"{day}T09:{n:02d}:00+00:00"),
                          direction="incoming" if n % 2 else "outgoing", text=f"message number {n}",
                          from_number="+41215522000" if n % 2 else "+41445001020",
                          to_number="+41445001020" if n % 2 else "+41215522000",
                          from_name="Anna Muster" if n % 2 else None, to_name=None if n % 2 else "Anna Muster")
        if digest is None:
            digest = MessageLog(contact_id="1", kind="SMS", conversation_id="c-1", day=day, zone="Europe/Zurich",
                                messages=(message,), key=f"digest-{day}", **fields)
        else:
            digest = digest.with_message(message)
    assert digest is not None
    return digest


def test_a_call_posted_at_ring_and_at_hang_up_is_one_row_with_the_final_duration(db, tmp_path):
    create_records(db)
    backend = record_backend(db, tmp_path, call_url_template="https://erp.example/calls/{id}")
    backend.check()
    ring = CallRecord(contact_id="1", direction="incoming", originator_number="41215522000", originator_name="Anna",
                      started=t("10:00:00"), user_id="u7", key="k-ring")
    first = backend.log_call(ring)
    hang_up = ring.merged(CallRecord(contact_id="1", direction="incoming", answered=t("10:00:05"),
                                     ended=t("10:02:10"), note="Wants a quote", key="k-ring"))
    assert backend.update_call(first.id, hang_up) == first  # the same id and link
    rows = db.rows("SELECT id, status, duration, summary, note, user_id FROM call_log")
    assert rows == [(int(first.id), "answered", 125, "Incoming call from Anna, answered, 2:05\nWants a quote",
                     "Wants a quote", "u7")]
    [(ended,)] = db.rows("SELECT ended FROM call_log")
    assert ended == (t("10:02:10") if db.kind == "postgres" else "2024-05-02 10:02:10.000000")
    backend.close()


def test_without_an_update_query_a_later_post_keeps_the_first_row_and_says_so_once(db, tmp_path, caplog):
    create_records(db)
    backend = record_backend(db, tmp_path, call_log_update_query=None)
    ring = CallRecord(contact_id="1", direction="incoming", started=t("10:00:00"), key="k-ring")
    first = backend.log_call(ring)
    hang_up = ring.merged(CallRecord(contact_id="1", direction="incoming", answered=t("10:00:05"),
                                     ended=t("10:01:05"), key="k-ring"))
    with caplog.at_level("INFO", logger="crm_backends.sql"):
        assert backend.update_call(first.id, hang_up).id == first.id
        assert backend.update_call(first.id, hang_up).id == first.id
    assert db.rows("SELECT status, duration FROM call_log") == [("missed", 0)]
    notes = [r for r in caplog.records if "call_log_update_query" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelname == "INFO"
    backend.close()


def test_an_update_of_a_row_that_is_gone_is_a_refusal_for_good(db, tmp_path):
    create_records(db)
    backend = record_backend(db, tmp_path)
    with pytest.raises(DeliveryRefused, match="no row was updated"):
        backend.update_call("999", CallRecord(contact_id="1", direction="incoming", key="k"))
    with pytest.raises(DeliveryRefused, match="no row was updated"):
        backend.update_message("999", sms_digest(2))
    backend.close()


def test_ten_sms_make_one_row_of_ten_lines_and_a_second_day_a_second_row(db, tmp_path):
    create_records(db)
    backend = record_backend(db, tmp_path)
    assert SqlBackend.can_log_messages(backend.options) and MirroredBackend(backend).can_log_calls
    first = backend.log_message(sms_digest(1))
    assert first.url == "https://erp.example/customers/1"
    for count in range(2, 11):  # each later message: the whole digest so far replaces the row's text
        assert backend.update_message(first.id, sms_digest(count)) == first
    other_day = backend.log_message(sms_digest(1, day="2026-11-22"))
    assert other_day.id != first.id
    rows = db.rows("SELECT id, contact_id, type, day, title, body, message_count FROM message_log ORDER BY id")
    assert [(str(r[0]), r[3], r[6]) for r in rows] == [(first.id, "2026-11-21", 10), (other_day.id, "2026-11-22", 1)]
    body = rows[0][5]
    assert rows[0][4] == "SMS conversation with Anna Muster \u2013 2026-11-21" and rows[0][2] == "SMS"
    lines = [line for line in body.splitlines() if "message number" in line]
    assert len(lines) == 10 and lines[0] == "10:01 \u2190 Anna Muster: message number 1"
    assert body.count("message number 1\n") == 1
    backend.close()


def test_a_voicemail_is_one_row_with_its_link(db, tmp_path):
    create_records(db)
    backend = record_backend(db, tmp_path)
    message = Message(id="vm-1", time=datetime.fromisoformat("2026-11-21T09:00:00+00:00"), direction="incoming",
                      from_number="+41215522000", from_name="Anna Muster", link="https://pbx.example/rec/77.mp3")
    voicemail = MessageLog(contact_id="1", kind="Voicemail", conversation_id="c", day="2026-11-21", zone="UTC",
                           messages=(message,), key="vm-key")
    result = backend.log_message(voicemail)
    assert backend.log_message(voicemail).id == result.id  # posted again: the same row
    [(rid, kind, title, link, body)] = db.rows("SELECT id, type, title, link, body FROM message_log")
    assert (str(rid), kind, link) == (result.id, "Voicemail", "https://pbx.example/rec/77.mp3")
    assert title == "Voicemail from Anna Muster \u2013 2026-11-21" and "https://pbx.example/rec/77.mp3" in body
    backend.close()


@pytest.mark.parametrize("insert", [
    pytest.param(MESSAGE_INSERT + " ON CONFLICT (record_key) DO NOTHING RETURNING id", id="on-conflict"),
    pytest.param(MESSAGE_INSERT, id="plain-insert-unique-column"),
])
def test_a_digest_written_by_an_attempt_whose_answer_was_lost_is_not_duplicated(db, tmp_path, insert):
    create_records(db)
    record_backend(db, tmp_path, message_log_insert_query=insert).log_message(sms_digest(1))  # answer lost
    # the retry carries the messages posted meanwhile: the same row, brought up to date
    again = record_backend(db, tmp_path, message_log_insert_query=insert)
    again.check()
    result = again.log_message(sms_digest(3))
    assert db.rows("SELECT id, message_count FROM message_log") == [(int(result.id), 3)]
    again.close()


def test_users_query_lists_the_users_and_an_unknown_user_gets_the_default_owner(db, tmp_path, caplog):
    create_records(db)
    backend = record_backend(db, tmp_path, default_user_id="u8")
    assert SqlBackend.can_list_users(backend.options)
    assert backend.list_users() == [CrmUser("u7", "Ursula Seven", "u7@erp.example"), CrmUser("u8", "Ulf Eight")]
    with caplog.at_level("WARNING"):
        for n in range(2):
            backend.log_call(CallRecord(contact_id="1", direction="incoming", user_id="ghost", key=f"k-{n}"))
        backend.log_call(CallRecord(contact_id="1", direction="incoming", user_id="u7", key="k-known"))
        backend.log_message(sms_digest(1, user_id="ghost"))
    assert db.rows("SELECT call_key, user_id FROM call_log ORDER BY id") == [
        ("k-0", "u8"), ("k-1", "u8"), ("k-known", "u7")]
    assert db.rows("SELECT owner FROM message_log") == [("u8",)]
    warnings = [r for r in caplog.records if "'ghost'" in r.getMessage()]
    assert len(warnings) == 1 and "is not a user of the CRM" in warnings[0].getMessage()
    backend.close()


def test_record_queries_are_checked(db, tmp_path):
    create_records(db)
    with pytest.raises(BackendConfigError) as error:
        record_backend(db, tmp_path, users_query="SELECT login, full_name FROM crm_users").check()
    assert error.value.key == "users_query" and "'id'" in str(error.value)
    with pytest.raises(BackendConfigError) as error:
        record_backend(db, tmp_path, message_log_update_query="UPDATE message_log SET bdy = :body").check()
    assert error.value.key == "message_log_update_query"
    assert not SqlBackend.can_log_messages({"message_log_insert_query": MESSAGE_INSERT})


@pytest.mark.parametrize(("options", "key"), [
    ({"call_log_update_query": CALL_UPDATE}, "call_log_update_query"),  # without call_log_query
    ({"call_log_query": CALL_LOG_QUERY, "call_log_update_query": "UPDATE c SET x = :id"}, "call_log_update_query"),
    ({"message_log_insert_query": MESSAGE_INSERT}, "message_log_insert_query"),  # without the update
    ({"message_log_update_query": MESSAGE_UPDATE}, "message_log_update_query"),
    ({"message_log_insert_query": "INSERT INTO m VALUES (:record_id)", "message_log_update_query": MESSAGE_UPDATE},
     "message_log_insert_query"),
    ({"message_log_find_query": MESSAGE_FIND}, "message_log_find_query"),
    ({"users_query": "SELECT id FROM u WHERE x = :e164"}, "users_query"),
    ({"message_url_template": "https://erp/{record}"}, "message_url_template"),
])
def test_record_options_are_validated(options, key):
    raw = {"name": "erp", "type": "sql", "url": "sqlite:///x.db", "query": "SELECT 1 WHERE 1 = :e164",
           "fields": {"id": "id", "phones": "phone"}, **options}
    with pytest.raises(BackendConfigError) as error:
        load_options(SqlBackend, raw, "tenant 't', backend 'erp'")
    assert error.value.key == key


SQL_TENANT = """
[[tenant]]
name = "acme"
tokens = ["acme-token-1234"]
timezone = "Europe/Zurich"
  [[tenant.backend]]
  name = "erp"
  type = "sql"
  url = "{url}"
  query = '''{query}'''
  call_log_query = '''{call}'''
  call_log_update_query = '''{update}'''
  message_log_insert_query = '''{insert}'''
  message_log_update_query = '''{message_update}'''
  users_query = "{users}"
  [tenant.backend.fields]
  id = "id"
  first_name = "first_name"
  last_name = "last_name"
  phones = ["phone", "mobile"]
"""


def test_through_the_service_a_call_completes_its_row_and_sms_share_a_digest(db, tmp_path, make_app):
    create_records(db)
    config = tmp_path / "lookup.toml"
    config.write_text(SQL_TENANT.format(
        url=db.url, query=NORMALIZED_QUERY, call=CALL_LOG_QUERY, update=CALL_UPDATE,
        insert=MESSAGE_INSERT + " ON CONFLICT (record_key) DO NOTHING RETURNING id", message_update=MESSAGE_UPDATE,
        users=USERS_QUERY))
    client = make_app(LOOKUP_CONFIG=str(config)).test_client()
    headers = {"X-Execution-Token": "acme-token-1234"}
    call = {"contactCrmId": "erp:1", "direction": "incoming", "originatorNumber": "41215522000",
            "originatorName": "Anna", "startedTime": "2026-11-21T09:00:00Z", "userCrmId": "u7"}
    first = client.post("/CallFlow", json={"inputs": call}, headers=headers)
    assert first.status_code == 200, first.get_json()
    final = client.post("/CallFlow", json={"inputs": {**call, "answeredTime": "2026-11-21T09:00:05Z",
                                                      "endedTime": "2026-11-21T09:03:20Z"}}, headers=headers)
    assert final.status_code == 200 and final.get_json()["id"] == first.get_json()["id"]
    assert db.rows("SELECT status, duration, user_id FROM call_log") == [("answered", 195, "u7")]
    ids = set()
    for n in range(1, 11):
        sms = {"contactCrmId": "erp:1", "type": "SMS", "direction": "incoming", "fromNumber": "+41215522000",
               "fromName": "Anna Muster", "toNumber": "+41445001020", "text": f"message number {n}",
               "time": f"2026-11-21T09:{n:02d}:00Z", "messageId": f"m-{n}"}
        for _ in range(2 if n == 5 else 1):  # the fifth is posted twice
            response = client.post("/MessageLog", json={"inputs": sms}, headers=headers)
            assert response.status_code == 200, response.get_json()
            ids.add(response.get_json()["id"])
    assert len(ids) == 1
    [(count, body)] = db.rows("SELECT message_count, body FROM message_log")
    assert count == 10 and body.count("message number 5") == 1
    assert len([line for line in body.splitlines() if "message number" in line]) == 10
