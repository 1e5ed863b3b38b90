"""Contact files as people export them (tests/data, written by make_import_files.py): Google
Contacts CSV (both headers), Outlook CSV (UTF-8, Windows-1252, German), Excel's UTF-16 "Unicode
text", an .xlsx workbook, iCloud and Android vCards. Each imports through the CLI with nothing
skipped that has a number, and the connector's lookup finds every contact with its name and company.
"""

from __future__ import annotations

import codecs
import os
import zipfile

import pytest

from crm_backends.contact_store import ContactStore
from crm_backends.directory_import import (
    HEADER_ALIASES,
    ImportFileError,
    _cell_text,
    _columns,
    _rows,
    detect_encoding,
    header_key,
    import_file,
)
from tests.conftest import HEADERS

DATA = os.path.join(os.path.dirname(__file__), "data")

HELENE = [("41263501122", "Hélène Dubois", "Atelier Dubois")] + [
    (f"412635011{n}", "Hélène Dubois", "Atelier Dubois") for n in range(24, 36)
] + [("41793501123", "Hélène Dubois", "Atelier Dubois")]
OUTLOOK = [
    ("41417102233", "Jürg Zürcher", "Zürcher Holz AG"),
    ("41794445566", "Jürg Zürcher", "Zürcher Holz AG"),
    ("41417102234", "Jürg Zürcher", "Zürcher Holz AG"),  # Business Fax
    ("41326257070", "Françoise Schönenberger", "Garage Schönenberger"),  # Company Main Phone
    ("41326257071", "Françoise Schönenberger", "Garage Schönenberger"),  # Home Phone
    *HELENE,  # every other phone and fax column
]

