"""Stored spellings × countries: every spelling people and spreadsheets write finds its contact.

The corpus is built from libphonenumber's example numbers (fixed line and mobile) of 32 regions,
each written in the spellings of :data:`SPELLINGS`. Every spelling is stored as its own contact in
a real directory (a :class:`ContactStore` in a temporary directory, read with the contact's region
by ``normalize_phones``, as the import and the mirrors do) and looked up in the connector's form:
international digits without '+', read in the tenant's region (CH). The number with its last digit
changed must find nothing. ``python -m bench.phone_corpus`` prints the counts.

Spellings that do not exist for a country are not generated, by rule rather than by exception:
the bracketed trunk prefix (``+44 (0)20 …``) only where the country has a trunk prefix
(phonenumbers' ``national_prefix``: IT, ES, PT, NO, DK, PL, CZ, LU, MX, GR have none), and the
scientific notation (``4.1215522E+10``) only where at least 7 significant digits are written, since
fewer may be a number Excel rounded to fit its cell (that value is reported, see test_phone.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from crm_backends.contact_store import ContactStore, normalize_phones
from lookup_core.phone import parse_number
from lookup_core.types import Contact

REGIONS = (
    "CH DE FR IT AT GB US NL BE ES PT SE NO DK FI PL CZ HU IE LU LI JP AU BR IN ZA MX RU CN TR AR NZ".split()
)
TYPES = (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE)
TENANT_REGION = "CH"
OTHER = "+41 44 668 18 00"  # the second number of the several-numbers spellings
FULL_WIDTH = str.maketrans("0123456789+", "０１２３４５６７８９＋")
SEPARATORS = ("\u00a0", "\u2009", "\u2013", "\u202f", "\u2011", "\u2014")  # NBSP, thin, en dash, …


@dataclass(frozen=True)
class Case:
    region: str
    kind: str
    spelling: str
    text: str
    e164: str

    @property
    def id(self) -> str:
        return f"{self.region}-{self.kind}-{self.spelling}"


def _unicode_separators(text: str) -> str:
    out, index = [], 0
    for char in text:
        if char == " ":
            out.append(SEPARATORS[index % len(SEPARATORS)])
            index += 1
        else:
            out.append(char)
    # a soft hyphen inside the last group, as word processors leave them
    return "".join(out[:-2]) + "\u00ad" + "".join(out[-2:])


def spellings(region: str, number: phonenumbers.PhoneNumber) -> dict[str, str]:
    """The ways a person or a spreadsheet stores ``number`` of ``region``."""
    intl = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
    national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    rfc = phonenumbers.format_number(number, PhoneNumberFormat.RFC3966)
    code = str(number.country_code)
    after_code = intl[len(code) + 2 :]  # "+41 21 234 56 78" -> "21 234 56 78"
    digits = e164[1:]
    out = {
        "label": f"Tel. {intl}",
        "label_national": f"Mobile: {national}",
        "label_umlaut": f"Büro: {national}",
        "annotation_brackets": f"{intl} (Büro)",
        "annotation_dash": f"{national} \u2013 Zentrale",
        "extension": f"{intl} ext. 12",
        "tel_uri": rfc,
        "tel_uri_ext": f"{rfc};ext=12",
        "tel_uri_context": f"tel:{after_code.replace(' ', '-')};phone-context=+{code}",
        "national": national,
        "international_00": f"00{code} {after_code}",
        "full_width": intl.translate(FULL_WIDTH).replace(" ", "\u3000"),
        "unicode_separators": _unicode_separators(intl),
        "spreadsheet_float": f"{digits}.0",
        "spreadsheet_apostrophe": f"'{intl}",
        "several_google": f"{intl} ::: {OTHER}",
        "several_semicolon": f"{OTHER}; {national}",
        "several_comma": f"{national}, {OTHER}",
        "several_lines": f"{OTHER}\n{intl}",
    }
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if metadata.national_prefix:
        out["bracketed_trunk"] = f"+{code} ({metadata.national_prefix}){after_code}"
    written = digits.rstrip("0")
    if len(written) >= 7:
        out["spreadsheet_scientific"] = f"{digits[0]}.{written[1:]}E+{len(digits) - 1}"
    return out


def corpus() -> list[Case]:
    cases = []
    for region in REGIONS:
        seen = set()
        for kind in TYPES:
            number = phonenumbers.example_number_for_type(region, kind)
            e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164) if number else None
            if e164 is None or e164 in seen:  # US: one example for both types
                continue
            seen.add(e164)
            name = "fixed" if kind == PhoneNumberType.FIXED_LINE else "mobile"
            cases.extend(Case(region, name, s, text, e164) for s, text in spellings(region, number).items())
    return cases


def neighbour(e164: str) -> str:
    """The number with its last digit changed: a different line, which must find nothing."""
    return e164[:-1] + str((int(e164[-1]) + 1) % 10)


def build_store(path: str, cases: list[Case]) -> tuple[ContactStore, list[str]]:
    """Every case stored as its own contact, read with the contact's region."""
    store = ContactStore(path, TENANT_REGION)
    problems: list[str] = []
    store.upsert(
        (Contact(id=case.id, name=case.id, phones=[case.text]), normalize_phones([case.text], case.region, problems))
        for case in cases
    )
    return store, problems


