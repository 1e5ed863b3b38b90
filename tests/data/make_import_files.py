"""Writes the contact exports that tests/test_import_formats.py imports.

The headers follow the vendors' documented export formats (Google Contacts CSV, current and
legacy; Outlook "Comma Separated Values", English and German); the people, companies and numbers
are invented, with numbers in the shapes people type. Run it again after a change:
``.venv/bin/python tests/data/make_import_files.py`` (the output is committed).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

HERE = Path(__file__).parent

GOOGLE_HEADER = (
    "First Name,Middle Name,Last Name,Phonetic First Name,Phonetic Middle Name,Phonetic Last Name,Name Prefix,"
    "Name Suffix,Nickname,File As,Organization Name,Organization Title,Organization Department,Birthday,Notes,"
    "Photo,Labels,E-mail 1 - Label,E-mail 1 - Value,E-mail 2 - Label,E-mail 2 - Value,Phone 1 - Label,"
    "Phone 1 - Value,Phone 2 - Label,Phone 2 - Value,Phone 3 - Label,Phone 3 - Value,Address 1 - Label,"
    "Address 1 - Formatted,Address 1 - Street,Address 1 - City,Address 1 - PO Box,Address 1 - Region,"
    "Address 1 - Postal Code,Address 1 - Country,Address 1 - Extended Address,Website 1 - Label,Website 1 - Value"
).split(",")

GOOGLE_ROWS = [
    {"First Name": "Anna", "Last Name": "Müller", "Organization Name": "Muster Treuhand AG",
     "Organization Title": "Leiterin Buchhaltung", "Labels": "* myContacts ::: Kunden",
     "E-mail 1 - Label": "* Work", "E-mail 1 - Value": "anna.mueller@muster-treuhand.example",
     "Phone 1 - Label": "Work", "Phone 1 - Value": "+41 21 552 20 00",
     "Phone 2 - Label": "Mobile", "Phone 2 - Value": "079/123 45 67",
     "Address 1 - Label": "Work", "Address 1 - Formatted": "Avenue de la Gare 10\n1003 Lausanne\nCH",
     "Address 1 - Street": "Avenue de la Gare 10", "Address 1 - City": "Lausanne",
     "Address 1 - Postal Code": "1003", "Address 1 - Country": "CH"},
    {"First Name": "Bernard", "Last Name": "Favre", "Organization Name": "Favre & Fils SA",
     "Labels": "* myContacts", "Phone 1 - Label": "Mobile",
     "Phone 1 - Value": "+41 78 900 11 22 ::: +41 21 552 20 10"},
    {"First Name": "Claudia", "Middle Name": "Maria", "Last Name": "Schmid", "Organization Name": "Schmid Bau GmbH",
     "Labels": "* myContacts", "Phone 1 - Label": "Work Fax", "Phone 1 - Value": "021 552 20 99",
     "Phone 2 - Label": "Main", "Phone 2 - Value": "021 552 20 30"},
    {"First Name": "Dieter", "Last Name": "Braun", "Organization Name": "Braun Consulting GmbH",
     "Notes": "Rückruf nur vormittags", "Labels": "* myContacts",
     "Phone 1 - Label": "* Work", "Phone 1 - Value": "+49 (0)30 1234567"},
    {"Organization Name": "Pizzeria Bella Napoli", "File As": "Pizzeria Bella Napoli", "Labels": "* myContacts",
     "Phone 1 - Label": "Work", "Phone 1 - Value": "Tel. 021 552 20 40"},
    {"First Name": "Eva", "Last Name": "Nur-Mail", "Labels": "* myContacts",
     "E-mail 1 - Label": "* Home", "E-mail 1 - Value": "eva@mail.example"},
]

GOOGLE_LEGACY_HEADER = (
    "Name,Given Name,Additional Name,Family Name,Yomi Name,Given Name Yomi,Additional Name Yomi,Family Name Yomi,"
    "Name Prefix,Name Suffix,Initials,Nickname,Short Name,Maiden Name,Birthday,Gender,Location,"
    "Billing Information,Directory Server,Mileage,Occupation,Hobby,Sensitivity,Priority,Subject,Notes,Language,"
    "Photo,Group Membership,E-mail 1 - Type,E-mail 1 - Value,Phone 1 - Type,Phone 1 - Value,Phone 2 - Type,"
    "Phone 2 - Value,Organization 1 - Type,Organization 1 - Name,Organization 1 - Yomi Name,"
    "Organization 1 - Title,Organization 1 - Department,Organization 1 - Symbol,Organization 1 - Location,"
    "Organization 1 - Job Description"
).split(",")

GOOGLE_LEGACY_ROWS = [
    {"Name": "Lukas Peter Lang", "Given Name": "Lukas", "Additional Name": "Peter", "Family Name": "Lang",
     "Group Membership": "* myContacts", "E-mail 1 - Type": "* Work", "E-mail 1 - Value": "lukas@lang.example",
     "Phone 1 - Type": "Work", "Phone 1 - Value": "062 834 50 50",
     "Phone 2 - Type": "Mobile", "Phone 2 - Value": "+41 79 834 50 51 ::: +41 79 834 50 52",
     "Organization 1 - Name": "Lang Transporte AG", "Organization 1 - Title": "Disponent"},
    {"Name": "Sophie Martin", "Given Name": "Sophie", "Family Name": "Martin",
     "Group Membership": "* myContacts ::: Lieferanten", "Phone 1 - Type": "Mobile",
     "Phone 1 - Value": "+33 6 12 34 56 78", "Organization 1 - Name": "Martin Électricité SARL"},
    {"Name": "Marco Bernasconi", "Given Name": "Marco", "Family Name": "Bernasconi",
     "Group Membership": "* myContacts", "Phone 1 - Type": "Home", "Phone 1 - Value": "091 923 45 67",
     "Organization 1 - Name": "Bernasconi Vini SA"},
]

OUTLOOK_HEADER = [
    "Title", "First Name", "Middle Name", "Last Name", "Suffix", "Company", "Department", "Job Title",
    "Business Street", "Business Street 2", "Business Street 3", "Business City", "Business State",
    "Business Postal Code", "Business Country/Region", "Home Street", "Home Street 2", "Home Street 3", "Home City",
    "Home State", "Home Postal Code", "Home Country/Region", "Other Street", "Other Street 2", "Other Street 3",
    "Other City", "Other State", "Other Postal Code", "Other Country/Region", "Assistant's Phone", "Business Fax",
    "Business Phone", "Business Phone 2", "Callback", "Car Phone", "Company Main Phone", "Home Fax", "Home Phone",
    "Home Phone 2", "ISDN", "Mobile Phone", "Other Fax", "Other Phone", "Pager", "Primary Phone", "Radio Phone",
    "TTY/TDD Phone", "Telex", "Account", "Anniversary", "Assistant's Name", "Billing Information", "Birthday",
    "Business Address PO Box", "Categories", "Children", "Directory Server", "E-mail Address", "E-mail Type",
    "E-mail Display Name", "E-mail 2 Address", "E-mail 2 Type", "E-mail 2 Display Name", "E-mail 3 Address",
    "E-mail 3 Type", "E-mail 3 Display Name", "Gender", "Government ID Number", "Hobby", "Home Address PO Box",
    "Initials", "Internet Free Busy", "Keywords", "Language", "Location", "Manager's Name", "Mileage", "Notes",
    "Office Location", "Organizational ID Number", "Other Address PO Box", "Priority", "Private", "Profession",
    "Referred By", "Sensitivity", "Spouse", "User 1", "User 2", "User 3", "User 4", "Web Page",
]
OUTLOOK_DEFAULTS = {"Anniversary": "0/0/00", "Birthday": "0/0/00", "Gender": "Unspecified", "Priority": "Normal",
                    "Private": "False", "Sensitivity": "Normal"}

OUTLOOK_ROWS = [
    {"Title": "Dr.", "First Name": "Jürg", "Last Name": "Zürcher", "Company": "Zürcher Holz AG",
     "Job Title": "Geschäftsführer", "Business Phone": "041 710 22 33", "Mobile Phone": "079 444 55 66",
     "Business Fax": "041 710 22 34", "E-mail Address": "juerg@zuercher-holz.example", "E-mail Type": "SMTP",
     "E-mail Display Name": "Jürg Zürcher (juerg@zuercher-holz.example)", "Categories": "Lieferanten"},
    {"First Name": "Françoise", "Last Name": "Schönenberger", "Company": "Garage Schönenberger",
     "Company Main Phone": "+41 32 625 70 70", "Home Phone": "032 625 70 71",
     "E-mail 2 Address": "f.schoenenberger@garage.example", "E-mail 2 Type": "SMTP"},
    {"First Name": "Hélène", "Last Name": "Dubois", "Company": "Atelier Dubois", "Assistant's Phone": "026 350 11 22",
     "Car Phone": "+41 79 350 11 23", "Other Phone": "026 350 11 24", "Pager": "026 350 11 25",
     "Callback": "026 350 11 26", "ISDN": "026 350 11 27", "Radio Phone": "026 350 11 28",
     "TTY/TDD Phone": "026 350 11 29", "Telex": "026 350 11 30", "Primary Phone": "026 350 11 31",
     "Home Fax": "026 350 11 32", "Other Fax": "026 350 11 33", "Business Phone 2": "026 350 11 34",
     "Home Phone 2": "026 350 11 35"},
]

OUTLOOK_DE_HEADER = [
    "Anrede", "Vorname", "Weitere Vornamen", "Nachname", "Suffix", "Firma", "Abteilung", "Position",
    "Straße geschäftlich", "Ort geschäftlich", "Postleitzahl geschäftlich", "Land/Region geschäftlich",
    "Telefon Assistent", "Fax geschäftlich", "Telefon geschäftlich", "Telefon geschäftlich 2", "Rückmeldung",
    "Autotelefon", "Telefon Firma", "Fax privat", "Telefon privat", "Telefon privat 2", "ISDN", "Mobiltelefon",
    "Weiteres Fax", "Weiteres Telefon", "Pager", "Haupttelefon", "Mobiltelefon 2", "Telefon für Hörbehinderte",
    "Telex", "Geburtstag", "Geschlecht", "Kategorien", "E-Mail-Adresse", "E-Mail-Typ", "E-Mail: Angezeigter Name",
    "E-Mail 2: Adresse", "Notizen", "Priorität", "Privat", "Vertraulichkeit",
]
OUTLOOK_DE_DEFAULTS = {"Geburtstag": "0.0.00", "Geschlecht": "Nicht angegeben", "Priorität": "Normal",
                       "Privat": "Aus", "Vertraulichkeit": "Normal"}
OUTLOOK_DE_ROWS = [
    {"Vorname": "Jürgen", "Nachname": "Weiß", "Firma": "Bäckerei Weiß GmbH", "Position": "Inhaber",
     "Telefon geschäftlich": "+49 (0)30 7654321", "Mobiltelefon": "+49 171 2345678",
     "E-Mail-Adresse": "j.weiss@baeckerei-weiss.example", "E-Mail-Typ": "SMTP",
     "E-Mail: Angezeigter Name": "Jürgen Weiß (j.weiss@baeckerei-weiss.example)"},
    {"Vorname": "Régine", "Nachname": "Bühler", "Firma": "Bühler Söhne AG", "Telefon Firma": "044 668 18 00",
     "Haupttelefon": "044 668 18 01", "Fax geschäftlich": "044 668 18 09", "Autotelefon": "079 668 18 02",
     "Notizen": "Öffnungszeiten: Mo–Fr"},
    {"Vorname": "Ängelä", "Nachname": "Öztürk", "Firma": "Öztürk Reinigung", "Telefon privat": "031 333 44 55",
     "Weiteres Telefon": "031 333 44 56", "Telefon Assistent": "031 333 44 57", "Rückmeldung": "031 333 44 58"},
]

UNICODE_TEXT_ROWS = [
    ["Firma", "Vorname", "Nachname", "Telefon", "Natel", "Fax", "E-Mail"],
    ["Keller Immobilien GmbH", "David", "Keller", "022 552 20 00", "+41 76 552 20 01", "", "david@keller.example"],
    ["Rossi Logistica Sagl", "Chiara", "Rossi", "Tel. 091 552 20 00", "", "", ""],
    ["Café Zentral", "Zoë", "Ĉapek", "", "079/765 43 21", "", ""],
    ["Müller & Söhne KG", "", "", "+49 (0)89 9876543", "", "+49 (0)89 9876544", ""],
]

ICLOUD_VCF = """\
BEGIN:VCARD
VERSION:3.0
PRODID:-//Apple Inc.//iPhone OS 17.4//EN
N:Keller;Marc;;;
FN:Marc Keller
ORG:Keller Sanitär AG;Kundendienst
TITLE:Serviceleiter
item1.EMAIL;type=INTERNET;type=pref:marc.keller@keller-sanitaer.example
item1.X-ABLabel:_$!<Other>!$_
TEL;type=CELL;type=VOICE;type=pref:079 345 67 89
TEL;type=WORK;type=VOICE:+41 44 552 30 00
item2.TEL:+41 (0)44 552 30 09
item2.X-ABLabel:Zentrale
item3.ADR;type=WORK;type=pref:;;Seestrasse 12;Zürich;;8002;Schweiz
item3.X-ABADR:ch
PHOTO;ENCODING=b;TYPE=JPEG:/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8UHRofHh0a
 HBwgJC4nICIsIxwcKDcpLDAxNDQ0Hyc5PTgyPC4zNDL/2wBDAQkJCQwLDBgNDRgyIRwhMjIyMjIy
 MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjL/wAARCAABAAEDASIAAhEB
