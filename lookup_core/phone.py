"""Phone number normalization: the one place that turns what people type into comparable keys.

Every number that is stored (directory import, mirror sync, a live backend's candidates) and every
number that is looked up goes through one reading, so two spellings of one line give the same key:

* a full number becomes its E.164 form (``+41215522000``), whatever separators, trunk prefix,
  ``00`` international prefix or ``(0)`` it was written with; an extension is kept apart;
* a short internal number (an extension such as ``201``) becomes ``ext:201``, which can only ever
  equal another short number, never the tail of a long one.

Two entry points: :func:`parse_number` reads the number being looked up, strictly (letters are an
error); :func:`extract_numbers` reads a STORED value the way a person would (labels, annotations,
``tel:`` URIs, several numbers in one field, what spreadsheets do to numbers) and says why a part
could not be read, never guessing a number from it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import lru_cache
from urllib.parse import unquote

import phonenumbers
from phonenumbers import PhoneNumberFormat

from lookup_core.redact import mask

MIN_DIGITS = 2
MAX_DIGITS = 20
# Internal extensions rarely exceed six digits; longer digit strings are treated as full numbers.
MAX_SHORT_DIGITS = 6

# Longer input is refused before any parsing: the looked-up number at once (InvalidPhoneNumber),
# a stored value as unreadable. Both bound the work a hostile value can cause.
MAX_LOOKUP_CHARS = 64
MAX_STORED_CHARS = 1000

_ALLOWED = re.compile(r"^[\d\s+\-./()\[\]]*$")


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

    def search_forms(self, patterns: Iterable[str] = ()) -> list[str]:
        """The spellings a remote source may hold, most specific first, for live queries; then the
        number written in each of ``patterns`` (see :func:`format_number`) that fits it."""
        if self.is_short:
            forms = [self.key[4:]]
        else:
            forms = [self.e164, self.digits, self.national, self.nsn, "00" + self.digits]
        forms += [format_number(self, pattern) for pattern in patterns]
        return list(dict.fromkeys(f for f in forms if f))

    def masked(self) -> str:
        return mask(self.key)


def format_number(number: PhoneNumber, pattern: str) -> str | None:
    """``number`` written in ``pattern``, a customer's spelling such as ``"0## ### ## ##"`` or
    ``"+41 ## ### ## ##"``: each ``#`` takes the next digit of the national significant number, or
    of the national number with its trunk prefix when the pattern's first digit or ``#`` is written
    as ``0``; every other character is copied. None when the number's digits do not fill the
    ``#``s exactly, or a country code written in the pattern is not the number's."""
    if number.is_short or not number.nsn:
        return None
    holes = pattern.count("#")
    leading = re.match(r"[^0-9#+]*(\+?)(\d*)", pattern)
    written = leading.group(2) if leading else ""
    if leading and leading.group(1):  # "+41 ## ..." : the country code is part of the pattern
        if not number.digits.startswith(written) or number.digits[len(written):] != number.nsn:
            return None
        digits = number.nsn
    elif written.startswith("0") and len(written) == 1:  # "0## ..." : the trunk prefix is written
        national = number.national or ""
        if not national.startswith("0"):
            return None
        digits = national[1:]
    elif written:
        return None
    else:  # only "#"s: the national significant number, or the national number if that fills them
        national = number.national or ""
        digits = national if len(national) == holes and len(number.nsn) != holes else number.nsn
    if len(digits) != holes:
        return None
    feed = iter(digits)
    return "".join(next(feed) if char == "#" else char for char in pattern)


def parse_number(text: str, region: str = "CH") -> PhoneNumber:
    """Normalize ``text`` or raise :class:`InvalidPhoneNumber` saying what is wrong with it."""
    if not isinstance(text, str):
        raise InvalidPhoneNumber("the phone number must be a string of digits")
    if len(text) > MAX_LOOKUP_CHARS:
        raise InvalidPhoneNumber(f"a phone number is at most {MAX_LOOKUP_CHARS} characters long")
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


_EXTENSION_WORDS = ("extension", "ext", "x", "#")


