"""A small vCard reader (2.1, 3.0 and 4.0) producing :class:`~crm_backends.base.Contact` values.

Used by the CardDAV backend and by the embedded directory's import command. It reads only what a
caller card needs and is forgiving: an unknown property is ignored, a broken line is skipped, a
card without a usable phone number is reported (line and reason) instead of stopping the import.

What it understands:

* line folding (CRLF or LF followed by a space or a tab), a byte order mark, many cards per file;
* vCard 2.1: ``ENCODING=QUOTED-PRINTABLE`` (also the bare ``QUOTED-PRINTABLE`` parameter) with its
  soft line breaks and ``CHARSET``, parameters without a name (``TEL;CELL;PREF:``), Android's
  custom labels (``TEL;X-CUSTOM(CHARSET=UTF-8,ENCODING=QUOTED-PRINTABLE,=42=C3=BC=72=6F):``);
* vCard 3.0: ``TYPE=work,voice``, repeated ``TYPE`` parameters, grouped properties
  (``item1.TEL`` with Apple's ``item1.X-ABLabel``);
* vCard 4.0: ``TEL;VALUE=uri:tel:+1-555-555-5555;ext=12``, quoted ``TYPE="work,voice"``;
* the escapes ``\\,`` ``\\;`` ``\\n`` ``\\\\`` in text values, compound ``N`` and ``ORG`` values.

Use::

    for entry in parse_vcards(decode_vcard_bytes(data), region="CH"):
        if entry.problem:
            report(entry.line, entry.problem)  # e.g. "no phone number (no TEL property with a value)"
        else:
            store(entry.contact)  # id, name, company, phones (as written) and their types, email,
                                  # job_title (also custom_data["title"]), image_url (a PHOTO URL)

The contact's id is the card's UID. A card without a UID gets an id derived from its name and the
digits of its numbers (:func:`derived_id`), so importing the same file again updates the contacts
instead of duplicating them; changing such a card's name or numbers makes it a new contact.
"""

from __future__ import annotations

import codecs
import hashlib
import quopri
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote

from lookup_core.phone import extract_numbers
from lookup_core.phone_types import phone_type
from lookup_core.types import Contact

__all__ = ["Tel", "VCardEntry", "decode_vcard_bytes", "derived_id", "parse_vcards"]

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_ESCAPED = {"n": "\n", "N": "\n"}
_ENCODINGS = {"QUOTED-PRINTABLE", "BASE64", "B", "8BIT", "7BIT"}
# Properties whose values are read; every other one is skipped before its value is decoded.
_WANTED = {"UID", "FN", "N", "NICKNAME", "ORG", "TEL", "EMAIL", "TITLE", "PHOTO", "VERSION", "X-ABLABEL"}
# Apple wraps its standard labels: "_$!<Mobile>!$_".
_APPLE_LABEL = re.compile(r"^_\$!<(.*)>!\$_$")


@dataclass(frozen=True, slots=True)
class Tel:
    """One TEL property: the number as written (``tel:`` prefix removed) and its lower-case types."""

    value: str
    types: tuple[str, ...] = ()


@dataclass(slots=True)
class VCardEntry:
    """One card of a file.

    ``problem`` is None when the card can be imported; otherwise it says why not (no number, no
    usable number, not closed) and ``line`` (1-based, the ``BEGIN:VCARD`` line) says where.
    """

    contact: Contact
    line: int
    uid: str | None = None
    version: str | None = None
    tels: list[Tel] = field(default_factory=list)
    problem: str | None = None


@dataclass(slots=True)
class _Property:
    group: str
    name: str
    params: dict[str, list[str]]
    value: str