REV:2024-03-12T08:15:00Z
END:VCARD
BEGIN:VCARD
VERSION:3.0
PRODID:-//Apple Inc.//iPhone OS 17.4//EN
N:;;;;
FN:Garage Huber & Co.
ORG:Garage Huber & Co.;
TEL;TYPE=WORK,VOICE,pref:+41 31 552 40 00
item1.TEL:031 552 40 09
item1.X-ABLabel:_$!<WorkFax>!$_
X-ABShowAs:COMPANY
END:VCARD
BEGIN:VCARD
VERSION:3.0
PRODID:-//Apple Inc.//macOS 14.4//EN
N:Nguyen;Thi Lan;;;
FN:Thi Lan Nguyen
ORG:Nguyen Consulting\\, Beratung;
NOTE:Kontakt über Messe Basel\\nbitte siezen
TEL;type=IPHONE;type=CELL;type=VOICE:+41 79 552 50 00
item1.TEL;type=pref:+41 61 552 50 01
item1.X-ABLabel:Büro Basel
EMAIL;type=INTERNET;type=HOME:lan@nguyen.example
END:VCARD
"""

ANDROID_VCF = """\
BEGIN:VCARD
VERSION:2.1
N;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:Z=C3=BCrcher;J=C3=BCrg;;;
FN;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:J=C3=BCrg Z=C3=BCrcher
TEL;CELL;PREF:+41 79 222 33 44
TEL;WORK:032 625 70 80
TEL;X-CUSTOM(CHARSET=UTF-8,ENCODING=QUOTED-PRINTABLE,=42=C3=BC=72=6F):032 625 70 81
EMAIL;HOME:juerg@zuercher.example
ORG;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:B=C3=A4ckerei Z=C3=BCrcher
TITLE:Inhaber
END:VCARD
BEGIN:VCARD
VERSION:2.1
N;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:Sch=C3=B6nenberger-Pf=C3=A4ffli;Fran=C3=A7oise;;;
FN;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:Fran=C3=A7oise Sch=C3=B6nenberger-Pf=C3=A4ffli (Garage Sch=
=C3=B6nenberger)
ORG;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:Garage Sch=C3=B6nenberger
TEL;WORK;FAX:032 625 70 79
TEL;HOME:+41 32 625 70 90
PHOTO;ENCODING=BASE64;JPEG:/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8UHRofHh0a
 HBwgJC4nICIsIxwcKDcpLDAxNDQ0Hyc5PTgyPC4zNDL/2wBDAQkJCQwLDBgNDRgyIRwhMjIyMjIy