def _split_extension(text: str) -> tuple[str, str | None]:
    """``+41 21 552 20 00 ext. 12`` -> main number and ``12``; also ``x12``, ``#12``, ``;ext=12``.

    A scan from the end rather than a regular expression: a search for a pattern anchored at the
    end retries from every position and takes quadratic time on long runs of spaces.
    """
    end = len(text.rstrip())
    start = end
    while start > 0 and text[start - 1].isdecimal():
        start -= 1
    if not 1 <= end - start <= 8:
        return text, None
    digits = text[start:end]
    head = text[:start].rstrip()
    if head.endswith("="):  # ;ext=12
        head = head[:-1].rstrip()
        if not head.lower().endswith("ext"):
            return text, None
        head = head[:-3].rstrip()
        if not head.endswith(";"):
            return text, None
        head = head[:-1]
    else:
        if head.endswith("."):
            head = head[:-1].rstrip()
        lowered = head[-len("extension"):].lower()
        word = next((w for w in _EXTENSION_WORDS if lowered.endswith(w)), None)
        if word is None:
            return text, None
        head = head[: len(head) - len(word)]
    head = head.rstrip()
    if not head:
        return text, None
    return head, digits


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


# --- stored numbers: text as people and spreadsheets write it ------------------------------------

# Reasons for parts of a stored value that are not read; they never contain the value itself.
NO_NUMBER = "no phone number in it"
TOO_LONG = f"longer than {MAX_STORED_CHARS} characters"
A_DATE = "a date, not a phone number"
SHORT_WITH_TEXT = "a short number (up to 6 digits) is read as an internal number only when it stands alone"
NOT_POSSIBLE = "not a possible phone number (wrong number of digits)"
DIGITS_LOST = "a number in scientific notation that lost digits (format the column as text)"
BAD_EXTENSION = "an extension that is not digits"
BAD_TEL_URI = "a tel: URI whose local number or phone-context is not one (RFC 3966)"

# Words that put an extension after a number: "ext. 12", "x12", "#12", "Durchwahl 12", "poste 12".
_EXTENSION_MARKERS = frozenset(
    {"ext", "extn", "extension", "x", "#", "durchwahl", "dw", "intern", "int", "interne", "poste"}
)
# A number part: digits and what people write between them; anything else ends it.
_RUN_CHARS = frozenset("0123456789+()[] -./")
_STORED_PLAIN = re.compile(r"\+?[0-9][0-9 \-./]*")  # one line, nothing to split or strip
_SEVERAL = re.compile(r"[\n;]|,+")  # between numbers of one field (" ::: " is turned into a newline)
_DIALLED_EXTENSION = re.compile(r"\d{1,8}#?")
# RFC 3966: a local number is digits and visual separators; its phone-context a global number's
# prefix ("+41-21") or a domain name. Checked character by character (no backtracking).
_VISUAL = frozenset("0123456789-.() ")
_DOMAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")
_PARAMETER = re.compile(r"\s*[A-Za-z][A-Za-z0-9-]*=")  # "ext=12", "phone-context=+41-21" after a ';'
_FLOAT = re.compile(r"([1-9]\d{6,})[.,]0{1,2}")  # 41215522000.0: a number cell written as a float
_SCIENTIFIC = re.compile(r"([1-9])[.,](\d+)[eE]\+?(\d{1,2})")  # 4.1215522E+10
_DATE = re.compile(r"(?:\d{4}([-./])(\d{1,2})\1(\d{1,2})|(\d{1,2})([-./])(\d{1,2})\5\d{4})(?!\d)")
_TRUNK = re.compile(r"(\+|00)(\d{1,3})[ \-.]*[(\[] *(\d{1,4}) *[)\]]")  # +44 (0)20 ..., +36 (06) 1 ...
# Excel's General format shows at most 6 significant digits in scientific notation, so a mantissa
# of 6 or fewer may be a rounded number; one with more digits was not cut to fit a cell.
_MIN_SCIENTIFIC_DIGITS = 7


def extract_numbers(text: str, region: str = "CH") -> tuple[list[PhoneNumber], list[str]]:
    """The numbers in a stored value, and a reason for each part that could not be read.

    Reads what people write around and inside numbers: a label before (``Tel. +41 …``,
    ``Mobile: …``), an annotation after (``… (Büro)``, ``… – Zentrale``), an extension (``ext. 12``),
    an RFC 3966 ``tel:`` URI with ``;ext=`` and ``;phone-context=``, the trunk prefix of the
    number's country in brackets after its country code (``+44 (0)20 …``, ``+36 (06) 1 …``),
    non-ASCII digits, spaces and dashes, what a spreadsheet did to a number cell
    (``41215522000.0``, ``4.1215522E+10``, a leading apostrophe), and several numbers in one field
    separated by ``:::``, ``;``, ``,`` or line breaks. A part that holds no number, only a date, a
    short number with text around it, or an impossible number is reported, never matched.
    """
    if text is None:
        return [], []
    if isinstance(text, int | float) and not isinstance(text, bool):  # a JSON number: 41215522000
        text = str(text)
    if not isinstance(text, str):
        return [], [NO_NUMBER]
    if len(text) > MAX_STORED_CHARS:
        return [], [TOO_LONG]
    region = region.upper()
    stripped = text.strip()
    if stripped.isascii() and _is_plain(stripped):
        try:
            number = _written_national(stripped, region) or _parse_cached(stripped, region)
        except InvalidPhoneNumber:
            number = None
        if number is not None and not number.key.startswith("raw:") and (number.e164 or stripped.isdigit()):
            return [number], []
    text, problem = _unmangle(_clean_characters(stripped))
    if problem:
        return [], [problem]
    return _extract(text, region)


