"""Number normalization: every spelling of a line gives one key; short numbers stay apart."""

import pytest

from crm_backends.contact_store import ContactStore, normalize_phones
from lookup_core.phone import (
    A_DATE,
    BAD_EXTENSION,
    BAD_TEL_URI,
    DIGITS_LOST,
    MAX_STORED_CHARS,
    NO_NUMBER,
    NOT_POSSIBLE,
    SHORT_WITH_TEXT,
    TOO_LONG,
    InvalidPhoneNumber,
    extract_numbers,
    mask,
    parse_number,
)
from lookup_core.phone_types import PHONE_TYPES, phone_type
from lookup_core.types import Contact

LOOKED_UP = ["41215522000", "+41215522000", "0041215522000", "0215522000", "021 552 20 00"]
STORED = [
    "+41 21 552 20 00", "021 552 20 00", "0041 21 552 20 00", "+41 (0)21 552 20 00", "021/552.20.00",
    "+41-21-552-20-00",
]


@pytest.mark.parametrize("looked_up", LOOKED_UP)
@pytest.mark.parametrize("stored", STORED)
def test_every_lookup_form_matches_every_stored_form(looked_up, stored):
    assert parse_number(looked_up, "CH").key == parse_number(stored, "CH").key == "+41215522000"


@pytest.mark.parametrize(
    "looked_up, stored",
    [
        ("4930123456", "+49 30 123456"),
        ("004930123456", "+49 (0)30 123456"),
        ("33142685300", "+33 1 42 68 53 00"),
        ("12125551234", "+1 (212) 555-1234"),
        ("4930123456", "0049 30 123456"),
    ],
)
def test_foreign_numbers_stored_with_their_country_code(looked_up, stored):
    assert parse_number(looked_up, "CH").key == parse_number(stored, "CH").key


def test_national_numbers_use_the_default_region():
    assert parse_number("030 123456", "DE").key == "+4930123456"
    assert parse_number("030 123456", "DE").key != parse_number("030 123456", "CH").key


@pytest.mark.parametrize("stored", ["+41 21 552 20 00 ext. 12", "+41215522000;ext=12", "+41 21 552 20 00 x12"])
def test_extension_is_split_from_the_main_number(stored):
    parsed = parse_number(stored, "CH")
    assert parsed.key == "+41215522000"
    assert parsed.extension == "12"


def test_short_internal_numbers_never_match_the_tail_of_a_long_one():
    short = parse_number("201", "CH")
    assert short.is_short and short.key == "ext:201"
    assert short.key != parse_number("+41 21 552 02 01", "CH").key
    assert parse_number("000", "CH").key != parse_number("201", "CH").key
    # a long number is never reduced to its last digits
    assert parse_number("+41 21 552 22 01", "CH").key.endswith("201")
    assert parse_number("+41 21 552 22 01", "CH").key != short.key


def test_search_forms_for_live_sources():
    forms = parse_number("41215522000", "CH").search_forms()
    assert forms[:4] == ["+41215522000", "41215522000", "0215522000", "215522000"]
    assert parse_number("201", "CH").search_forms() == ["201"]


@pytest.mark.parametrize(
    "text, why",
    [("", "empty"), ("abc", "only digits"), ("41 21 CALL ME", "only digits"), ("1", "2 to 20"),
     ("1" * 21, "2 to 20"), ("<script>", "only digits")],
)
def test_invalid_numbers_say_why(text, why):
    with pytest.raises(InvalidPhoneNumber, match=why):
        parse_number(text, "CH")


def test_mask_keeps_only_the_last_three_digits():
    assert mask("+41 21 552 20 00") == "********000"
    assert mask("12") == "***"