END:VCARD
BEGIN:VCARD
VERSION:2.1
N:Bianchi;Luca;;;
FN:Luca Bianchi
TEL;CELL:076 552 60 00
TEL;VOICE:091/552 60 01
ORG:Bianchi Trasporti SA
X-ANDROID-CUSTOM:vnd.android.cursor.item/nickname;Luchino;1;;;;;;;;;;;;;
END:VCARD
"""


def _csv_text(header: list[str], rows: list[dict], defaults: dict | None = None, delimiter: str = ",") -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(header)
    for row in rows:
        writer.writerow([row.get(name, (defaults or {}).get(name, "")) for name in header])
    return out.getvalue()


def _outlook_text(header: list[str], rows: list[dict], defaults: dict) -> str:
    """Outlook quotes every field."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_ALL)
    writer.writerow(header)
    for row in rows:
        writer.writerow([row.get(name, defaults.get(name, "")) for name in header])
    return out.getvalue()


def write_xlsx(path: Path) -> None:
    """A hand-kept sheet in French: a title row above the header, numbers typed as numbers."""
    from openpyxl import Workbook

    workbook = Workbook()
    notes = workbook.active
    notes.title = "Notes"
    notes.append(["Liste des contacts, mise à jour mars 2024"])
    sheet = workbook.create_sheet("Contacts")
    sheet.append(["Carnet d'adresses Favre & Fils"])
    sheet.append([])
    sheet.append(["Société", "Prénom", "Nom", "Téléphone bureau", "Portable", "Courriel", "Fonction"])
    sheet.append(["Boulangerie du Lac", "Nathalie", "Rochat", 41215527000, "", "n.rochat@boulangerie.example",
                  "Gérante"])
    sheet.append(["Menuiserie Perret", "Olivier", "Perret", 41215527100.0, "079 552 71 01", None, None])
    row = ["Fiduciaire Jaquet", "Pascale", "Jaquet", 215527200, None, None, None]
    sheet.append(row)
    sheet.cell(row=sheet.max_row, column=4).number_format = "0000000000"  # shows 0215527200
    sheet.append(["Cabinet Vétérinaire", "Yves", "Moser", "+41 21 552 73 00", 41795527301, None, None])
    sheet.cell(row=sheet.max_row, column=5).number_format = '"+"0'  # shows +41795527301
    sheet.append([])
    sheet.append(["Sans numéro SA", "Rémy", "Blanc", None, None, "remy@blanc.example", None])
    workbook.save(path)