def _is_plain(text: str) -> bool:
    """A value the lookup reading takes as it is: digits and separators, no date, no float."""
    return bool(_STORED_PLAIN.fullmatch(text)) and not _date_length(text) and not _FLOAT.fullmatch(text)


class _CharacterMap(dict):
    """str.translate table read lazily: non-ASCII digits, spaces, dashes and invisible characters
    to what they stand for; line breaks to '\\n' (they separate numbers)."""

    def __missing__(self, code: int) -> str:
        char = chr(code)
        if char in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029":
            mapped = "\n"
        elif char.isspace():
            mapped = " "
        elif char.isdecimal():
            mapped = str(unicodedata.decimal(char))
        elif unicodedata.category(char) == "Pd" or char in "\u2212\u2043":
            mapped = "-"
        elif unicodedata.category(char) == "Cf":  # soft hyphen, zero-width space, BOM, direction marks
            mapped = ""
        elif char == "\u00b7":
            mapped = "."
        else:
            folded = unicodedata.normalize("NFKC", char)  # full-width + ( ) / and the like
            mapped = folded if folded.isascii() and len(folded) == 1 else char
        if len(self) < 4096:
            self[code] = mapped
        return mapped


_CHARACTERS = _CharacterMap()


def _clean_characters(text: str) -> str:
    return text.translate(_CHARACTERS).replace(":::", "\n")


def _unmangle(text: str) -> tuple[str, str | None]:
    """Undo what spreadsheets do to a whole cell: ="…", a leading apostrophe, a float, E+10."""
    text = text.strip()
    if text.startswith('="') and text.endswith('"'):
        text = text[2:-1].strip()
    if text.startswith("'"):
        return text[1:].strip(), None
    match = _FLOAT.fullmatch(text)
    if match:
        return match.group(1), None
    match = _SCIENTIFIC.fullmatch(text)
    if match:
        first, fraction, exponent = match.group(1), match.group(2), int(match.group(3))
        written = (first + fraction).rstrip("0")
        if len(written) < _MIN_SCIENTIFIC_DIGITS or len(fraction) > exponent or exponent >= 15:
            return "", DIGITS_LOST
        return first + fraction + "0" * (exponent - len(fraction)), None
    return text, None


def _extract(text: str, region: str) -> tuple[list[PhoneNumber], list[str]]:
    numbers: list[PhoneNumber] = []
    problems: list[str] = []
    for part, after_pause in _parts(text):
        digits = part.strip()
        if numbers and not numbers[-1].is_short and _DIALLED_EXTENSION.fullmatch(digits):
            # after a full number, a few digits alone are its extension, not an internal number of
            # their own: "+41215522000,,12" (a dial string's pause), "021 552 20 00, 12"
            if after_pause or len(digits) <= MAX_SHORT_DIGITS:
                numbers[-1] = replace(numbers[-1], extension=digits.rstrip("#"))
                continue
        found, problem, extension = _read_part(part, region)
        if extension is not None:
            if numbers and not numbers[-1].is_short:  # "021 552 20 00, intern 12": its extension
                numbers[-1] = replace(numbers[-1], extension=extension)
            else:
                problems.append(SHORT_WITH_TEXT)
            continue
        numbers.extend(found)
        if problem:
            problems.append(problem)
    distinct = {(n.key, n.extension): n for n in numbers}
    return list(distinct.values()), problems


def _parts(text: str) -> list[tuple[str, bool]]:
    """Split a field into its numbers; ``;ext=…`` and ``;phone-context=…`` stay with their number.

    Each part comes with whether it follows commas written between two digits: the pause of a dial
    string (``+41215522000,,12``), after which a few digits are the extension to dial."""
    parts: list[tuple[str, bool]] = []
    start, pause = 0, False
    for match in [*_SEVERAL.finditer(text), None]:
        piece = text[start : match.start() if match else len(text)]
        if parts and _PARAMETER.match(piece):
            parts[-1] = (parts[-1][0] + ";" + piece, parts[-1][1])
        else:
            parts.append((piece, pause))
        if match is not None:
            start = match.end()
            pause = (
                match.group()[0] == ","
                and text[match.start() - 1 : match.start()].isdigit()
                and text[start : start + 1].isdigit()
            )
    return parts


