"""The embedded directory: CSV and vCard imports, idempotent re-imports, CLI, indexed lookups."""

from __future__ import annotations

import os

import pytest

from crm_backends.contact_store import ContactStore
from lookup_core.phone import parse_number
from tests.conftest import HEADERS, write_csv

DATA = os.path.join(os.path.dirname(__file__), "data")


def names(client, number):
    return [c["name"] for c in client.get(f"/Lookup?PhoneNumber={number}", headers=HEADERS).get_json()]


@pytest.mark.parametrize(
    "text",
    [
        "id;name;company;phone\n1;Ann Example;Acme;+41 21 552 20 00\n",
        "id,name,company,phone\n1,Ann Example,Acme,+41 21 552 20 00\n",
        "\ufeffID;First_Name;Last_Name;Company;Phone Work\n1;Ann;Example;Acme;021 552 20 00\n",
        "Id,FirstName,LastName,Organization,Mobile\n1,Ann,Example,Acme,\"+41 (0)21 552 20 00\"\n",
    ],
)
def test_csv_dialects(make_app, load_contacts, text):
    report = load_contacts(text)
    assert report.imported == 1 and report.problems == []
    contact = make_app().test_client().get("/Lookup?PhoneNumber=41215522000", headers=HEADERS).get_json()[0]
    assert (contact["name"], contact["company"], contact["id"]) == ("Ann Example", "Acme", "directory:1")


def test_csv_columns_custom_data_and_problems(make_app, load_contacts):
    report = load_contacts(
        "name;company;phone_office;mobile;fax;tel_home;email;language;notes;contact_uri\n"
        "Ann;Acme;+41 21 552 20 00;;;;ann@acme.example;fr;VIP;https://crm/1\n"
        "Nobody;;;;;;;;;\n"
        "Bad Number;;not a number;;;;;;;\n"
        "Ben;Beta;;079 123 45 67;+41 21 552 20 99;031 333 44 55;;;;\n"
    )
    assert report.imported == 2
    assert report.problems[0] == (3, "no phone number (Nobody)")
    assert report.problems[1][0] == 4 and report.problems[1][1].startswith("no usable phone number: phone_office")
    assert "'not a number'" in report.problems[1][1] and len(report.problems) == 2
    client = make_app().test_client()
    ann = client.get("/Lookup?PhoneNumber=41215522000", headers=HEADERS).get_json()[0]
    assert ann["customData"] == {"email": "ann@acme.example", "language": "fr", "notes": "VIP"}
    assert ann["contactUri"] == "https://crm/1"
    for number in ("41791234567", "41215522099", "41313334455"):  # mobile, fax and tel columns
        assert names(client, number) == ["Ben"]


def test_reimport_updates_without_duplicates(make_app, load_contacts, directory_path):
    load_contacts("name;company;phone\nAnn;Acme;+41 21 552 20 00\n")
    load_contacts("name;company;phone\nAnn;Acme;+41 21 552 20 01\n")  # no id column: name+company
    load_contacts("name;company;phone\nAnn;Acme;+41 21 552 20 01\n")
    store = ContactStore(directory_path)
    assert store.stats()["contacts"] == 1
    client = make_app().test_client()
    assert names(client, "41215522001") == ["Ann"]
    assert names(client, "41215522000") == []  # the old number went with the update


@pytest.mark.parametrize(
    "filename, number, expected_name, expected_company",
    [
        ("nextcloud-export.vcf", "41215522000", "Anna Müller", "Muster Treuhand AG"),
        ("contacts-v4.vcf", "41313104040", "Frieda Huber", "Huber Elektro AG"),
        ("contacts-v4.vcf", "12125550142", "Helen Brooks", "Brooks & Partners LLP"),
        ("google-outlook-v3.vcf", "41628345050", "Lukas Peter Lang", "Lang Transporte AG"),
        ("phone-v21.vcf", "41417102233", "Beat Zürcher", "Zürcher Holz AG"),
    ],
)
def test_vcard_imports(make_app, directory_path, filename, number, expected_name, expected_company):
    app = make_app()
    result = app.test_cli_runner().invoke(args=["directory", "import", os.path.join(DATA, filename)])
    assert result.exit_code == 0, result.output
    contacts = app.test_client().get(f"/Lookup?PhoneNumber={number}", headers=HEADERS).get_json()
    assert (contacts[0]["name"], contacts[0]["company"]) == (expected_name, expected_company)


def test_vcard_file_with_several_matches_and_a_card_without_number(make_app):
    app = make_app()
    result = app.test_cli_runner().invoke(args=["directory", "import", os.path.join(DATA, "nextcloud-export.vcf")])
    assert "imported 5 contacts, skipped 1 rows" in result.output
    assert "Elena Weber" in result.output
    # three cards hold +41 21 552 20 00, written three different ways
    assert sorted(names(app.test_client(), "41215522000")) == ["Anna Müller", "Bernard Favre", "Chiara Rossi"]
    again = app.test_cli_runner().invoke(args=["directory", "import", os.path.join(DATA, "nextcloud-export.vcf")])
    assert again.exit_code == 0
    stats = app.test_cli_runner().invoke(args=["directory", "stats"])
    assert "contacts: 5" in stats.output