# file -> (rows skipped (they have no number), encoding in the report, [(looked-up digits, name, company)])
EXPORTS = {
    "google-contacts.csv": (1, "UTF-8", [
        ("41215522000", "Anna Müller", "Muster Treuhand AG"),
        ("41791234567", "Anna Müller", "Muster Treuhand AG"),  # 079/123 45 67
        ("41789001122", "Bernard Favre", "Favre & Fils SA"),  # two numbers in one cell, with " ::: "
        ("41215522010", "Bernard Favre", "Favre & Fils SA"),
        ("41215522099", "Claudia Maria Schmid", "Schmid Bau GmbH"),
        ("41215522030", "Claudia Maria Schmid", "Schmid Bau GmbH"),
        ("49301234567", "Dieter Braun", "Braun Consulting GmbH"),  # +49 (0)30 1234567
        ("41215522040", None, "Pizzeria Bella Napoli"),  # "Tel. 021 552 20 40"
    ]),
    "google-contacts-legacy.csv": (0, "UTF-8", [
        ("41628345050", "Lukas Peter Lang", "Lang Transporte AG"),
        ("41798345051", "Lukas Peter Lang", "Lang Transporte AG"),
        ("41798345052", "Lukas Peter Lang", "Lang Transporte AG"),
        ("33612345678", "Sophie Martin", "Martin Électricité SARL"),
        ("41919234567", "Marco Bernasconi", "Bernasconi Vini SA"),
    ]),
    "outlook-contacts-utf8.csv": (0, "UTF-8 with BOM", OUTLOOK),
    "outlook-contacts-cp1252.csv": (0, "Windows-1252 (Latin-1)", OUTLOOK),
    "outlook-contacts-de-cp1252.csv": (0, "Windows-1252 (Latin-1)", [
        ("49307654321", "Jürgen Weiß", "Bäckerei Weiß GmbH"),
        ("491712345678", "Jürgen Weiß", "Bäckerei Weiß GmbH"),
        ("41446681800", "Régine Bühler", "Bühler Söhne AG"),  # Telefon Firma
        ("41446681801", "Régine Bühler", "Bühler Söhne AG"),  # Haupttelefon
        ("41446681809", "Régine Bühler", "Bühler Söhne AG"),  # Fax geschäftlich
        ("41796681802", "Régine Bühler", "Bühler Söhne AG"),  # Autotelefon
        ("41313334455", "Ängelä Öztürk", "Öztürk Reinigung"),
        ("41313334456", "Ängelä Öztürk", "Öztürk Reinigung"),
        ("41313334457", "Ängelä Öztürk", "Öztürk Reinigung"),
        ("41313334458", "Ängelä Öztürk", "Öztürk Reinigung"),  # Rückmeldung
    ]),
    "excel-unicode-text.txt": (0, "UTF-16 with BOM", [
        ("41225522000", "David Keller", "Keller Immobilien GmbH"),
        ("41765522001", "David Keller", "Keller Immobilien GmbH"),  # Natel
        ("41915522000", "Chiara Rossi", "Rossi Logistica Sagl"),  # "Tel. 091 552 20 00"
        ("41797654321", "Zoë Ĉapek", "Café Zentral"),
        ("49899876543", None, "Müller & Söhne KG"),
        ("49899876544", None, "Müller & Söhne KG"),  # Fax
    ]),
    "contacts.xlsx": (1, None, [
        ("41215527000", "Nathalie Rochat", "Boulangerie du Lac"),  # an integer cell
        ("41215527100", "Olivier Perret", "Menuiserie Perret"),  # a float cell
        ("41795527101", "Olivier Perret", "Menuiserie Perret"),
        ("41215527200", "Pascale Jaquet", "Fiduciaire Jaquet"),  # 215527200 shown as 0215527200
        ("41215527300", "Yves Moser", "Cabinet Vétérinaire"),
        ("41795527301", "Yves Moser", "Cabinet Vétérinaire"),  # shown as +41795527301
    ]),
    "icloud-export.vcf": (0, "UTF-8", [
        ("41793456789", "Marc Keller", "Keller Sanitär AG"),  # TEL;type=CELL;type=VOICE;type=pref
        ("41445523000", "Marc Keller", "Keller Sanitär AG"),
        ("41445523009", "Marc Keller", "Keller Sanitär AG"),  # item2.TEL with an X-ABLabel
        ("41315524000", "Garage Huber & Co.", "Garage Huber & Co."),  # TYPE=WORK,VOICE,pref; a company card
        ("41315524009", "Garage Huber & Co.", "Garage Huber & Co."),
        ("41795525000", "Thi Lan Nguyen", "Nguyen Consulting, Beratung"),
        ("41615525001", "Thi Lan Nguyen", "Nguyen Consulting, Beratung"),
    ]),
    "android-export.vcf": (0, "UTF-8", [
        ("41792223344", "Jürg Zürcher", "Bäckerei Zürcher"),  # quoted-printable name
        ("41326257080", "Jürg Zürcher", "Bäckerei Zürcher"),
        ("41326257081", "Jürg Zürcher", "Bäckerei Zürcher"),  # X-CUSTOM label
        ("41326257079", "Françoise Schönenberger-Pfäffli (Garage Schönenberger)", "Garage Schönenberger"),
        ("41326257090", "Françoise Schönenberger-Pfäffli (Garage Schönenberger)", "Garage Schönenberger"),
        ("41765526000", "Luca Bianchi", "Bianchi Trasporti SA"),
        ("41915526001", "Luca Bianchi", "Bianchi Trasporti SA"),  # 091/552 60 01
    ]),
}


def run_import(app, *args: str):
    return app.test_cli_runner().invoke(args=["directory", "import", *args])


@pytest.mark.parametrize("filename", sorted(EXPORTS))
def test_every_export_imports_and_every_contact_is_found(make_app, filename):
    skipped, encoding, expected = EXPORTS[filename]
    app = make_app()
    result = run_import(app, os.path.join(DATA, filename))
    assert result.exit_code == 0, result.output
    contacts = len({(name, company) for _, name, company in expected})
    assert f"imported {contacts} contacts, skipped {skipped} rows" in result.output
    assert "not a phone number" not in result.output and "Traceback" not in result.output
    read = next(line for line in result.output.splitlines() if line.startswith("imported "))
    assert read.endswith(f", encoding {encoding})") if encoding else "encoding" not in read
    client = app.test_client()
    for digits, name, company in expected:
        found = client.get(f"/Lookup?PhoneNumber={digits}", headers=HEADERS).get_json()
        assert [(c.get("name"), c.get("company")) for c in found] == [(name or company, company)], digits
    # importing the same file again updates, never duplicates
    assert run_import(app, os.path.join(DATA, filename)).exit_code == 0
    assert f"contacts: {contacts}\n" in app.test_cli_runner().invoke(args=["directory", "stats"]).output


