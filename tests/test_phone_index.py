"""The phone index snapshot (crm_backends/phone_index.py): same answers as SQLite, and only while current."""

from __future__ import annotations

import fcntl
import os
import random
import time
from datetime import UTC, datetime

import pytest

from crm_backends import index_build, phone_index
from crm_backends.contact_store import ContactStore
from crm_backends.phone_index import InvalidIndex, PhoneIndex, build, index_path
from lookup_core.phone import parse_number
from lookup_core.types import CallRecord, Contact
from tests.conftest import DEMO_CSV, HEADERS

POOL = [f"+41 44 668 {n:02d} 00" for n in range(40)]  # few numbers: many shared by several contacts


def _contacts(seed: int, count: int) -> list[Contact]:
    rng = random.Random(seed)
    contacts = []
    for i in range(count):
        phones = rng.sample(POOL, rng.randint(1, 3))
        if rng.random() < 0.3:
            phones.append(rng.choice(POOL) + " ext. " + str(rng.randint(10, 99)))  # a looser match
        contacts.append(Contact(
            id=f"c{i}",
            name=rng.choice([None, "Ann Muster", "Ben Keller", f"Person {i}", "Émile Zürcher"]),
            company=rng.choice([None, "Keller AG"]),
            contact_uri=rng.choice([None, f"https://crm.example/c/{i}"]),
            custom_data=rng.choice([{}, {"segment": str(i % 4)}, {"tags": ["a", "b"]}]),
            phones=phones,
            last_activity=rng.choice([None, datetime(2026, 1, 1, tzinfo=UTC),  # ties on purpose
                                      datetime.fromtimestamp(1_700_000_000 + rng.randint(0, 10**6), UTC)]),
            email=rng.choice([None, f"p{i}@example.com"]),
        ))
    return contacts


def _fill(store: ContactStore, contacts: list[Contact]) -> None:
    store.upsert((c, store.normalize_phones(c.phones)) for c in contacts)


@pytest.fixture
def stores(directory_path, monkeypatch):
    """(plain store, store answering from the snapshot); rebuilds are recorded, not started."""
    started: list[str] = []
    monkeypatch.setattr(phone_index, "_start_builder", lambda path: started.append(path))
    monkeypatch.setattr(phone_index, "CHECK_EVERY_S", 0.0)
    monkeypatch.setattr(phone_index, "REBUILD_EVERY_S", 0.0)
    plain = ContactStore(directory_path)
    indexed = ContactStore(directory_path, phone_index=True)
    indexed.started_builds = started
    yield plain, indexed
    plain.close()
    indexed.close()


def _same_answers(plain: ContactStore, indexed: ContactStore, keys: list[str]) -> None:
    for key in keys:
        number = parse_number(key, "CH")
        for limit in (1, 3, 5):
            assert indexed.lookup(number, limit) == plain.lookup(number, limit), (key, limit)


def test_the_snapshot_answers_exactly_as_the_database(stores):
    plain, indexed = stores
    _fill(plain, _contacts(seed=7, count=300))
    report = build(plain.path)
    assert report.built and report.keys == plain.conn.execute("SELECT COUNT(DISTINCT key) FROM phones").fetchone()[0]
    keys = POOL + ["+41 44 668 99 00", "201", "+33 1 42 68 53 00"]  # absent ones too
    for key in POOL:  # answered from the snapshot, not from SQLite
        assert indexed.snapshot.find(parse_number(key, "CH").key, 5) is not None
    _same_answers(plain, indexed, keys)
    assert indexed.started_builds == []


def test_a_contact_change_is_answered_by_the_database_until_the_rebuild(stores):
    plain, indexed = stores
    _fill(plain, _contacts(seed=8, count=50))
    build(plain.path)
    newcomer = Contact(id="new", name="New Person", phones=["+41 21 552 20 00"])
    _fill(plain, [newcomer])
    number = parse_number("+41215522000", "CH")
    assert indexed.snapshot.find(number.key, 5) is None  # stale: not trusted
    assert [c.id for c in indexed.lookup(number, 5)] == ["new"]
    assert set(indexed.started_builds) == {plain.path}  # and a rebuild was asked for
    build(plain.path)
    assert [row[0] for row in indexed.snapshot.find(number.key, 5)] == ["new"]
    plain.delete(["new"])
    assert indexed.lookup(number, 5) == []


