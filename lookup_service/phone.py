"""Phone number normalization: the one place that turns what people type into comparable keys.

Every number that is stored (directory import, mirror sync) and every number that is looked up goes
through :func:`parse_number`, so two spellings of one line always produce the same key:

* a full number becomes its E.164 form (``+41215522000``), whatever separators, trunk prefix,
  ``00`` international prefix or ``(0)`` it was written with; an extension is kept apart;
* a short internal number (an extension such as ``201``) becomes ``ext:201``, which can only ever
  equal another short number, never the tail of a long one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from phonenumbers import PhoneNumberFormat

MIN_DIGITS = 2
MAX_DIGITS = 20
# Internal extensions rarely exceed six digits; longer digit strings are treated as full numbers.
MAX_SHORT_DIGITS = 6

_ALLOWED = re.compile(r"^[\d\s+\-./()\[\]]*$")
_EXTENSION = re.compile(r"\s*(?:;\s*ext\s*=|(?:ext|extension|ext\.|x|#)\s*\.?\s*)(\d{1,8})\s*$", re.I)


class InvalidPhoneNumber(ValueError):
    """The text cannot be a phone number; the message says why, for the API's 400 answer."""


@dataclass(frozen=True, slots=True)
class PhoneNumber:
    """A normalized number.

    ``key`` is what stores index and compare. ``e164`` is ``None`` for short internal numbers.
    """

    key: str
    e164: str | None
    nsn: str | None = None  # national significant number: 215522000
    extension: str | None = None

    @property
    def national(self) -> str | None:
        """National form with the trunk prefix, digits only: 0215522000."""
        return _national_form(self.e164) if self.e164 else None

    @property
    def is_short(self) -> bool:
        return self.e164 is None

    @property
    def digits(self) -> str:
        """International digits without '+', the form the connector sends."""
        return self.e164[1:] if self.e164 else self.key[4:]

    def search_forms(self) -> list[str]:
        """The spellings a remote source may hold, most specific first, for live queries."""
        if self.is_short:
            return [self.key[4:]]
        forms = [self.e164, self.digits, self.national, self.nsn, "00" + self.digits]
        return list(dict.fromkeys(f for f in forms if f))

    def masked(self) -> str:
        return mask(self.key)


def mask(text: str | None) -> str:
    """All but the last 3 digits replaced, for logs."""
    if not text:
        return "-"
    digits = re.sub(r"\D", "", text)
    if len(digits) <= 3:
        return "***"
    return "*" * (len(digits) - 3) + digits[-3:]


def parse_number(text: str, region: str = "CH") -> PhoneNumber:
    """Normalize ``text`` or raise :class:`InvalidPhoneNumber` saying what is wrong with it."""
    if not isinstance(text, str):
        raise InvalidPhoneNumber("the phone number must be a string of digits")
    return _parse_cached(text.strip(), region.upper())


@lru_cache(maxsize=65536)
def _parse_cached(text: str, region: str) -> PhoneNumber:
    if not text:
        raise InvalidPhoneNumber("the phone number is empty")
    if text.isascii() and text.isdigit():  # the connector's own form: nothing to split or strip
        main, extension, digits = text, None, text
    else:
        main, extension = _split_extension(text)
        if not _ALLOWED.match(main):
            raise InvalidPhoneNumber(
                "a phone number may contain only digits, spaces, '+', '-', '.', '/' and parentheses"
            )
        digits = re.sub(r"\D", "", main)
    if not MIN_DIGITS <= len(digits) <= MAX_DIGITS:
        raise InvalidPhoneNumber(
            f"a phone number has {MIN_DIGITS} to {MAX_DIGITS} digits; this one has {len(digits)}"
        )
    international = main.lstrip().startswith("+") or digits.startswith("00")
    if not international and len(digits) <= MAX_SHORT_DIGITS and not digits.startswith("0"):
        return PhoneNumber(key="ext:" + digits, e164=None, extension=extension)
    if _PLAIN.match(main):
        fast = _plain_form(main, digits, region, extension)
        if fast is not None:
            return fast
    return _parsed_form(main, digits, region, international, extension)


def _parsed_form(main: str, digits: str, region: str, international: bool, extension: str | None) -> PhoneNumber:
    """The general path: phonenumbers reads the number (both readings when it is ambiguous)."""
    parsed = _best_parse(main, digits, region, international)
    if parsed is None:
        if len(digits) <= MAX_SHORT_DIGITS:
            return PhoneNumber(key="ext:" + digits, e164=None, extension=extension)
        # Unparseable but long: keep every digit so only the very same string matches.
        return PhoneNumber(key="raw:" + digits, e164=None, extension=extension)
    nsn = phonenumbers.national_significant_number(parsed)
    e164 = f"+{parsed.country_code}{nsn}"
    return PhoneNumber(key=e164, e164=e164, nsn=nsn, extension=extension or parsed.extension)