def _read_part(part: str, region: str) -> tuple[list[PhoneNumber], str | None, str | None]:
    """One number's text -> (numbers, reason it was not read, extension when it is only one)."""
    part = part.strip().strip('"').strip()
    if part.startswith("'"):
        part = part[1:].strip()
    if not part:
        return [], None, None
    if part[:4].lower() == "tel:" and " " not in part.split(";", 1)[0].strip():
        return _read_tel(unquote(part[4:]), region)
    if ";" in part:
        return _read_tel(part, region)
    return _read_text(part, region, None)


def _read_tel(body: str, region: str) -> tuple[list[PhoneNumber], str | None, str | None]:
    """RFC 3966: ``+41-21-552-20-00;ext=12``, ``552-20-00;phone-context=+41-21``."""
    number, *parameters = body.split(";")
    extension = context = None
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        name = name.strip().lower()
        if name == "ext":
            extension = re.sub(r"[-.()\s]", "", value)
            if not extension.isdecimal() or len(extension) > 8:
                return [], BAD_EXTENSION, None
        elif name == "phone-context":
            context = value.strip()
    number = number.strip()
    if context is not None and not number.startswith("+"):
        if not _digits_and_separators(number):
            return [], BAD_TEL_URI, None
        if context.startswith("+") and _digits_and_separators(context[1:]):
            number = context + "-" + number  # a local number within a global prefix
        elif not (context and set(context) <= _DOMAIN and context[0].isalnum()):
            return [], BAD_TEL_URI, None
        # a domain name names no country: the number is read in the region
    return _read_text(number, region, extension)


def _digits_and_separators(text: str) -> bool:
    return set(text) <= _VISUAL and any(char.isdigit() for char in text)


def _runs(text: str) -> list[tuple[int, int]]:
    """(start, end) of each stretch of digits and number separators, trimmed, with a digit in it."""
    runs: list[tuple[int, int]] = []
    start = None
    digits = False
    for index, char in enumerate(text + "\x00"):
        if char in _RUN_CHARS:
            if start is None:
                if char in " -./)]":
                    continue
                start, digits = index, False
            elif char == "+" and digits:  # "+41 … +41 …": a '+' starts the next number
                runs.append((start, index))
                start, digits = index, False
            digits = digits or char.isdigit()
            continue
        if start is not None and digits:
            runs.append((start, index))
        start = None
    return [_trimmed(text, s, e) for s, e in runs]


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    while end > start and text[end - 1] in " -./([+":
        end -= 1
    # a closing bracket without its opening one belongs to the text around: "(Tel. 021 552 20 00)"
    closed = text.count(")", start, end) + text.count("]", start, end)
    unbalanced = closed - text.count("(", start, end) - text.count("[", start, end)
    while end > start and unbalanced > 0 and text[end - 1] in " -./([+)]":
        unbalanced -= text[end - 1] in ")]"
        end -= 1
    return start, end


def _read_text(text: str, region: str, extension: str | None) -> tuple[list[PhoneNumber], str | None, str | None]:
    """Numbers in free text: labels before, annotations after, an extension word between."""
    runs = _runs(text)
    if not runs:
        return [], NO_NUMBER, None
    full: list[PhoneNumber] = []
    short: list[tuple[PhoneNumber, int, int]] = []
    problem = None
    previous_end = 0
    for start, end in runs:
        gap = text[previous_end:start]
        previous_end = end
        run = text[start:end]
        if full and run.isdigit() and len(run) <= 8 and _is_extension_marker(gap):
            full[-1] = replace(full[-1], extension=run)
            continue
        date = _date_length(run)
        if date:  # "2026-11-21", or "2026-11-21 021 552 20 00": the rest is read on its own
            problem = problem or A_DATE
            run = run[date:].lstrip(" -./")
            if not run:
                continue
        if sum(c.isdigit() for c in run) < MIN_DIGITS:
            continue  # "Tel. 2:", "3. OG": part of a label
        numbers, reason = _read_run(run, region)
        if reason:
            problem = reason if problem in (None, A_DATE) else problem
        for number in numbers:
            if number.is_short:
                short.append((number, start, end))
            else:
                full.append(number)
    if full:
        if extension is not None and len(full) == 1:
            full[0] = replace(full[0], extension=extension)
        return full, problem if problem not in (A_DATE, SHORT_WITH_TEXT) else None, None
    if len(short) == 1:
        number, start, end = short[0]
        before, after = text[:start].strip(), text[end:].strip()
        plain = text[start:end].isdigit()
        if plain and not after and (not before or before.endswith(":")):  # "201", "Intern: 201"
            return [replace(number, extension=extension) if extension else number], None, None
        if plain and not after and _is_extension_marker(before):
            return [], None, text[start:end]
        return [], SHORT_WITH_TEXT, None
    if short:
        return [], SHORT_WITH_TEXT, None
    return [], problem or NO_NUMBER, None