def main() -> None:
    (HERE / "google-contacts.csv").write_text(_csv_text(GOOGLE_HEADER, GOOGLE_ROWS), encoding="utf-8", newline="")
    (HERE / "google-contacts-legacy.csv").write_text(
        _csv_text(GOOGLE_LEGACY_HEADER, GOOGLE_LEGACY_ROWS), encoding="utf-8", newline="")
    (HERE / "outlook-contacts-utf8.csv").write_text(
        _outlook_text(OUTLOOK_HEADER, OUTLOOK_ROWS, OUTLOOK_DEFAULTS), encoding="utf-8-sig", newline="")
    (HERE / "outlook-contacts-cp1252.csv").write_text(
        _outlook_text(OUTLOOK_HEADER, OUTLOOK_ROWS, OUTLOOK_DEFAULTS), encoding="cp1252", newline="")
    (HERE / "outlook-contacts-de-cp1252.csv").write_text(
        _outlook_text(OUTLOOK_DE_HEADER, OUTLOOK_DE_ROWS, OUTLOOK_DE_DEFAULTS), encoding="cp1252", newline="")
    (HERE / "excel-unicode-text.txt").write_text(
        "".join("\t".join(row) + "\r\n" for row in UNICODE_TEXT_ROWS), encoding="utf-16", newline="")
    (HERE / "icloud-export.vcf").write_text(ICLOUD_VCF.replace("\n", "\r\n"), encoding="utf-8", newline="")
    (HERE / "android-export.vcf").write_text(ANDROID_VCF.replace("\n", "\r\n"), encoding="utf-8", newline="")
    write_xlsx(HERE / "contacts.xlsx")


if __name__ == "__main__":
    main()
