"""Number normalization: every spelling of a line gives one key; short numbers stay apart."""

import pytest

from lookup_service.phone import InvalidPhoneNumber, mask, parse_number

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

    from lookup_service.phone import _SOUND_CODES, _parsed_form, _plain_form, _region_shape

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