@dataclass
class Outcome:
    total: int = 0
    found: int = 0
    false_matches: int = 0
    missed: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)


def evaluate(store: ContactStore, cases: list[Case]) -> Outcome:
    """Recall over all spellings; false matches: a neighbour that finds anything, or a lookup that
    finds a contact stored for another number."""
    outcome = Outcome(total=len(cases))
    by_number: dict[str, set[str]] = {}
    for case in cases:
        by_number.setdefault(case.e164, set()).add(case.id)
    other = parse_number(OTHER, TENANT_REGION).key
    for e164, ids in by_number.items():
        found = {c.id for c in store.lookup(parse_number(e164[1:], TENANT_REGION), 1000)}
        outcome.found += len(ids & found)
        outcome.missed.extend(sorted(ids - found))
        strangers = found - ids
        outcome.false_matches += len(strangers)
        outcome.wrong.extend(sorted(strangers))
        near = neighbour(e164)
        if near not in by_number and near != other:
            hits = store.lookup(parse_number(near[1:], TENANT_REGION), 1000)
            outcome.false_matches += len(hits)
            outcome.wrong.extend(f"{near[:-3]}*** -> {c.id}" for c in hits)
    return outcome


CASES = corpus()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store, _ = build_store(str(tmp_path_factory.mktemp("corpus") / "directory.sqlite3"), CASES)
    yield store
    store.close()


def test_the_corpus_covers_thirty_regions_and_every_spelling():
    assert len({c.region for c in CASES}) >= 30
    assert {c.spelling for c in CASES} >= {
        "label", "annotation_brackets", "annotation_dash", "tel_uri", "tel_uri_ext", "tel_uri_context", "national",
        "bracketed_trunk", "full_width", "unicode_separators", "spreadsheet_float", "spreadsheet_scientific",
        "spreadsheet_apostrophe", "several_google", "several_semicolon", "several_comma", "several_lines",
    }


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_every_stored_spelling_is_found_by_the_connector_form(store, case):
    looked_up = parse_number(case.e164[1:], TENANT_REGION)
    assert looked_up.key == case.e164
    found = store.lookup(looked_up, 1000)
    assert case.id in {c.id for c in found}
    if case.spelling.startswith("several_"):  # the other number of the field is stored too
        assert case.id in {c.id for c in store.lookup(parse_number(OTHER, TENANT_REGION), 1000)}


@pytest.mark.parametrize("e164", sorted({c.e164 for c in CASES}))
def test_a_neighbouring_number_finds_nothing(store, e164):
    assert store.lookup(parse_number(neighbour(e164)[1:], TENANT_REGION), 1000) == []


def test_recall_is_complete_without_false_matches(store, capsys):
    outcome = evaluate(store, CASES)
    with capsys.disabled():
        print(f"\nphone corpus: {outcome.found}/{outcome.total} spellings found, {outcome.false_matches} false matches")
    assert outcome.missed == []
    assert outcome.false_matches == 0, outcome.wrong