def decode_vcard_bytes(data: bytes) -> str:
    """Text of a .vcf file: UTF-8 (with or without BOM), UTF-16 with a BOM, else Windows-1252."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def parse_vcards(text: str, region: str = "CH") -> Iterator[VCardEntry]:
    """Every card of ``text``, in file order. ``region`` decides which numbers are usable."""
    properties: list[_Property] | None = None
    start = 0
    depth = 0
    for line_number, line in _logical_lines(text.lstrip("\ufeff")):
        stripped = line.strip()
        upper = stripped.upper()
        if upper == "BEGIN:VCARD":
            if properties is None:
                properties, start, depth = [], line_number, 1
            else:  # a vCard 2.1 AGENT card nested inside this one: skipped
                depth += 1
            continue
        if properties is None:
            continue  # text between cards
        if upper == "END:VCARD":
            depth -= 1
            if depth == 0:
                yield _build(properties, start, region)
                properties = None
            continue
        if depth > 1 or not stripped:
            continue
        prop = _parse_property(line)
        if prop is not None:
            properties.append(prop)
    if properties is not None:
        entry = _build(properties, start, region)
        entry.problem = "the card is not closed (END:VCARD missing)"
        yield entry


def derived_id(name: str | None, phones: list[str]) -> str:
    """Stable id of a card without UID: its name and the digits of its numbers, hashed."""
    digits = sorted(re.sub(r"\D", "", phone) for phone in phones)
    text = (name or "").strip().casefold() + "\x1f" + "\x1f".join(digits)
    return "vcard-" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:20]


# reading lines -------------------------------------------------------------------------------
def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Unfolded lines with the number of the physical line each starts on."""
    current: str | None = None
    start = 0
    for number, line in enumerate(_LINE_BREAK.split(text), 1):
        if current is not None:
            if current.endswith("=") and _is_quoted_printable(current) and not _is_end(line):
                current = current[:-1] + line.lstrip(" \t")  # quoted-printable soft line break
                continue
            if line[:1] in (" ", "\t"):
                current += line[1:]
                continue
            yield start, current
        current, start = line, number
    if current is not None:
        yield start, current


def _is_end(line: str) -> bool:
    return line.strip().upper() == "END:VCARD"


def _is_quoted_printable(line: str) -> bool:
    colon = line.find(":")
    return colon > 0 and "QUOTED-PRINTABLE" in line[:colon].upper()


def _parse_property(line: str) -> _Property | None:
    """Split ``group.NAME;PARAM=a,b;BARE:value``; None for a line that is not a property."""
    colon = line.find(":")
    if colon <= 0:
        return None
    name_end = line.find(";", 0, colon)
    group, _, name = line[: colon if name_end < 0 else name_end].strip().rpartition(".")
    name = name.upper()
    if name not in _WANTED:
        return None
    if '"' in line[:colon]:  # a quoted parameter value may hold ':' or ';'
        parts, colon = _split_quoted(line)
        if colon < 0:
            return None
    else:
        parts = line[:colon].split(";")
    params: dict[str, list[str]] = {}
    for raw in parts[1:]:
        if raw[:9].upper() == "X-CUSTOM(" and raw.endswith(")"):  # Android's own label for a number
            params.setdefault("TYPE", []).append(_android_label(raw[9:-1]))
            continue
        key, equals, value = raw.partition("=")
        if not equals:
            key, value = ("ENCODING" if raw.strip().upper() in _ENCODINGS else "TYPE"), raw
        values = [_param_value(v) for v in value.split(",")] if value else []
        params.setdefault(key.strip().upper(), []).extend(v for v in values if v)
    return _Property(group.upper(), name, params, line[colon + 1 :])


def _android_label(inner: str) -> str:
    """The label of ``X-CUSTOM(CHARSET=UTF-8,ENCODING=QUOTED-PRINTABLE,=42=C3=BC=72=6F)`` ("Büro")."""
    *options, label = inner.split(",")
    settings = dict(option.partition("=")[::2] for option in options)
    if settings.get("ENCODING", "").upper() == "QUOTED-PRINTABLE":
        raw = quopri.decodestring(label.encode("utf-8"))
        try:
            label = raw.decode(settings.get("CHARSET") or "utf-8")
        except (LookupError, UnicodeDecodeError):
            label = raw.decode("cp1252", errors="replace")
    return label.strip()


def _split_quoted(line: str) -> tuple[list[str], int]:
    """The ';'-separated parts before the first ':' outside double quotes, and that colon's index."""
    parts: list[str] = []
    quoted = False
    begin = 0
    for index, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif char == ";":
            parts.append(line[begin:index])
            begin = index + 1
        elif char == ":":
            parts.append(line[begin:index])
            return parts, index
    return parts, -1


def _param_value(value: str) -> str:
    value = value.strip().strip('"')
    if "^" in value:  # RFC 6868 escapes in vCard 4.0 parameter values
        value = value.replace("^n", "\n").replace("^'", '"').replace("^^", "^")
    return value