def test_a_call_record_keeps_the_snapshot_except_where_it_may_reorder(stores):
    plain, indexed = stores
    alone = Contact(id="alone", name="Alone", phones=["+41 21 552 20 00"])
    first = Contact(id="first", name="First", phones=["+41 44 668 18 00"],
                    last_activity=datetime(2026, 5, 1, tzinfo=UTC))
    second = Contact(id="second", name="Second", phones=["+41 44 668 18 00"])
    _fill(plain, [alone, first, second])
    build(plain.path)
    shared = parse_number("+41446681800", "CH")
    assert [c.id for c in indexed.lookup(shared, 5)] == ["first", "second"]
    call = CallRecord(contact_id="second", direction="incoming", started=datetime(2026, 11, 1, tzinfo=UTC),
                      ended=datetime(2026, 11, 1, 0, 5, tzinfo=UTC), key="call-1")
    plain.record_call(call, "call-1")
    assert indexed.snapshot.find(parse_number("+41215522000", "CH").key, 5) is not None
    assert indexed.snapshot.find(shared.key, 5) is None
    assert [c.id for c in indexed.lookup(shared, 5)] == ["second", "first"]  # the call made it the recent one
    assert indexed.started_builds == []  # contacts did not change: no rebuild


def test_a_damaged_snapshot_is_ignored_and_answers_stay_right(stores, tmp_path):
    plain, indexed = stores
    _fill(plain, _contacts(seed=9, count=50))
    build(plain.path)
    target = index_path(plain.path)
    data = open(target, "rb").read()
    for damaged in (b"", data[:20], data[: len(data) // 2], b"x" * len(data)):
        with open(target, "wb") as handle:
            handle.write(damaged)
        with pytest.raises(InvalidIndex):
            PhoneIndex(target)
        fresh = ContactStore(plain.path, phone_index=True)
        try:
            _same_answers(plain, fresh, POOL[:5])
        finally:
            fresh.close()


def test_one_build_at_a_time(directory_path):
    store = ContactStore(directory_path)
    _fill(store, _contacts(seed=10, count=5))
    with open(index_path(directory_path) + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert not build(directory_path).built
    assert build(directory_path).built
    store.close()


def test_the_service_builds_its_snapshot_in_the_background_and_answers_from_it(make_app, load_contacts,
                                                                                 directory_path):
    load_contacts(DEMO_CSV)
    app = make_app(LOOKUP_PHONE_INDEX=1, LOOKUP_CACHE_TTL=0, LOOKUP_NEGATIVE_CACHE_TTL=0)
    client = app.test_client()
    first = client.get("/Lookup?PhoneNumber=41215522000", headers=HEADERS).get_json()
    assert [c["name"] for c in first] == ["Alexa Holiday"]
    store = app.extensions["lookup"].tenants[0].slots[0].backend.store
    stop_at = time.monotonic() + 20
    while time.monotonic() < stop_at and not store.snapshot_state().startswith("current"):
        time.sleep(0.05)
    assert store.snapshot_state().startswith("current")
    time.sleep(phone_index.CHECK_EVERY_S)  # the next look at the file is due
    assert client.get("/Lookup?PhoneNumber=41215522000", headers=HEADERS).get_json() == first
    assert store.snapshot._index is not None  # the answer came from the snapshot
    assert client.get("/Lookup?PhoneNumber=41446681899", headers=HEADERS).get_json() == []
    result = app.test_cli_runner().invoke(args=["directory", "stats"])
    assert "phone index: current" in result.output
    result = app.test_cli_runner().invoke(args=["directory", "index"])
    assert result.exit_code == 0 and "phone index: 3 numbers" in result.output


def test_a_replaced_database_moves_past_the_board(directory_path):
    old = ContactStore(directory_path)
    for i in range(5):  # five writes: the board stands at generation 5
        _fill(old, [Contact(id=f"old{i}", name="Old", phones=["+41 21 552 20 00"])])
    old.close()
    for suffix in ("", "-wal", "-shm"):  # a fresh file under the same path; the board file stays
        if os.path.exists(directory_path + suffix):
            os.unlink(directory_path + suffix)
    fresh = ContactStore(directory_path)
    _fill(fresh, [Contact(id="new", name="New", phones=["+41 44 668 18 00"])])
    assert fresh.generation() > 5  # a change the caches see
    build(directory_path)
    indexed = ContactStore(directory_path, phone_index=True)
    try:  # and a current snapshot, not one stale for ever
        assert indexed.snapshot.find(parse_number("+41446681800", "CH").key, 5)[0][0] == "new"
    finally:
        indexed.close()
        fresh.close()


def test_a_build_that_cannot_write_says_so_in_one_line(tmp_path):
    with pytest.raises(SystemExit) as failure:
        index_build.main([str(tmp_path / "missing" / "directory.sqlite3")])
    assert str(failure.value.code).startswith("phone index of ") and "not built" in str(failure.value.code)