@pytest.mark.parametrize("region", ["CH", "DE", "FR", "AT", "NL", "BE", "US", "GB", "IT"])
def test_the_shortcut_for_plain_spellings_agrees_with_phonenumbers(region):
    """_plain_form skips phonenumbers.parse; over random numbers of every length, in every plain
    spelling and for every country code it claims, it must give what the general path gives."""
    import random
    import re

    from lookup_core.phone import _SOUND_CODES, _parsed_form, _plain_form, _region_shape

    rng = random.Random(region)
    own_code, _ = _region_shape(region)
    codes = sorted(_SOUND_CODES)
    checked = 0
    for _ in range(3000):
        code = own_code if rng.random() < 0.5 else rng.choice(codes)
        nsn = str(rng.randint(0, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(rng.randint(3, 13)))
        spellings = [f"+{code} {nsn[:2]} {nsn[2:]}", f"00{code}{nsn}", code + nsn]
        if code == own_code:
            spellings.append("0" + nsn[:2] + "/" + nsn[2:])
        for text in spellings:
            digits = re.sub(r"\D", "", text)
            if not 2 <= len(digits) <= 20:
                continue
            fast = _plain_form(text, digits, region, None)
            if fast is None:
                continue
            international = text.startswith("+") or digits.startswith("00")
            assert fast == _parsed_form(text, digits, region, international, None), text
            checked += 1
    assert checked > 500 or not _region_shape(region)[1]


# --- stored numbers: extract_numbers ------------------------------------------------------------

def keys(text: str, region: str = "CH") -> list[tuple[str, str | None]]:
    numbers, problems = extract_numbers(text, region)
    assert problems == [], problems
    return [(n.key, n.extension) for n in numbers]


ANNA = [("+41215522000", None)]


@pytest.mark.parametrize(
    "stored",
    [
        "Tel. +41 21 552 20 00", "Tel: 021 552 20 00", "Mobile: +41 21 552 20 00", "Büro: 021 552 20 00",
        "Telefon (Zentrale) 021 552 20 00", "Tel. 2: 021 552 20 00", "(Tel. 021 552 20 00)",
        "+41 21 552 20 00 (Büro)", "+41 21 552 20 00 \u2013 Zentrale", "021 552 20 00 \u2014 nur vormittags",
        "021 552 20 00 [Privat]", "Geändert 2026-11-21 021 552 20 00",
    ],
)
def test_labels_and_annotations_around_a_number(stored):
    assert keys(stored) == ANNA


@pytest.mark.parametrize(
    "stored, extension",
    [("+41 21 552 20 00 ext. 12", "12"), ("+41 21 552 20 00 x12", "12"), ("+41 21 552 20 00 #12", "12"),
     ("Büro: 021 552 20 00 Durchwahl 12", "12"), ("+41 21 552 20 00 (ext. 123)", "123"),
     ("021 552 20 00, intern 12", "12"), ("+41215522000;ext=12", "12"), ("tel:+41-21-552-20-00;ext=12", "12"),
     ("+41215522000,,12", "12"), ("+41215522000,12#", "12"), ("021 552 20 00, 12", "12")],
)
def test_an_extension_stays_an_extension(stored, extension):
    assert keys(stored) == [("+41215522000", extension)]


@pytest.mark.parametrize(
    "stored",
    [
        "tel:+41-21-552-20-00", "TEL:+41.21.552.20.00", "tel:+41-21-552-20-00;isub=12",
        "tel:552-20-00;phone-context=+41-21", "tel:21-552-20-00;phone-context=+41",
        "tel:021-552-20-00;phone-context=example.ch",  # a domain names no country: the region's
        "tel:%2B41-21-552-20-00", "552-20-00;phone-context=+41-21",  # as vcard.py hands it on
    ],
)
def test_rfc3966_tel_uris(stored):
    assert keys(stored) == ANNA


def test_a_local_tel_uri_with_a_domain_context_is_an_internal_number():
    assert keys("tel:7042;phone-context=example.com") == [("ext:7042", None)]


@pytest.mark.parametrize(
    "stored, region, key",
    [
        ("+44 (0)20 7946 0958", "CH", "+442079460958"),
        ("+44 (0) 20 7946 0958", "CH", "+442079460958"),
        ("+49 (0)30 123456", "CH", "+4930123456"),
        ("+36 (06) 1 234 5678", "CH", "+3612345678"),  # Hungary's trunk prefix is 06
        ("(06 1) 234 5678", "HU", "+3612345678"),
        ("+7 (8) 301 123-45-67", "CH", "+73011234567"),  # Russia's is 8
        ("8 (301) 123-45-67", "RU", "+73011234567"),
        ("+1 (1) 201-555-0123", "CH", "+12015550123"),
        ("+7 (495) 123-45-67", "CH", "+74951234567"),  # an area code in brackets stays
        ("+39 (0)2 1234 5678", "CH", "+390212345678"),  # Italy has no trunk prefix: the 0 is the number's
    ],
)
def test_a_bracketed_trunk_prefix_is_read_from_the_countrys_metadata(stored, region, key):
    assert keys(stored, region) == [(key, None)]


@pytest.mark.parametrize(
    "stored",
    [
        "\uff0b\uff14\uff11 \uff12\uff11 \uff15\uff15\uff12 \uff12\uff10 \uff10\uff10",  # full-width
        "+41\u00a021\u00a0552\u00a020\u00a000",  # no-break spaces
        "+41\u200921\u2009552\u202f20\u202f00",  # thin and narrow no-break spaces
        "021\u2013552\u201420\u201100", "021\u2212552 20 00",  # en, em, non-breaking hyphen, minus
        "021 552 20\u00ad00", "\ufeff021 552\u200b 20 00",  # soft hyphen, BOM, zero-width space
        "\u200e+41 21 552 20 00\u200f",  # direction marks
        "+\u0664\u0661 \u0662\u0661 \u0665\u0665\u0662 \u0662\u0660 \u0660\u0660",  # Arabic-Indic digits
        "\uff08021\uff09 552 20 00",  # full-width brackets
        "021\u00b7552\u00b720\u00b700",  # middle dots
    ],
)
def test_non_ascii_digits_and_separators(stored):
    assert keys(stored) == ANNA


@pytest.mark.parametrize(
    "stored", ["41215522000.0", "41215522000.00", "4.1215522E+10", "4.1215522e10", "4,1215522E+10",
               "'+41 21 552 20 00", "'0215522000", '="0215522000"', '"+41 21 552 20 00"'],
)
def test_what_spreadsheets_do_to_a_number_cell(stored):
    assert keys(stored) == ANNA


@pytest.mark.parametrize(
    "stored",
    ["+41 21 552 20 00 ::: +41 79 123 45 67", "021 552 20 00; 079 123 45 67", "021 552 20 00, 079 123 45 67",
     "021 552 20 00\n079 123 45 67", "021 552 20 00\r\n079 123 45 67", "Büro: 021 552 20 00\nMobil: 079 123 45 67",
     "021 552 20 00 / 079 123 45 67", "+41 21 552 20 00 +41 79 123 45 67", "021 552 20 00 oder 079 123 45 67",
     "021 552 20 00 ::: 079 123 45 67 ::: 021 552 20 00"],
)
def test_several_numbers_in_one_field_are_each_read(stored):
    assert keys(stored) == [("+41215522000", None), ("+41791234567", None)]


@pytest.mark.parametrize("stored", ["021/552.20.00", "021/552 20 00", "+41 (0)21/552.20.00"])
def test_a_slash_inside_a_number_is_a_separator(stored):
    assert keys(stored) == ANNA


def test_national_grouping_is_read_in_the_region_before_the_bare_digits_reading():
    # read with a '+' these digits are valid elsewhere (+20 …, +1 312 …): as written, they are national
    assert keys("(201) 555-0123", "US") == [("+12015550123", None)]
    assert keys("131 2345 6789", "CN") == [("+8613123456789", None)]
    assert keys("12015550123", "CH") == [("+12015550123", None)]  # the connector's form stays international


@pytest.mark.parametrize("stored", ["201", "Intern: 201", "tel:201", "'201"])
def test_a_short_number_standing_alone_is_an_internal_number(stored):
    assert keys(stored) == [("ext:201", None)]


def test_several_internal_numbers_in_one_field():
    assert keys("201, 202") == keys("201,202") == [("ext:201", None), ("ext:202", None)]


@pytest.mark.parametrize(
    "stored, reason",
    [
        ("", None), ("   ", None), (" ::: ", None),
        ("anna@example.com", NO_NUMBER), ("n/a", NO_NUMBER), ("unbekannt", NO_NUMBER), ("-", NO_NUMBER),
        ("2026-11-21", A_DATE), ("21.11.2026", A_DATE), ("1/2/2026", A_DATE),
        ("8001 Zürich", SHORT_WITH_TEXT), ("CH-8001 Zürich", SHORT_WITH_TEXT), ("Zimmer 12", SHORT_WITH_TEXT),
        ("201 (Empfang)", SHORT_WITH_TEXT), ("201 / 202", SHORT_WITH_TEXT), ("intern 12", SHORT_WITH_TEXT),
        ("0800 FLOWERS", SHORT_WITH_TEXT),
        ("+41 21 552", NOT_POSSIBLE), ("Tel. +41 21 552 20 00 00 00 00 00 00 00 00", "2 to 20"),
        ("4.12155E+10", DIGITS_LOST), ("4.1E+10", DIGITS_LOST), ("4.1215522E+25", DIGITS_LOST),
        ("tel:+41-21-552-20-00;ext=zwölf", BAD_EXTENSION),
        ("tel:552-20-00;phone-context=+41-2x1", BAD_TEL_URI), ("tel:55x2;phone-context=+41-21", BAD_TEL_URI),
        ("tel:552-20-00;phone-context=", BAD_TEL_URI),
        ("1" * 1001, TOO_LONG),
    ],
)
def test_what_is_not_a_number_is_reported_and_never_matched(stored, reason):
    numbers, problems = extract_numbers(stored, "CH")
    assert numbers == []
    if reason is None:  # an empty value is no number, and nothing to report
        assert problems == []
    else:
        assert len(problems) == 1 and reason in problems[0]
        digits = "".join(ch for ch in stored if ch.isdigit())
        assert not any(digits[i : i + 3] in problems[0] for i in range(len(digits) - 2)), "no digits of the value"


def test_a_readable_and_an_unreadable_part_of_one_field():
    numbers, problems = extract_numbers("021 552 20 00; siehe Notiz; 2026-11-21", "CH")
    assert [n.key for n in numbers] == ["+41215522000"]
    assert problems == [NO_NUMBER, A_DATE]


@pytest.mark.parametrize(
    "stored",
    ["+41 21 552 20 00", "021 552 20 00", "0041215522000", "41215522000", "021/552.20.00", "+41-21-552-20-00",
     "201", "0215522000", "+49 30 123456", "12125551234", "+1 212 555 1234", "00 41 21 552 20 00"],
)
def test_plain_values_read_as_the_lookup_reads_them(stored):
    """The fast path for plain values and the general path agree, and agree with parse_number."""
    from lookup_core.phone import _extract

    assert extract_numbers(stored, "CH")[0] == _extract(stored, "CH")[0] == [parse_number(stored, "CH")]


# --- untrusted input in linear time (figures: python -m bench.phone_adversarial) ---------------

ADVERSARIAL = [
    " " * 65536, "1 " * 32768, "x" * 65536, "+" * 65536, "(" * 65536, "1(" * 32768, "+12" * 21845,
    "1 x " * 16384, " " * 65535 + "x1", "2026-11-21 " * 5958, "tel:" + "+" * 65532, ";ext=" * 13107,
    "\u00a0" * 65536, "\u00ad" * 65536, ":::" * 21845,
]


@pytest.mark.parametrize("text", ADVERSARIAL, ids=lambda t: f"{t[:6]!r}x{len(t)}")
def test_hostile_stored_values_are_refused_as_too_long(text):
    assert extract_numbers(text, "CH") == ([], [TOO_LONG])


@pytest.mark.parametrize("text", ADVERSARIAL, ids=lambda t: f"{t[:6]!r}x{len(t)}")
def test_hostile_values_at_the_stored_bound_are_read_without_a_number(text):
    numbers, problems = extract_numbers(text[:MAX_STORED_CHARS], "CH")
    assert all(not n.e164 for n in numbers)  # nothing there is a full phone number


@pytest.mark.parametrize("text", ADVERSARIAL, ids=lambda t: f"{t[:6]!r}x{len(t)}")
def test_hostile_lookup_input_is_refused_at_once(text):
    with pytest.raises(InvalidPhoneNumber, match="at most 64 characters"):
        parse_number(text, "CH")


def test_the_extension_split_is_a_scan_that_handles_long_runs_of_spaces():
    from lookup_core.phone import _split_extension

    assert _split_extension(" " * 65536) == (" " * 65536, None)
    assert _split_extension("021 552 20 00" + " " * 65536 + "ext. 12") == ("021 552 20 00", "12")
    assert _split_extension("x" * 65536 + "1") == ("x" * 65535, "1")  # the caller then rejects the letters
    assert _split_extension("021 552 20 00 x123456789") == ("021 552 20 00 x123456789", None)


def test_the_lookup_input_stays_strict():
    for text in ("Tel. 021 552 20 00", "+41 21 552 20 00 (Büro)", "tel:+41-21-552-20-00", "021 552 20 00 ::: 1"):
        with pytest.raises(InvalidPhoneNumber):
            parse_number(text, "CH")
    assert parse_number("4" * 12 + " " * 52, "CH")  # 64 characters are still read


# --- stored numbers in every source: directory, mirror, live re-check --------------------------

def test_normalize_phones_reports_unreadable_values_without_their_digits():
    problems: list[str] = []
    phones = normalize_phones(["Tel. 021 552 20 00 ::: 079 123 45 67", "2026-11-21", "Zimmer 12", "021 552 20 00"],
                              "CH", problems)
    assert [(p.key, p.extension) for p in phones] == [("+41215522000", ""), ("+41791234567", "")]
    assert problems == [A_DATE, SHORT_WITH_TEXT]
    assert normalize_phones(["2026-11-21"], "CH") == []  # without a list: left out, nothing raised


def test_an_extension_ranks_after_the_exact_number_and_a_short_number_matches_only_itself(tmp_path):
    store = ContactStore(str(tmp_path / "d.sqlite3"), "CH")
    rows = [("main", "Büro: 021 552 20 00"), ("loose", "+41 21 552 20 00 ext. 12"), ("short", "Intern: 201"),
            ("tail", "+41 21 552 02 01")]
    store.upsert((Contact(id=i, name=i, phones=[v]), store.normalize_phones([v])) for i, v in rows)
    found = store.lookup(parse_number("41215522000", "CH"), 5)
    assert [(c.id, c.exact) for c in found] == [("main", True), ("loose", False)]
    assert [c.id for c in store.lookup(parse_number("201", "CH"), 5)] == ["short"]
    assert store.lookup(parse_number("41215522001", "CH"), 5) == []  # no match by last digits
    store.close()


def test_a_mirror_sync_counts_unreadable_values_and_logs_the_count_once(tmp_path, caplog):
    from crm_backends.base import Backend, BackendSpec
    from crm_backends.mirror import MirroredBackend
    from lookup_core.types import SyncBatch

    class Source(Backend):
        type_name = "stored-numbers"
        modes = frozenset({"mirror"})

        def lookup(self, number, limit):
            return []

        def sync(self, cursor):
            yield SyncBatch(contacts=[Contact(id="1", name="Anna", phones=["Tel. 021 552 20 00", "Zimmer 12"])])
            yield SyncBatch(contacts=[Contact(id="2", name="Beat", phones=["2026-11-21 ::: n/a"])], complete=True)

    spec = BackendSpec(tenant="acme", name="erp", options={}, instance_dir=str(tmp_path))
    mirror = MirroredBackend(Source(spec))
    with caplog.at_level("WARNING", logger="crm_backends.mirror"):
        outcome = mirror.sync_now(full=True)
    assert outcome.ok and outcome.written == 2 and outcome.unreadable_numbers == 3
    assert [c.name for c in mirror.lookup(parse_number("41215522000", "CH"), 5)] == ["Anna"]
    warnings = [r.getMessage() for r in caplog.records if "could not be read" in r.getMessage()]
    assert warnings == ["sync acme/erp: 3 stored phone value(s) could not be read as a number and were left out"]
    assert mirror.last_sync()["unreadable_numbers"] == 3
    mirror.close()


def test_the_live_re_check_reads_stored_values_like_the_directory():
    from crm_backends.base import Backend, BackendSpec

    class Live(Backend):
        type_name = "live-stored-numbers"

        def lookup(self, number, limit):
            return []

    backend = Live(BackendSpec(tenant="acme", name="crm", options={}))
    number = parse_number("41791234567", "CH")
    assert backend.matches(number, ["Büro: 021 552 20 00 ::: Mobil: 079 123 45 67"]) is True
    assert backend.matches(number, ["tel:+41-79-123-45-67;ext=5"]) is False  # found by its main number
    assert backend.matches(number, ["Mobil 079 123 45 68", "2026-11-21"]) is None
    kept = backend.filter_candidates(number, [Contact(id="a", name="A", phones=["+41 79 123 45 67 (privat)"]),
                                              Contact(id="b", name="B", phones=["+41 79 123 45 76"])])
    assert [c.id for c in kept] == ["a"]


def test_vcard_tel_uris_and_labelled_values_reach_the_number_reading():
    from crm_backends.vcard import parse_vcards

    text = (
        "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Anna Muster\r\n"
        "TEL;VALUE=uri;TYPE=work:tel:552-20-00;phone-context=+41-21\r\n"
        "TEL;TYPE=cell:Mobil: 079 123 45 67 (privat)\r\nEND:VCARD\r\n"
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Nobody\r\nTEL:siehe Website\r\nEND:VCARD\r\n"
    )
    anna, nobody = parse_vcards(text, "CH")
    assert anna.problem is None
    stored = normalize_phones(anna.contact.phones, "CH")
    assert [p.key for p in stored] == ["+41215522000", "+41791234567"]
    assert nobody.problem and "none is a phone number" in nobody.problem


def test_national_first_only_where_the_region_writes_national_numbers_without_a_prefix():
    assert keys("201 555 0123", "CA") == [("+12015550123", None)]  # a US number in a Canadian directory
    # a German national number starts with 0; without it these are a French number's digits
    assert keys("33 1 42 68 53 00", "DE") == [("+33142685300", None)]


def test_values_that_are_not_text():
    assert extract_numbers(None, "CH") == ([], [])  # an empty field
    assert [n.key for n in extract_numbers(41215522000, "CH")[0]] == ["+41215522000"]  # a JSON number
    assert [n.key for n in extract_numbers(41215522000.0, "CH")[0]] == ["+41215522000"]
    assert extract_numbers(True, "CH") == ([], [NO_NUMBER])


def test_extraction_never_raises_and_never_invents_digits():
    """Random text made of what stored values hold: nothing raises, and every number read is made
    of the value's own digits, in order (the country code may come from the region). Excluded:
    phone-context (its digits come first by definition) and countries whose metadata rewrites
    national numbers (national_prefix_transform_rule: +378 adds 0549, +672 adds 3, …)."""
    import random

    import phonenumbers

    from lookup_core.phone import _clean_characters

    pieces = [*"0123456789" * 6, *"   +()-./;,:#xTelBüro", "\u00a0", "\u2013", "\uff11", "\u00ad", "\n", ":::",
              "ext.", "tel:", ";ext=", "'", "(0)", "+41 ", "00"]
    rng = random.Random(9)
    checked = 0
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        region = rng.choice(["CH", "DE", "US", "GB", "HU", "CN", "IT"])
        numbers, problems = extract_numbers(text, region)
        digits = iter("".join(c for c in _clean_characters(text) if c.isdigit()))
        for number in numbers:
            assert number.key.startswith(("+", "ext:")), text
            if number.e164:
                metadata = phonenumbers.PhoneMetadata.metadata_for_region(
                    phonenumbers.region_code_for_country_code(int(number.e164[1 : -len(number.nsn)])))
                if metadata is not None and metadata.national_prefix_transform_rule:
                    continue
            core = number.nsn or number.key[4:]
            assert all(char in digits for char in core), (text, number)
            checked += 1
    assert checked > 500


# --- search_formats: a number written in a customer's pattern ----------------------------------------
@pytest.mark.parametrize("digits, pattern, written", [
    ("41215522000", "0## ### ## ##", "021 552 20 00"),
    ("41215522000", "+41 ## ### ## ##", "+41 21 552 20 00"),
    ("41215522000", "(0##) ###-####", "(021) 552-2000"),
    ("41215522000", "## ### ## ##", "21 552 20 00"),
    ("41215522000", "### ### ## ##", "021 552 20 00"),  # ten "#": the national number with its trunk prefix
    ("41791234567", "0##/###.##.##", "079/123.45.67"),
    ("41215522000", "+33 # ## ## ## ##", None),  # another country's code
    ("41215522000", "0## ### ##", None),  # the digits do not fill the pattern
    ("4930123456", "0## ### ## ##", None),
])
def test_format_number(digits, pattern, written):
    from lookup_core.phone import format_number

    assert format_number(parse_number(digits), pattern) == written


def test_search_forms_add_the_patterns_after_the_automatic_spellings():
    number = parse_number("41215522000")
    forms = number.search_forms(["0## ### ## ##", "+33 # ## ## ## ##"])
    assert forms[:len(number.search_forms())] == number.search_forms()
    assert forms[len(number.search_forms()):] == ["021 552 20 00"]
    assert parse_number("201").search_forms(["0## ### ## ##"]) == ["201"]  # a short number has no format


# --- a number's type from its source's label (lookup_core.phone_types) ---------------------------
@pytest.mark.parametrize(
    "label, expected",
    [
        # Google Contacts' labels, Apple's and the vCard TYPE lists (RFC 6350)
        ("Mobile", "mobile"), ("Work", "business"), ("Home", "home"), ("Main", "business"), ("Work Fax", "fax"),
        ("Home Fax", "fax"), ("Pager", "other"), ("Other", "other"), ("* Mobile", "mobile"), ("iPhone", "mobile"),
        ("_$!<Mobile>!$_", "mobile"), ("_$!<HomeFax>!$_", "fax"), ("cell", "mobile"), ("cell,voice,pref", "mobile"),
        ("work,voice", "business"), ("home,fax", "fax"), ("X-MOBILE", "mobile"), ("text", "other"),
        ("textphone", "other"), ("voice", "unknown"), ("pref", "unknown"),
        # Outlook's columns in English, German and French
        ("Business Phone 2", "business"), ("Company Main Phone", "business"), ("Assistant's Phone", "other"),
        ("Callback", "other"), ("Car Phone", "other"), ("Other Phone", "other"), ("TTY/TDD Phone", "other"),
        ("Telefon geschäftlich", "business"), ("Büro", "business"), ("Geschäftlich", "business"),
        ("Privat", "home"), ("Mobil", "mobile"), ("Handy", "mobile"), ("Natel", "mobile"),
        ("Téléphone bureau", "business"), ("Télécopie bureau", "fax"), ("Tél. domicile", "home"),
        ("Direct Dial", "direct"), ("Durchwahl", "direct"), ("direct", "direct"),
        # LDAP attributes and CRM fields
        ("telephoneNumber", "business"), ("mobile", "mobile"), ("homePhone", "home"), ("pager", "other"),
        ("facsimileTelephoneNumber", "fax"), ("otherMobile", "mobile"), ("ipPhone", "business"),
        ("mobilephone", "mobile"),
        # nothing, or a label that only says "phone"; the user's own words
        (None, "unknown"), ("", "unknown"), ("Phone 2", "unknown"), ("Tel.", "unknown"), ("Oma", "other"),
        ("Google Voice", "other"),
    ],
)
def test_a_sources_label_gives_the_embeddable_type(label, expected):
    assert phone_type(label) == expected
    assert expected in PHONE_TYPES