def test_the_report_says_which_column_was_read_as_what(make_app):
    app = make_app()
    google = run_import(app, os.path.join(DATA, "google-contacts.csv")).output
    for line in ("Phone 1 - Value -> phone (type from Phone 1 - Label)", "Organization Name -> company",
                 "E-mail 1 - Value (else E-mail 2 - Value) -> email",
                 "Organization Title -> job title (and customData title)",
                 "line 9: no phone number (Eva Nur-Mail)"):
        assert line in google
    outlook = run_import(app, os.path.join(DATA, "outlook-contacts-cp1252.csv")).output
    for line in ("(read ", "CSV, comma-separated, encoding Windows-1252 (Latin-1))", "Company -> company",
                 "Business Phone -> phone (work)", "Company Main Phone -> phone (main)", "Home Fax -> phone (home fax)",
                 "Mobile Phone -> phone (mobile)", "TTY/TDD Phone -> phone (tty/tdd)", "E-mail Address (else"):
        assert line in outlook
    workbook = run_import(app, os.path.join(DATA, "contacts.xlsx")).output
    assert "xlsx, sheet 'Contacts', header on row 3" in workbook and "Portable -> phone (mobile)" in workbook
    assert "line 9: no phone number (Rémy Blanc)" in workbook


def test_labels_become_the_numbers_type_never_a_number(directory_path):
    with open(os.path.join(DATA, "google-contacts.csv"), encoding="utf-8", newline="") as handle:
        import csv

        table = list(csv.reader(handle))
    columns = _columns(table[0])
    rows = {row.contact.name or row.contact.company: row for row in _rows(enumerate(table[1:], 2), columns)}
    assert [(n.text, n.type) for n in rows["Anna Müller"].numbers] == [
        ("+41 21 552 20 00", "Work"), ("079/123 45 67", "Mobile")]
    assert [(n.text, n.type) for n in rows["Dieter Braun"].numbers] == [("+49 (0)30 1234567", "Work")]  # "* Work"
    assert rows["Anna Müller"].contact.phones == ["+41 21 552 20 00", "079/123 45 67"]
    assert rows["Anna Müller"].contact.custom_data == {
        "title": "Leiterin Buchhaltung", "Address 1 - Formatted": "Avenue de la Gare 10\n1003 Lausanne\nCH"}
    store = ContactStore(directory_path)
    try:
        report = import_file(store, os.path.join(DATA, "google-contacts.csv"))
        stored = [row[0] for row in store.conn.execute("SELECT key FROM phones")]
    finally:
        store.close()
    assert report.warnings == [] and len(stored) == 8
    assert all(key.startswith("+") for key in stored)  # no label was read as a (short) number


@pytest.mark.parametrize(
    "filename, name, expected",
    [
        ("google-contacts.csv", "Anna Müller", {"+41 21 552 20 00": "business", "079/123 45 67": "mobile"}),
        ("outlook-contacts-utf8.csv", "Jürg Zürcher",
         {"041 710 22 33": "business", "041 710 22 34": "fax", "079 444 55 66": "mobile"}),
        ("outlook-contacts-utf8.csv", "Françoise Schönenberger",
         {"+41 32 625 70 70": "business", "032 625 70 71": "home"}),  # Company Main Phone, Home Phone
        ("outlook-contacts-de-cp1252.csv", "Régine Bühler", None),
    ],
)
def test_the_stored_contact_keeps_each_numbers_type_and_the_job_title(directory_path, filename, name, expected):
    store = ContactStore(directory_path)
    try:
        import_file(store, os.path.join(DATA, filename))
        [row] = store.conn.execute("SELECT id FROM contacts WHERE name = ?", (name,)).fetchall()
        contact = store.get(row[0])
    finally:
        store.close()
    if expected is None:  # Telefon Firma, Haupttelefon, Fax geschäftlich, Autotelefon
        assert set(contact.phone_types.values()) == {"business", "fax", "other"}
    else:
        assert contact.phone_types == expected
    if name == "Jürg Zürcher":  # "Job Title" beside Outlook's "Title" (Dr.)
        assert contact.job_title == "Geschäftsführer"
    if name == "Anna Müller":  # Google's "Organization Title"
        assert contact.job_title == "Leiterin Buchhaltung"