@lru_cache(maxsize=4096)
def _national_form(e164: str) -> str | None:
    # Only live backends need it, so the costly national formatting stays off the import path.
    parsed = phonenumbers.parse(e164, None)
    return re.sub(r"\D", "", phonenumbers.format_number(parsed, PhoneNumberFormat.NATIONAL)) or None


def _plain_form(main: str, digits: str, region: str, extension: str | None) -> PhoneNumber | None:
    """Common spellings without phonenumbers.parse, which costs most of an import or a lookup.

    ``+41 21 552 20 00``, ``0041 21 552 20 00``, ``021 552 20 00`` and the connector's own
    ``41215522000``: where the country code belongs to one region whose national numbers start
    with the trunk prefix 0, a national number that does not itself start with 0 and has a
    possible length can only be read one way (bare digits only when they are too long to be a
    national number of the region, as the connector's form is in CH). phonenumbers gives the same key for these (the
    tests compare both over random numbers of every length); anything else takes the general path.
    """
    if main.startswith("+"):
        international = digits
    elif digits.startswith("00"):
        international = digits[2:]
    elif digits.startswith("0"):
        code, lengths = _region_shape(region)
        if not lengths:
            return None
        international = code + digits[1:]
    else:  # digits without any prefix: read as international when no national reading is possible
        code, lengths = _region_shape(region)
        if not lengths or not digits.startswith(code) or len(digits) in lengths:
            return None
        international = digits
    for size in (1, 2, 3):
        lengths = _SOUND_CODES.get(international[:size])
        if lengths is not None:
            nsn = international[size:]
            if nsn and nsn[0] != "0" and len(nsn) in lengths:
                return PhoneNumber(key="+" + international, e164="+" + international, nsn=nsn, extension=extension)
            return None
    return None


@lru_cache(maxsize=64)
def _region_shape(region: str) -> tuple[str, frozenset[int]]:
    """The region's country code, and its possible national lengths where _plain_form is sound."""
    code = str(phonenumbers.country_code_for_region(region))
    return code, _SOUND_CODES.get(code, frozenset())


def _sound_codes() -> dict[str, frozenset[int]]:
    """Country codes of a single region with trunk prefix 0, and their possible national lengths."""
    sound: dict[str, frozenset[int]] = {}
    for code, regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items():
        if len(regions) != 1:
            continue
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(regions[0])
        if (
            metadata is not None
            and metadata.national_prefix == "0"
            and metadata.national_prefix_for_parsing in (None, "0")
            and metadata.general_desc.possible_length
        ):
            sound[str(code)] = frozenset(metadata.general_desc.possible_length)
    return sound


_SOUND_CODES = _sound_codes()
_PLAIN = re.compile(r"^\+?[\d\s\-./]+$")


def _split_extension(text: str) -> tuple[str, str | None]:
    match = _EXTENSION.search(text)
    if match and match.start() > 0:
        return text[: match.start()], match.group(1)
    return text, None


def _best_parse(main: str, digits: str, region: str, international: bool):
    """Pick the reading of the number that is a real number.

    Digits without '+' are ambiguous: the connector sends ``41215522000`` (international without
    '+'), a person types ``0215522000`` (national). A reading that is a valid number wins; the
    international reading first, since it is the connector's documented format.
    """
    # (text, region to read it in): None for an international reading with its '+'
    candidates: list[tuple[str, str | None]]
    if digits.startswith("00"):
        candidates = [("+" + digits[2:], None)]
    elif international:
        candidates = [(main, None)]
    elif digits.startswith("0"):
        candidates = [(main, region)]
    else:
        candidates = [("+" + digits, None), (main, region)]
    possible = None
    for text, reading_region in candidates:
        try:
            parsed = phonenumbers.parse(text, reading_region)
        except phonenumbers.NumberParseException:
            continue
        if len(candidates) == 1:  # one reading: validity cannot change the choice, only possibility
            return parsed if phonenumbers.is_possible_number(parsed) else None
        if phonenumbers.is_valid_number(parsed):
            return parsed
        if possible is None and phonenumbers.is_possible_number(parsed):
            possible = parsed
    return possible