def test_cli_import_reports_lines_and_lookup_prints_the_answer(make_app, tmp_path):
    path = write_csv(tmp_path / "c.csv", "id;name;phone\n1;Ann;+41 21 552 20 00\n2;Nobody;\n")
    app = make_app()
    runner = app.test_cli_runner()
    result = runner.invoke(args=["directory", "import", path])
    assert "imported 1 contacts, skipped 1 rows" in result.output and "line 3: no phone number" in result.output
    printed = runner.invoke(args=["lookup", "021 552 20 00"])
    assert '"name": "Ann"' in printed.output and '"id": "directory:1"' in printed.output


def test_lookup_is_one_indexed_query(directory_path):
    store = ContactStore(directory_path)
    from crm_backends.sqlite_schema import LOOKUP

    plan = " ".join(str(row) for row in store.conn.execute("EXPLAIN QUERY PLAN " + LOOKUP, ("+41215522000", 5)))
    assert "USING PRIMARY KEY (key=?)" in plan or "USING INDEX" in plan
    assert "SCAN p" not in plan and "SCAN phones" not in plan
    assert parse_number("41215522000").key == "+41215522000"


def _open_at_once(path: str, barrier) -> None:
    barrier.wait(10)
    store = ContactStore(path)
    store.set_meta("opened", str(os.getpid()))  # and write at once, as a mirror's first sync does
    store.close()


def test_workers_opening_a_new_store_at_the_same_moment_all_succeed(tmp_path):
    """Every gunicorn worker opens a new mirror's store as it boots; the switch to WAL mode must
    not fail one of them with "database is locked" (the master then stops the whole server)."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    for round_ in range(20):  # a new file each round: the race is on the first open
        path = str(tmp_path / f"new-{round_}.sqlite3")
        barrier = context.Barrier(8)
        workers = [context.Process(target=_open_at_once, args=(path, barrier)) for _ in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        assert [worker.exitcode for worker in workers] == [0] * 8


def _old_store(path: str) -> None:
    """A directory file as the version before numbers had types wrote it: the contacts table without
    phone_types, job_title and image_url; one contact with a mobile and an office number."""
    import json
    import re
    import sqlite3

    from crm_backends.sqlite_schema import SCHEMA

    old = re.sub(r",\s*phone_types TEXT.*?image_url TEXT", "", SCHEMA, flags=re.S)
    assert "phone_types" not in old and "job_title" not in old and "updated_at REAL NOT NULL\n)" in old
    conn = sqlite3.connect(path)
    conn.executescript(old)
    phones = ["+41 79 555 10 20", "+41 44 500 10 20"]
    conn.execute("INSERT INTO contacts (id, name, phones, updated_at) VALUES ('old', 'Olga Alt', ?, 1.0)",
                 (json.dumps(phones),))
    conn.executemany("INSERT INTO phones (key, contact_rowid) VALUES (?, 1)",
                     [(parse_number(p).key,) for p in phones])
    conn.commit()
    conn.close()


def test_a_store_written_before_phone_types_opens_and_answers_unknown(make_app, directory_path):
    _old_store(directory_path)
    app = make_app()
    client = app.test_client()
    assert client.get("/Lookup?PhoneNumber=41795551020", headers=HEADERS).get_json()[0]["name"] == "Olga Alt"
    [olga] = client.get("/contacts", headers=HEADERS).get_json()["data"]
    assert olga["phoneNumbers"] == [{"phoneNumber": "+41795551020", "phoneType": "unknown"},
                                    {"phoneNumber": "+41445001020", "phoneType": "unknown"}]
    assert olga["jobTitle"] == ""
    # the columns were added: a new import keeps the types
    write_csv_path = write_csv(os.path.join(os.path.dirname(directory_path), "typed.csv"),
                               "id;name;Mobile;Business Phone;Job Title\nold;Olga Alt;+41 79 555 10 20;"
                               "+41 44 500 10 20;Buyer\n")
    runner = app.test_cli_runner()
    assert "imported 1 contacts" in runner.invoke(args=["directory", "import", write_csv_path]).output
    [olga] = client.get("/contacts", headers=HEADERS).get_json()["data"]
    assert [p["phoneType"] for p in olga["phoneNumbers"]] == ["mobile", "business"]
    assert olga["jobTitle"] == "Buyer"
    reopened = ContactStore(directory_path)  # and a second open finds nothing to add
    assert reopened.get("old").phone_types == {"+41 79 555 10 20": "mobile", "+41 44 500 10 20": "business"}
    reopened.close()