# building a contact --------------------------------------------------------------------------
def _build(properties: list[_Property], line: int, region: str) -> VCardEntry:
    first: dict[str, _Property] = {}
    labels: dict[str, str] = {}
    grouped_tels: list[tuple[Tel, str]] = []
    emails: list[tuple[bool, str]] = []
    for prop in properties:
        if prop.name == "TEL":
            tel = _tel(prop)
            if tel is not None:
                grouped_tels.append((tel, prop.group))
        elif prop.name == "EMAIL":
            email = _unescape(_decoded(prop)).strip()
            if email:
                emails.append((_is_preferred(prop), email))
        elif prop.name == "X-ABLABEL" and prop.group:
            label = _unescape(_decoded(prop)).strip()
            labels[prop.group] = _APPLE_LABEL.sub(r"\1", label).lower()
        else:
            first.setdefault(prop.name, prop)
    # Apple puts the label of a grouped number in a separate property of the same group.
    tels = [_with_label(tel, labels.get(group)) if group else tel for tel, group in grouped_tels]

    uid = _text(first.get("UID"))
    name = _text(first.get("FN")) or _name_from_n(first.get("N")) or _text(first.get("NICKNAME"))
    company = _first_component(first.get("ORG"))
    if not name and company:
        name = company
    phones = [tel.value for tel in tels]
    custom: dict[str, str] = {}
    title = _text(first.get("TITLE"))
    if title:
        custom["title"] = title
    email = next((address for preferred, address in emails if preferred), None) or (
        emails[0][1] if emails else None
    )
    photo = _text(first.get("PHOTO")) or ""
    contact = Contact(
        id=uid or derived_id(name, phones),
        name=name,
        company=company,
        custom_data=custom,
        phones=phones,
        email=email,
        # TYPE=cell, TYPE=work,voice, Apple's item1.X-ABLabel (see lookup_core.phone_types)
        phone_types={tel.value: phone_type(",".join(tel.types)) for tel in tels if tel.types},
        job_title=title,
        # a PHOTO given by address (vCard 4.0, or 3.0 VALUE=uri); an embedded picture is dropped
        image_url=photo if photo.lower().startswith(("https://", "http://")) else None,
    )
    entry = VCardEntry(contact=contact, line=line, uid=uid, version=_text(first.get("VERSION")), tels=tels)
    if not tels:
        entry.problem = "no phone number (no TEL property with a value)"
    elif not any(_usable(tel.value, region) for tel in tels):
        entry.problem = f"no usable phone number ({len(tels)} TEL value(s), none is a phone number)"
    return entry


def _with_label(tel: Tel, label: str | None) -> Tel:
    if not label or label in tel.types:
        return tel
    return Tel(tel.value, (*tel.types, label))


def _tel(prop: _Property) -> Tel | None:
    value = _unescape(_decoded(prop)).strip()
    if value[:4].lower() == "tel:":
        number, *uri_params = unquote(value[4:]).split(";")
        extension = next((p[4:] for p in uri_params if p.lower().startswith("ext=")), "")
        value = number + (f";ext={extension}" if extension else "")
        context = next((p[14:] for p in uri_params if p.lower().startswith("phone-context=")), "")
        if context and not number.lstrip().startswith("+"):  # a local number: its context is part of it
            value += f";phone-context={context}"
    if not value:
        return None
    types = tuple(dict.fromkeys(t.lower() for t in prop.params.get("TYPE", []) if t))
    return Tel(value, types)


def _is_preferred(prop: _Property) -> bool:
    return "pref" in (t.lower() for t in prop.params.get("TYPE", [])) or prop.params.get("PREF") == ["1"]


def _usable(value: str, region: str) -> bool:
    return bool(extract_numbers(value, region)[0])


def _decoded(prop: _Property) -> str:
    """The value with its transfer encoding (quoted-printable) undone; binary values are dropped."""
    encoding = (prop.params.get("ENCODING") or [""])[0].upper()
    if encoding == "QUOTED-PRINTABLE":
        raw = quopri.decodestring(prop.value.encode("utf-8"))
        charset = (prop.params.get("CHARSET") or ["utf-8"])[0]
        try:
            return raw.decode(charset)
        except (LookupError, UnicodeDecodeError):
            return raw.decode("cp1252", errors="replace")
    if encoding in ("B", "BASE64"):
        return ""
    return prop.value


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    return _ESCAPE.sub(lambda m: _ESCAPED.get(m.group(1), m.group(1)), text)


def _components(text: str) -> list[str]:
    """Split a compound value (N, ORG) on the semicolons that are not escaped."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ";":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [_unescape(part).strip() for part in parts]


def _text(prop: _Property | None) -> str | None:
    if prop is None:
        return None
    text = " ".join(_unescape(_decoded(prop)).split())
    return text or None


def _first_component(prop: _Property | None) -> str | None:
    if prop is None:
        return None
    first = _components(_decoded(prop))[0]
    return " ".join(first.split()) or None


def _name_from_n(prop: _Property | None) -> str | None:
    if prop is None:
        return None
    parts = _components(_decoded(prop)) + [""] * 5
    family, given, additional, prefix, suffix = parts[:5]
    words = [prefix, given, additional, family, suffix]
    text = " ".join(word.replace(",", " ") for word in words if word)
    return " ".join(text.split()) or None