def _is_extension_marker(gap: str) -> bool:
    return gap.strip(" (.:=").lower().rstrip(" .:=") in _EXTENSION_MARKERS


def _date_length(run: str) -> int:
    """The length of the date ``run`` starts with (``2026-11-21``, ``21.11.2026``), or 0."""
    match = _DATE.match(run)
    if match is None:
        return 0
    if match.group(1):
        month, day = int(match.group(2)), int(match.group(3))
    else:
        day, month = int(match.group(4)), int(match.group(6))
    return match.end() if 1 <= month <= 12 and 1 <= day <= 31 else 0


def _read_run(run: str, region: str) -> tuple[list[PhoneNumber], str | None]:
    """One stretch of digits and separators: one number, or several joined by '/' or ' - '."""
    number, reason = _read_one(run, region)
    if number is not None:
        return [number], None
    for joint in ("/", " - "):
        if joint in run:
            pieces = [_read_one(piece, region)[0] for piece in run.split(joint)]
            if len(pieces) > 1 and all(p is not None and not p.is_short for p in pieces):
                return [p for p in pieces if p is not None], None
    return [], reason


def _read_one(run: str, region: str) -> tuple[PhoneNumber | None, str | None]:
    run = _without_bracketed_trunk(run.strip())
    try:
        number = _written_national(run, region) or _parse_cached(run, region)
    except InvalidPhoneNumber as exc:
        return None, str(exc)
    if number.key.startswith("raw:"):
        return None, NOT_POSSIBLE
    if number.is_short and not run.isdigit():
        return None, SHORT_WITH_TEXT  # "201 / 202", "20 12": not an internal number as written
    return number, None


def _written_national(run: str, region: str) -> PhoneNumber | None:
    """A stored ``(201) 555-0123`` (US) or ``131 2345 6789`` (CN) is the national number it is
    written as, though its digits read with a '+' are a valid number too (+20 …, +1 312 …): the
    connector's bare digits are international first (:func:`_best_parse`), a number written with
    national grouping is national first. Bare digits and numbers with a prefix are left to it."""
    if run.isdigit() or run.startswith("+") or run.lstrip("([ ").startswith("0"):
        return None
    return _national_reading(run, region)


@lru_cache(maxsize=4096)
def _national_reading(run: str, region: str) -> PhoneNumber | None:
    try:
        parsed = phonenumbers.parse(run, region)
    except phonenumbers.NumberParseException:
        return None
    if parsed.country_code != phonenumbers.country_code_for_region(region) or not phonenumbers.is_valid_number(parsed):
        return None
    # Only where the region writes its national numbers so, without a trunk prefix (US, CN mobiles):
    # "33 1 42 68 53 00" in DE is a French number whose '+' was lost, a German one would start with 0.
    written = re.sub(r"\D", "", phonenumbers.format_number(parsed, PhoneNumberFormat.NATIONAL))
    if written != re.sub(r"\D", "", run):
        return None
    nsn = phonenumbers.national_significant_number(parsed)
    e164 = f"+{parsed.country_code}{nsn}"
    return PhoneNumber(key=e164, e164=e164, nsn=nsn)


def _without_bracketed_trunk(run: str) -> str:
    """``+44 (0)20 …`` -> ``+44 20 …``: the bracketed digits are dropped only when they are the
    trunk prefix of that country code (phonenumbers' metadata); ``+39 (0)2 …`` keeps its 0, since
    Italy has no trunk prefix and the 0 belongs to the number, and ``+7 (495) …`` its area code."""
    match = _TRUNK.match(run)
    if match is None or match.group(3) not in _trunk_prefixes(int(match.group(2))):
        return run
    return f"{match.group(1)}{match.group(2)} {run[match.end():].strip()}"


@lru_cache(maxsize=512)
def _trunk_prefixes(country_code: int) -> frozenset[str]:
    prefixes = set()
    for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(country_code, ()):
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
        if metadata is not None and metadata.national_prefix:
            prefixes.add(metadata.national_prefix)
    return frozenset(prefixes)