@pytest.mark.parametrize(
    "header, field, phone_type",
    [
        ("Telefon", "phone", None), ("Téléphone", "phone", None), ("Tel.", "phone", None), ("TEL", "phone", None),
        ("Handy", "phone", "mobile"), ("Mobil", "phone", "mobile"), ("Natel", "phone", "mobile"),
        ("Portable", "phone", "mobile"), ("Tél. mobile", "phone", "mobile"), ("Mobile Phone", "phone", "mobile"),
        ("Telefon geschäftlich 2", "phone", "work"), ("Téléphone bureau", "phone", "work"),
        ("Telefon privat", "phone", "home"), ("Tel. Privat", "phone", "home"), ("Phone (Work)", "phone", "work"),
        ("phone_office", "phone", "work"), ("Fax geschäftlich", "phone", "work fax"), ("Télécopie", "phone", "fax"),
        ("Firma", "company", None), ("Société", "company", None), ("Entreprise", "company", None),
        ("Organization 1 - Name", "company", None), ("Nom", "last_name", None), ("Prénom", "first_name", None),
        ("Vorname", "first_name", None), ("Nachname", "last_name", None), ("E-Mail", "email", None),
        ("Courriel", "email", None), ("E-Mail 2: Adresse", "email", None), ("Adresse de messagerie", "email", None),
        ("  FIRST_NAME ", "first_name", None), ("Full Name", "name", None),
        ("mobile_private", "phone", "mobile"), ("Handynummer", "phone", "mobile"), ("Tel. Nr.", "phone", None),
        ("Tel. Geschäft", "phone", "work"), ("Autotelefon", "phone", "car"), ("Cellulaire", "phone", "mobile"),
        ("Telegram", None, None), ("Hotel", None, None), ("Phonetic Name", None, None), ("Notes", None, None),
    ],
)
def test_header_aliases(header, field, phone_type):
    columns = _columns([header])
    if field == "phone":
        assert [(kind, label) for _, kind, label in columns.phones] == [(phone_type, None)]
    elif field is None:
        assert columns.custom == [(header, 0)] and not columns.phones and not columns.named
    else:
        assert columns.named == {field: [0]} and not columns.phones


def test_the_alias_table_keys_are_normalized():
    assert all(key == header_key(key) for key in HEADER_ALIASES)
    assert header_key("E-mail 2 Address") == header_key("e_mail address") == "emailaddress"


def test_a_plain_title_is_a_salutation_beside_a_job_title():
    columns = _columns(["Title", "Name", "Job Title", "Phone"])
    assert columns.named["title"] == [2] and columns.ignored == [0]
    assert _columns(["Job Title", "Name", "Title", "Phone"]).named["title"] == [0]
    assert _columns(["Name", "Title", "Phone"]).named["title"] == [1]  # alone, it is the job title


@pytest.mark.parametrize(
    "value, number_format, text",
    [
        (41215522000, None, "41215522000"),
        (41215522000.0, None, "41215522000"),  # never 4.1215522E+10
        (41215522000, "General", "41215522000"),
        (215522000, "0000000000", "0215522000"),  # the leading zero the format shows
        (215522000, "000 000 00 00", "0215522000"),
        (41795527301, '"+"0', "+41795527301"),
        (41795527301, "\\+0", "+41795527301"),
        (12.5, None, "12.5"),
        ("  021 552 20 00", None, "  021 552 20 00"),
        (None, None, ""),
    ],
)
def test_workbook_cells_read_as_the_digits_they_show(value, number_format, text):
    assert _cell_text(value, number_format) == text


