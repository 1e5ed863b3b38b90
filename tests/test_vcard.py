"""The vCard reader shared by the CardDAV backend and the directory import (crm_backends/vcard.py)."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from crm_backends.vcard import Tel, VCardEntry, decode_vcard_bytes, derived_id, parse_vcards
from lookup_core.phone import parse_number

DATA = Path(__file__).parent / "data"


def load(name: str) -> list[VCardEntry]:
    return list(parse_vcards(decode_vcard_bytes((DATA / name).read_bytes())))


def summary(entry: VCardEntry) -> tuple:
    c = entry.contact
    return (entry.line, c.id, c.name, c.company, c.email, c.custom_data, entry.tels, entry.problem)


def test_nextcloud_export_v3():
    entries = load("nextcloud-export.vcf")
    assert [summary(e) for e in entries] == [
        (
            1,
            "0b6f1a8e-3c1d-4a52-9d1e-5a2f8c7b9e01",
            "Anna Müller",
            "Muster Treuhand AG",
            "anna.mueller@muster-treuhand.example",
            {"title": "Leiterin Buchhaltung"},
            [Tel("(021) 552 20 00", ("work", "voice")), Tel("+41 79 123 45 67", ("cell",))],
            None,
        ),
        (
            15,
            "6d2c4b1a-8f7e-4c3d-b2a1-0e9f8d7c6b02",
            "Bernard Favre",
            "Favre & Fils SA",
            "b.favre@favre-fils.example",  # the PREF address, not the first one
            {},
            [Tel("+41 21 552 20 00", ("work",))],
            None,
        ),
        (
            27,
            "a3e5c7d9-1b2f-4e6a-8c0d-2f4e6a8c0d03",
            "Chiara Rossi",
            "Rossi Logistica Sagl",
            None,
            {},
            [Tel("0041215522000", ("home",))],
            None,
        ),
        (
            36,
            "c9d8e7f6-a5b4-4c3d-9e2f-1a0b9c8d7e04",
            "David Keller",
            "Keller Immobilien GmbH",
            None,
            {},
            [Tel("+41 22 552 20 00", ("work",))],
            None,
        ),
        (
            45,
            "e1f2a3b4-c5d6-4e7f-8a9b-0c1d2e3f4a05",
            "Elena Weber",
            None,
            "elena.weber@mail.example",
            {},
            [],
            "no phone number (no TEL property with a value)",
        ),
        (
            54,
            "F2B6C0E4-7A1D-4C55-9B3E-2D8F6A4C1E06",
            "Meier, Hans",  # escaped comma
            "Meier, Graf & Partner",  # first ORG component, escaped comma kept in it
            "hans.meier@meier-graf.example",
            {"title": "Partner; Verwaltungsrat"},
            # Apple grouped numbers get their X-ABLabel as a type
            [Tel("+41 44 668 18 00", ("pref", "zentrale")), Tel("044 668 18 09", ("mobile",))],
            None,
        ),
    ]
    assert entries[0].version == "3.0"
    assert entries[0].contact.phones == ["(021) 552 20 00", "+41 79 123 45 67"]


def test_vcard_4_tel_uris_and_quoted_types():
    entries = load("contacts-v4.vcf")
    assert [summary(e) for e in entries] == [
        (
            1,
            "urn:uuid:4fbe8971-0bc3-424c-9c26-36c3e1eff6b1",
            "Frieda Huber",
            "Huber Elektro AG",
            "frieda.huber@huber-elektro.example",
            {"title": "Projektleiterin"},
            [Tel("+41-31-310-40-40;ext=123", ("work", "voice")), Tel("+41-79-555-12-34", ("cell",))],
            None,
        ),
        (
            15,
            "urn:uuid:7d1a2b3c-4d5e-4f60-8172-93a4b5c6d7e8",
            "Helen Brooks",
            "Brooks & Partners LLP",
            "helen@brooks-partners.example",
            {},
            [Tel("+1-212-555-0142", ("work", "voice")), Tel("+1-212-555-0143", ("fax",))],
            None,
        ),
        (
            26,
            "urn:uuid:0a9b8c7d-6e5f-4a3b-9c2d-1e0f9a8b7c6d",
            "Bäckerei Sonnenschein",
            "Bäckerei Sonnenschein GmbH",
            None,
            {},
            [Tel("061 261 10 10", ("work",))],
            None,
        ),
    ]
    # the tel: URI's extension survives in a form the number normalization understands
    frieda = parse_number(entries[0].contact.phones[0])
    assert (frieda.key, frieda.extension) == ("+41313104040", "123")


def test_google_and_outlook_v3_without_uid():
    entries = load("google-outlook-v3.vcf")
    assert [(e.line, e.uid, e.contact.name, e.contact.company, e.problem) for e in entries] == [
        (1, None, "Isabelle Dubois", "Atelier Dubois", None),
        (15, None, "Jonas Frei", None, None),
        (24, None, "Katrin Vogel", None, "no usable phone number (1 TEL value(s), none is a phone number)"),
        (32, "{3A1F7C22-58B4-4D1E-9F0A-6C2B8D4E1F77}", "Lukas Peter Lang", "Lang Transporte AG", None),
    ]
    isabelle = entries[0]
    assert isabelle.tels == [Tel("+41 78 901 23 45", ("cell",)), Tel("+41 26 350 11 22", ("atelier",))]
    assert isabelle.contact.email == "isabelle.dubois@atelier-dubois.example"
    assert isabelle.contact.custom_data == {"title": "Architecte"}
    # no UID: the id is derived from the name and the numbers, the same at every import
    assert isabelle.contact.id == derived_id("Isabelle Dubois", ["+41 78 901 23 45", "+41 26 350 11 22"])
    assert isabelle.contact.id.startswith("vcard-")
    assert [e.contact.id for e in load("google-outlook-v3.vcf")] == [e.contact.id for e in entries]
    assert entries[3].contact.email == "lukas.lang@lang-transporte.example"
    assert parse_number(entries[3].contact.phones[0]).key == "+41628345050"


def test_phone_made_v21_quoted_printable():
    entries = load("phone-v21.vcf")
    assert [(e.line, e.contact.name, e.contact.company, e.problem) for e in entries] == [
        (1, "Jürg Müller", None, None),
        (10, "Françoise Schönenberger (Garage Schönenberger)", "Garage Schönenberger", None),  # soft break
        (19, "Beat Zürcher", "Zürcher Holz AG", None),  # CHARSET=Windows-1252, bare QUOTED-PRINTABLE
        (31, "Pizzeria Bella", None, "no phone number (no TEL property with a value)"),
        (37, "Otto Agent", None, None),  # the nested AGENT card is not a contact of its own
    ]
    assert entries[0].tels == [
        Tel("+41791112233", ("cell", "pref")),
        Tel("0313334455", ("home",)),
        Tel("031 333 44 66", ("work", "voice")),
    ]
    assert entries[2].contact.email == "beat@zuercher-holz.example"
    assert entries[2].contact.custom_data == {"title": "Schreiner"}
    assert entries[4].contact.phones == ["+41 61 555 00 10"]


def test_folding_bom_and_escapes():
    text = (
        "\ufeffBEGIN:VCARD\r\nVERSION:3.0\r\nUID:fold-1\r\nFN:Very Long Name Of A Person Who\r\n"
        "  Has Many Words\r\nORG:Alpha\\; Beta\\, Gamma;Dept\r\nTITLE:Line one\\nline two\r\n"
        "TEL;TYPE=WORK:+41 21 55\n\t2 20 00\r\nEND:VCARD\r\n"
    )
    (entry,) = parse_vcards(text)
    assert entry.contact.name == "Very Long Name Of A Person Who Has Many Words"
    assert entry.contact.company == "Alpha; Beta, Gamma"
    assert entry.contact.custom_data == {"title": "Line one line two"}
    assert entry.contact.phones == ["+41 21 552 20 00"]
    assert entry.uid == "fold-1"


def test_names_from_n_nickname_or_org():
    text = (
        "BEGIN:VCARD\nVERSION:3.0\nN:Graf;Urs;;Prof. Dr.;\nTEL:0445551111\nEND:VCARD\n"
        "BEGIN:VCARD\nVERSION:3.0\nNICKNAME:Housi\nTEL:0445551112\nEND:VCARD\n"
        "BEGIN:VCARD\nVERSION:3.0\nORG:Hotel Alpina;Reception\nTEL:0445551113\nEND:VCARD\n"
        "BEGIN:VCARD\nVERSION:3.0\nTEL:0445551114\nEND:VCARD\n"
    )
    names = [(e.contact.name, e.contact.company) for e in parse_vcards(text)]
    assert names == [
        ("Prof. Dr. Urs Graf", None),
        ("Housi", None),
        ("Hotel Alpina", "Hotel Alpina"),
        (None, None),
    ]


def test_quoted_parameters_and_repeated_types():
    text = (
        "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:q-1\r\nFN:Quote Test\r\n"
        'TEL;TYPE=work;TYPE=VOICE;X-LABEL="Desk: 3rd floor; left":+41 31 322 21 11\r\n'
        'TEL;VALUE=uri;TYPE="cell":tel:%2B41-79-000-00-01\r\nEND:VCARD\r\n'
    )
    (entry,) = parse_vcards(text)
    assert entry.tels == [Tel("+41 31 322 21 11", ("work", "voice")), Tel("+41-79-000-00-01", ("cell",))]


def test_broken_input_is_skipped_not_fatal():
    text = (
        "garbage before the first card\n"
        "BEGIN:VCARD\nVERSION:3.0\nthis line has no colon\n;:\nUID:ok-1\nFN:Still Fine\n"
        "PHOTO;ENCODING=b;TYPE=JPEG:AAAA\nTEL:+41 21 552 20 00\nEND:VCARD\n"
        "BEGIN:VCARD\nVERSION:3.0\nUID:cut-1\nFN:Cut Off\nTEL:+41 21 552 20 01\n"
    )
    first, second = parse_vcards(text)
    assert (first.line, first.contact.name, first.problem) == (2, "Still Fine", None)
    assert (second.line, second.uid) == (11, "cut-1")
    assert second.problem == "the card is not closed (END:VCARD missing)"
    assert list(parse_vcards("")) == []
    assert list(parse_vcards("not a vcard at all\n")) == []


def test_dangling_soft_line_break_does_not_swallow_the_end():
    text = (
        "BEGIN:VCARD\r\nVERSION:2.1\r\nFN;ENCODING=QUOTED-PRINTABLE:Ren=C3=A9 Roth=\r\nEND:VCARD\r\n"
        "BEGIN:VCARD\r\nVERSION:2.1\r\nFN:Next\r\nTEL:0442223344\r\nEND:VCARD\r\n"
    )
    first, second = parse_vcards(text)
    assert (first.contact.name, first.problem) == (
        "René Roth",
        "no phone number (no TEL property with a value)",
    )
    assert (second.line, second.contact.name, second.problem) == (5, "Next", None)


def test_short_internal_numbers_are_usable():
    (entry,) = parse_vcards("BEGIN:VCARD\nVERSION:3.0\nUID:x\nFN:Empfang\nTEL;TYPE=work:201\nEND:VCARD\n")
    assert entry.problem is None
    assert parse_number(entry.contact.phones[0]).key == "ext:201"


def test_derived_id_ignores_order_and_separators():
    a = derived_id("Jonas Frei", ["071 227 45 00", "071 227 45 01"])
    assert a == derived_id(" jonas frei ", ["071 227 45 01", "071-227-45-00"])
    assert a != derived_id("Jonas Frei", ["071 227 45 00"])
    assert a != derived_id("Jonas Frey", ["071 227 45 00", "071 227 45 01"])


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("FN:Zoë".encode(), "FN:Zoë"),
        (codecs.BOM_UTF8 + "FN:Zoë".encode(), "FN:Zoë"),
        ("FN:Zoë".encode("utf-16"), "FN:Zoë"),
        ("FN:Zoë".encode("cp1252"), "FN:Zoë"),
    ],
)
def test_decode_vcard_bytes(data: bytes, expected: str):
    assert decode_vcard_bytes(data) == expected


def test_icloud_export():
    entries = load("icloud-export.vcf")
    assert [(e.line, e.contact.name, e.contact.company, e.tels, e.problem) for e in entries] == [
        (1, "Marc Keller", "Keller Sanitär AG", [
            Tel("079 345 67 89", ("cell", "voice", "pref")),
            Tel("+41 44 552 30 00", ("work", "voice")),
            Tel("+41 (0)44 552 30 09", ("zentrale",)),  # item2.TEL with its item2.X-ABLabel
        ], None),
        (21, "Garage Huber & Co.", "Garage Huber & Co.", [  # a company card: N empty, X-ABShowAs:COMPANY
            Tel("+41 31 552 40 00", ("work", "voice", "pref")),  # TYPE=WORK,VOICE,pref
            Tel("031 552 40 09", ("workfax",)),  # Apple's _$!<WorkFax>!$_
        ], None),
        (32, "Thi Lan Nguyen", "Nguyen Consulting, Beratung", [
            Tel("+41 79 552 50 00", ("iphone", "cell", "voice")),
            Tel("+41 61 552 50 01", ("pref", "büro basel")),
        ], None),
    ]
    assert entries[0].contact.email == "marc.keller@keller-sanitaer.example"  # item1.EMAIL;type=pref
    assert entries[0].contact.custom_data == {"title": "Serviceleiter"}
    assert all(e.uid is None and e.contact.id.startswith("vcard-") for e in entries)  # iCloud writes no UID here


def test_android_export_v21():
    entries = load("android-export.vcf")
    assert [(e.line, e.contact.name, e.contact.company, e.tels, e.problem) for e in entries] == [
        (1, "Jürg Zürcher", "Bäckerei Zürcher", [
            Tel("+41 79 222 33 44", ("cell", "pref")),
            Tel("032 625 70 80", ("work",)),
            Tel("032 625 70 81", ("büro",)),  # TEL;X-CUSTOM(CHARSET=UTF-8,ENCODING=QUOTED-PRINTABLE,=42=C3=BC=72=6F)
        ], None),
        # a quoted-printable name with a soft line break, a folded base64 PHOTO and a blank line after it
        (12, "Françoise Schönenberger-Pfäffli (Garage Schönenberger)", "Garage Schönenberger", [
            Tel("032 625 70 79", ("work", "fax")),
            Tel("+41 32 625 70 90", ("home",)),
        ], None),
        (24, "Luca Bianchi", "Bianchi Trasporti SA", [
            Tel("076 552 60 00", ("cell",)), Tel("091/552 60 01", ("voice",)),
        ], None),
    ]


def test_each_number_gets_the_type_its_card_gives():
    icloud = load("icloud-export.vcf")
    assert [e.contact.phone_types for e in icloud] == [
        {"079 345 67 89": "mobile", "+41 44 552 30 00": "business", "+41 (0)44 552 30 09": "business"},
        {"+41 31 552 40 00": "business", "031 552 40 09": "fax"},  # Apple's WorkFax label
        {"+41 79 552 50 00": "mobile", "+41 61 552 50 01": "business"},  # iPhone; "büro basel"
    ]
    frieda, helen, _ = load("contacts-v4.vcf")
    assert list(frieda.contact.phone_types.values()) == ["business", "mobile"]  # work,voice; cell
    assert list(helen.contact.phone_types.values()) == ["business", "fax"]
    assert frieda.contact.job_title == "Projektleiterin" and icloud[0].contact.job_title == "Serviceleiter"


def test_a_photo_by_address_is_the_picture_an_embedded_one_is_not():
    text = (
        "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Mia Rossi\r\nTEL;TYPE=cell:+41 79 555 10 20\r\nTEL:+41 21 552 20 00\r\n"
        "PHOTO:https://cdn.example/mia.jpg\r\nEND:VCARD\r\n"
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Ugo Rossi\r\nTEL;TYPE=HOME:+41 21 552 20 01\r\n"
        "PHOTO;ENCODING=b;TYPE=JPEG:/9j/4AAQSkZJRgABAQAAAQABAAD\r\n AAQSkZJRg==\r\nEND:VCARD\r\n"
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Eva Rossi\r\nTEL:+41 21 552 20 02\r\n"
        "PHOTO;VALUE=uri:data:image/png;base64,iVBORw0KGgo=\r\nEND:VCARD\r\n"
    )
    mia, ugo, eva = parse_vcards(text)
    assert mia.contact.image_url == "https://cdn.example/mia.jpg"
    assert mia.contact.phone_types == {"+41 79 555 10 20": "mobile"}  # no TYPE: no entry, "unknown"
    assert ugo.contact.image_url is None and ugo.contact.phone_types == {"+41 21 552 20 01": "home"}
    assert eva.contact.image_url is None