def test_workbook_sheet_option(make_app, tmp_path):
    app = make_app()
    chosen = run_import(app, os.path.join(DATA, "contacts.xlsx"), "--sheet", "Contacts")
    assert "imported 4 contacts" in chosen.output
    notes = run_import(app, os.path.join(DATA, "contacts.xlsx"), "--sheet", "Notes")
    assert "no header row with a phone column" in notes.output and "sheet 'Notes'" in notes.output
    missing = run_import(app, os.path.join(DATA, "contacts.xlsx"), "--sheet", "Kunden")
    assert missing.exit_code == 1
    assert "no sheet named 'Kunden'; the workbook has 'Notes', 'Contacts'" in missing.output
    csv_path = tmp_path / "c.csv"
    csv_path.write_text("name;phone\nAnn;021 552 20 00\n")
    assert "--sheet applies to .xlsx workbooks only" in run_import(app, str(csv_path), "--sheet", "X").output


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("binary.csv", b"name;phone\nAnn;\x00\x01\x02\n", "not a text file (binary data at line 2)"),
        ("odd.csv", b"name;phone\nAnn\x81;021 552 20 00\n",
         "neither UTF-8 nor Windows-1252/Latin-1 (byte 0x81 at line 2)"),
        ("mixed.csv", "name;phone\nZoë;021 552 20 00\n".encode() + "Zoé;021 552 20 01\n".encode("cp1252"),
         "mixes encodings: UTF-8 before line 3"),
        ("cut.csv", "name;phone\nZoë;021 552 20 00\nZ".encode() + "ü".encode()[:1], "cut short"),
        ("old.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600), "Excel 97-2003 workbook (.xls)"),
        ("broken.xlsx", b"PK\x03\x04 not really a zip", "cannot read the workbook"),
        ("utf32.csv", codecs.BOM_UTF32_LE + "name;phone\n".encode("utf-32-le"), "the file is UTF-32"),
    ],
)
def test_an_unreadable_file_gets_one_clear_line(make_app, tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    result = run_import(make_app(), str(path))
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot import ") and message in lines[0], result.output


def test_a_workbook_that_is_not_an_xlsx_inside(tmp_path, directory_path):
    path = tmp_path / "contacts.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "not a workbook")
    store = ContactStore(directory_path)
    try:
        with pytest.raises(ImportFileError, match="cannot read the workbook"):
            import_file(store, str(path))
    finally:
        store.close()


@pytest.mark.parametrize(
    "data, codec, label",
    [
        (b"name;phone\n", "utf-8", "UTF-8"),
        (codecs.BOM_UTF8 + "Zoë".encode(), "utf-8-sig", "UTF-8 with BOM"),
        ("name\tphone\r\n".encode("utf-16"), "utf-16", "UTF-16 with BOM"),
        ("Zoë\n".encode("utf-16-be") and codecs.BOM_UTF16_BE + "Zoë\n".encode("utf-16-be"), "utf-16",
         "UTF-16 with BOM"),
        ("Müller;Société;Tel. – Zentrale\n".encode("cp1252"), "cp1252", "Windows-1252 (Latin-1)"),
        ("Müller;Société\n".encode("latin-1"), "cp1252", "Windows-1252 (Latin-1)"),
    ],
)
def test_detect_encoding(data, codec, label):
    assert detect_encoding([data]) == (codec, label)


def test_detect_encoding_across_chunk_boundaries():
    text = ("x" * 999 + "ü").encode()  # the ü's two bytes fall into different chunks
    assert detect_encoding([text[:1000], text[1000:]]) == ("utf-8", "UTF-8")
    late = b"a;b\n" * 5000 + "Zürich\n".encode("cp1252")  # ASCII until far down, then Windows-1252
    assert detect_encoding([late[:8192], late[8192:]]) == ("cp1252", "Windows-1252 (Latin-1)")


def test_a_row_with_one_unreadable_value_is_imported_with_a_warning(make_app, load_contacts):
    report = load_contacts("Name;Telefon;Handy\nAnn;021 552 20 00;ruft zurück\n")
    assert report.imported == 1 and report.problems == []
    assert len(report.warnings) == 1 and report.warnings[0][0] == 2
    assert "Handy 'ruft zurück'" in report.warnings[0][1] and "its other numbers were imported" in report.warnings[0][1]
    found = make_app().test_client().get("/Lookup?PhoneNumber=41215522000", headers=HEADERS).get_json()
    assert [c["name"] for c in found] == ["Ann"]


def test_the_real_command_reports_an_undecodable_file_in_one_line(tmp_path):
    """The command as an operator runs it, in its own process: one line on stderr, exit status 1."""
    import subprocess
    import sys

    from tests.conftest import ROOT, TOKEN

    path = tmp_path / "kontakte.csv"
    path.write_bytes("Name;Telefon\nZoë;021 552 20 00\n".encode() + "Zoé;021 552 20 01\n".encode("cp1252"))
    env = {**os.environ, "LOOKUP_TOKENS": TOKEN, "LOOKUP_DIRECTORY": str(tmp_path / "d.sqlite3"),
           "LOOKUP_STATE_DB": str(tmp_path / "s.sqlite3"), "LOOKUP_INSTANCE_DIR": str(tmp_path / "i")}
    flask = os.path.join(os.path.dirname(sys.executable), "flask")
    done = subprocess.run([flask, "--app", "wsgi", "directory", "import", str(path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"Error: cannot import {path}: the file mixes encodings: UTF-8 before line 3, then a byte that is not "
        "UTF-8 (0xE9); save the whole file as 'CSV UTF-8'"]


@pytest.mark.parametrize(
    "text, source",
    [
        ("Kontaktliste März 2024\n\nName;Firma;Telefon\nAnn;Acme;021 552 20 00\nBen;Beta;\n",
         "CSV, semicolon-separated, header on line 3"),
        ("sep=,\nName,Firma,Telefon\nAnn,Acme,021 552 20 00\nBen,Beta,\n", "CSV, comma-separated, header on line 2"),
    ],
)
def test_a_title_line_or_a_separator_hint_above_the_header(make_app, load_contacts, text, source):
    report = load_contacts(text)
    assert report.source == source and report.imported == 1
    assert report.problems == [(text.count("\n"), "no phone number (Ben)")]  # the last line, counted right
    found = make_app().test_client().get("/Lookup?PhoneNumber=41215522000", headers=HEADERS).get_json()
    assert [(c["name"], c["company"]) for c in found] == [("Ann", "Acme")]


def test_a_file_without_a_phone_column_says_so_and_what_it_read(load_contacts):
    report = load_contacts("Name;Firma;Notizen\nAnn;Acme;VIP\n")
    assert report.imported == 0 and report.problems[0][1].startswith("no phone column")
    assert report.columns == ["Name -> name", "Firma -> company", "Notizen -> customData"]
    assert load_contacts("\n\n").problems == [(1, "the file is empty: a header row is required")]


def test_the_report_masks_the_digits_of_a_value_it_could_not_read(load_contacts):
    report = load_contacts("Name;Telefon;Handy\nAnn;021 552 20 00;Privat 079 12 (falsch)\n")
    assert report.imported == 1 and len(report.warnings) == 1
    reason = report.warnings[0][1]
    assert "Handy 'Privat **9 12 (falsch)'" in reason and "079" not in reason


def test_a_workbook_damaged_part_way_gets_one_line_and_keeps_the_rows_before(make_app, tmp_path):
    from openpyxl import Workbook

    whole = tmp_path / "whole.xlsx"
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["Name", "Telefon"])
    for i in range(200):
        sheet.append([f"Person {i}", f"021 552 {i // 100:02d} {i % 100:02d}"])
    workbook.save(whole)
    damaged = tmp_path / "damaged.xlsx"
    with zipfile.ZipFile(whole) as source, zipfile.ZipFile(damaged, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                data = data[: len(data) // 2]  # the sheet's XML ends in the middle of a row
            target.writestr(info, data)
    app = make_app()
    result = run_import(app, str(damaged))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "Error: cannot import" in result.output and "sheet 'Sheet' is damaged" in result.output
    found = app.test_client().get("/Lookup?PhoneNumber=41215520000", headers=HEADERS).get_json()
    assert [c["name"] for c in found] == ["Person 0"]


def test_workbook_progress_adds_up_to_the_file_size():
    from crm_backends.directory_import import _row_progress

    steps: list[int] = []
    rows = [(line, ["x"]) for line in range(2, 2502)]
    assert len(list(_row_progress(iter(rows), steps.append, 5000, 2501))) == 2500
    assert sum(steps) == 5000 and len(steps) == 3 and all(step >= 0 for step in steps)


def test_a_csv_row_the_reader_cannot_take_stops_with_one_line_after_storing_the_rows_before(make_app, tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("Name;Telefon;Notizen\nAnn;021 552 20 00;kurz\nBen;021 552 20 01;" + "x" * 200_000 + "\n")
    app = make_app()
    result = run_import(app, str(path))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "line 3: field larger than field limit" in result.output
    assert "the 1 contacts before it were imported" in result.output
    found = app.test_client().get("/Lookup?PhoneNumber=41215522000", headers=HEADERS).get_json()
    assert [c["name"] for c in found] == ["Ann"]
