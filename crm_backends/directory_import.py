"""Filling the embedded directory from files: CSV or tab text (any spreadsheet, CRM or address book
export), Excel ``.xlsx`` workbooks and vCard.

Imports stream in batches, so a million rows need little memory, and are idempotent: a contact is
matched by its ``id`` column, or without one by its name and company, so importing the same file
again updates contacts instead of duplicating them.

Columns are recognised through one table, :data:`HEADER_ALIASES` (documented in the README), so the
exports of Google Contacts (current and legacy headers), Outlook (English, German, French) and
hand-made sheets import without renaming anything. Cells are passed to
:func:`~crm_backends.contact_store.normalize_phones` as written: reading numbers out of text (labels,
several numbers in one cell) is the phone module's job, not the importer's.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import os
import re
import unicodedata
import zipfile
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import TypeVar

from lookup_core.phone_types import phone_type as embeddable_type
from lookup_core.types import Contact, StoredPhone

from .contact_store import ContactStore, normalize_phones

T = TypeVar("T")
BATCH = 5000
PARALLEL_FROM_BYTES = 4 << 20
ProgressCallback = Callable[[int], None]
# A header row may sit below a title or a blank line in a sheet; it is looked for this far down.
HEADER_SEARCH_ROWS = 10
_CHUNK = 1 << 20

# One table for every column the importer understands, keyed by the header's normalized form
# (see header_key: accents, case, spaces, punctuation and the digits of "Phone 1"/"E-mail 2" are
# ignored). A value is (field, phone type). Phone columns not listed here are recognised by
# PHONE_WORDS below and take their type from the rest of their header (TYPE_WORDS).
HEADER_ALIASES: dict[str, tuple[str, str | None]] = {
    # id and links
    **dict.fromkeys(("id", "contactid", "uid"), ("id", None)),
    **dict.fromkeys(("contacturi", "contacturl"), ("contact_uri", None)),
    **dict.fromkeys(("companyuri", "companyurl"), ("company_uri", None)),
    # names
    **dict.fromkeys(("name", "fullname", "displayname", "anzeigename", "vollstandigername", "nomcomplet"),
                    ("name", None)),
    **dict.fromkeys(("firstname", "givenname", "forename", "vorname", "prenom"), ("first_name", None)),
    **dict.fromkeys(("middlename", "additionalname", "weiterevornamen", "zweitervorname", "deuxiemeprenom"),
                    ("middle_name", None)),
    **dict.fromkeys(("lastname", "familyname", "surname", "nachname", "nom", "nomdefamille"), ("last_name", None)),
    # company and job title
    **dict.fromkeys(("company", "companyname", "organization", "organisation", "organizationname",
                     "organisationname", "firma", "firmenname", "unternehmen", "societe", "entreprise"),
                    ("company", None)),
    # a plain "Title" is a job title, unless a job title column is there too (Outlook: "Dr.")
    **dict.fromkeys(("title", "jobtitle", "organizationtitle", "position", "funktion", "fonction", "poste"),
                    ("title", None)),
    # a picture's address (Google: "Photo", a URL)
    **dict.fromkeys(("photo", "photourl", "picture", "pictureurl", "avatar", "profileimageurl", "imageurl"),
                    ("image_url", None)),
    # e-mail
    **dict.fromkeys(("email", "emailaddress", "emailvalue", "emailadresse", "mail", "courriel",
                     "adressedemessagerie", "adresseemail", "adressemail"), ("email", None)),
    # a number's label in the column beside it (Google: "Phone 1 - Label", legacy "Phone 1 - Type")
    **dict.fromkeys(("phonelabel", "phonetype"), ("phone_label", None)),
    # phone columns whose name is not "<type> phone" or "phone <type>"
    **dict.fromkeys(("phone", "phonevalue", "phonenumber", "telephone", "tel", "telefon", "telefonnummer",
                     "rufnummer", "numero", "numerodetelephone"), ("phone", None)),
    **dict.fromkeys(("mobile", "mobil", "mobiltelefon", "mobilephone", "mobilenumber", "cell", "cellphone",
                     "handy", "natel", "portable", "telmobile", "telephonemobile"), ("phone", "mobile")),
    **dict.fromkeys(("fax", "telefax", "telecopie"), ("phone", "fax")),
    "pager": ("phone", "pager"), "callback": ("phone", "callback"), "isdn": ("phone", "isdn"),
    "telex": ("phone", "telex"), "ruckmeldung": ("phone", "callback"),
    # export bookkeeping that says nothing about the caller
    **dict.fromkeys(("emaillabel", "emailtype", "emailtyp", "emaildisplayname", "emailangezeigtername", "labels",
                     "groupmembership", "fileas", "phoneticfirstname", "phoneticmiddlename",
                     "phoneticlastname", "yominame", "givennameyomi", "additionalnameyomi", "familynameyomi",
                     "organizationtype", "organizationyominame", "gender", "geschlecht", "sensitivity",
                     "vertraulichkeit", "priority", "prioritat", "private", "privat", "internetfreebusy",
                     # Google splits each address into parts beside its "Address 1 - Formatted"
                     "addresslabel", "addresstype", "addressstreet", "addresscity", "addresspobox", "addressregion",
                     "addresspostalcode", "addresscountry", "addressextendedaddress", "websitelabel", "websitetype"),
                    ("ignore", None)),
}
# A header that starts or ends with one of these (after normalization) is a phone column:
# "Business Phone 2", "Phone Work", "Telefon geschäftlich", "Téléphone bureau", "Autotelefon".
PHONE_WORDS = ("telephone", "telefon", "phone", "fax")
# A header that starts with one of these is a mobile number's column: "mobile_private", "Handynummer".
MOBILE_WORDS = ("mobile", "mobil", "handy", "natel", "cell", "portable")
# "tel" starts a phone column's header only before a type or nothing: "Tel. privat", "tel_home",
# "Tel. Nr.", but not "Telegram".
_NUMBER_WORDS = ("", "number", "nummer", "value", "nr", "no", "num", "numero")
# Words of a phone column's header that give the number's type.
TYPE_WORDS: dict[str, str] = {
    **dict.fromkeys(("business", "work", "office", "geschaftlich", "geschaft", "buro", "bureau", "dienstlich",
                     "professionnel", "travail"), "work"),
    **dict.fromkeys(("home", "private", "privat", "domicile", "personnel"), "home"),
    **dict.fromkeys(("mobile", "mobil", "cell", "handy", "natel", "portable"), "mobile"),
    **dict.fromkeys(("main", "companymain", "zentrale", "haupt", "firma", "societe", "principal"), "main"),
    **dict.fromkeys(("other", "weiteres", "andere", "autre"), "other"),
    **dict.fromkeys(("assistants", "assistant", "assistent"), "assistant"),
    **dict.fromkeys(("car", "auto"), "car"),
    **dict.fromkeys(("primary", "primar"), "primary"),
    "radio": "radio", "ttytdd": "tty/tdd", "furhorbehinderte": "tty/tdd", "pager": "pager", "isdn": "isdn",
}

_FILE_KINDS = {b"PK\x03\x04": "xlsx", b"\xd0\xcf\x11\xe0": "xls"}


class ImportFileError(Exception):
    """The file cannot be imported at all; the message says why in one line."""


@dataclass
class ImportReport:
    imported: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)  # skipped rows: (line number, reason)
    warnings: list[tuple[int, str]] = field(default_factory=list)  # imported rows with a value not read
    source: str = ""  # what was read: "CSV, comma-separated", "xlsx, sheet 'Kontakte'", "vCard"
    encoding: str | None = None  # of a text file, as detected
    columns: list[str] = field(default_factory=list)  # "Phone 1 - Value -> phone (type from Phone 1 - Label)"

    @property
    def skipped(self) -> int:
        return len(self.problems)


@dataclass(frozen=True, slots=True)
class RawNumber:
    """A phone cell as written, the column it came from and its type (from a label or the header)."""

    text: str
    column: str
    type: str | None = None


def import_file(
    store: ContactStore, path: str, progress: ProgressCallback | None = None, sheet: str | None = None
) -> ImportReport:
    """Import a CSV/text, ``.xlsx`` or ``.vcf`` file (chosen by content, else by extension).

    Raises :class:`ImportFileError` for a file that cannot be read at all (undecodable, not a
    workbook, an unknown ``sheet``)."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    kind = _FILE_KINDS.get(head[:4])
    if kind == "xls":
        raise ImportFileError("this is an Excel 97-2003 workbook (.xls): save it as .xlsx or CSV and import that")
    if kind == "xlsx" or path.lower().endswith((".xlsx", ".xlsm")):
        return import_xlsx(store, path, progress, sheet)
    if sheet is not None:
        raise ImportFileError("--sheet applies to .xlsx workbooks only")
    text_head = _decoded_head(head)
    if path.lower().endswith((".vcf", ".vcard")) or text_head.lstrip()[:11].upper() == "BEGIN:VCARD":
        return import_vcards(store, path, progress)
    return import_csv(store, path, progress)


# text files ----------------------------------------------------------------------------------
def detect_encoding(chunks: Iterable[bytes]) -> tuple[str, str]:
    """(Python codec, label) of a text file given as byte chunks.

    A byte order mark decides (UTF-8, UTF-16); otherwise strict UTF-8, else Windows-1252 (which
    reads every Latin-1 text too). Strict UTF-8 checks itself: a Windows-1252 file with accents
    practically never passes it. Raises :class:`ImportFileError` for binary data, a file that
    switches from UTF-8 to another encoding part way, or bytes that no Western encoding has.
    """
    chunks = iter(chunks)
    first = next(chunks, b"")
    if first.startswith(codecs.BOM_UTF32_LE):
        raise ImportFileError("the file is UTF-32: save it as 'CSV UTF-8' or as Unicode text (UTF-16)")
    if first.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        decoder = codecs.getincrementaldecoder("utf-16")("strict")
        try:
            for chunk in _chained(first, chunks):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise ImportFileError("the file starts like UTF-16 text but is not: re-save it") from None
        return "utf-16", "UTF-16 with BOM"
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    lines = 0
    non_ascii = False
    for chunk in _chained(first, chunks):
        _refuse_binary(chunk, lines)
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            line = lines + chunk.count(b"\n", 0, exc.start) + 1
            if non_ascii or not chunk[: exc.start].isascii():
                raise ImportFileError(
                    f"the file mixes encodings: UTF-8 before line {line}, then a byte that is not UTF-8 "
                    f"(0x{chunk[exc.start]:02X}); save the whole file as 'CSV UTF-8'"
                ) from None
            return _windows_1252(chunk, chunks, lines)  # all before this chunk was ASCII
        non_ascii = non_ascii or not chunk.isascii()
        lines += chunk.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise ImportFileError("the file ends in the middle of a UTF-8 character: it was cut short") from None
    return ("utf-8-sig", "UTF-8 with BOM") if first.startswith(codecs.BOM_UTF8) else ("utf-8", "UTF-8")


def _windows_1252(chunk: bytes, rest: Iterator[bytes], lines: int) -> tuple[str, str]:
    for part in _chained(chunk, rest):
        _refuse_binary(part, lines)
        try:
            part.decode("cp1252")
        except UnicodeDecodeError as exc:
            line = lines + part.count(b"\n", 0, exc.start) + 1
            raise ImportFileError(
                f"cannot tell the file's encoding: it is neither UTF-8 nor Windows-1252/Latin-1 (byte "
                f"0x{part[exc.start]:02X} at line {line}); save it as 'CSV UTF-8'"
            ) from None
        lines += part.count(b"\n")
    return "cp1252", "Windows-1252 (Latin-1)"


def _refuse_binary(chunk: bytes, lines: int) -> None:
    nul = chunk.find(b"\x00")
    if nul >= 0:
        line = lines + chunk.count(b"\n", 0, nul) + 1
        raise ImportFileError(
            f"not a text file (binary data at line {line}): import a CSV, tab-separated text, .xlsx or vCard file"
        )


def _chained(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _file_chunks(path: str) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            yield chunk


def _decoded_head(head: bytes) -> str:
    """The start of a text file, good enough to recognise a vCard (UTF-16 or UTF-8)."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return head[: len(head) // 2 * 2].decode("utf-16", errors="replace")
    return head.decode("utf-8", errors="replace").lstrip("\ufeff")


def import_csv(store: ContactStore, path: str, progress: ProgressCallback | None = None) -> ImportReport:
    codec, label = detect_encoding(_file_chunks(path))
    report = ImportReport(encoding=label)
    with open(path, encoding=codec, newline="") as handle:
        sample = [line for _, line in zip(range(HEADER_SEARCH_ROWS), handle, strict=False)]
        handle.seek(0)
        hint = _SEPARATOR_HINT.match(sample[0]) if sample else None
        skipped = 0
        if hint:  # "sep=;", which some tools write first so that Excel splits the columns
            delimiter, skipped = hint.group(1), 1
            handle.readline()
        else:  # the first line that has one; a title line above the header has none
            line = next((line for line in sample if any(d in line for d in _DELIMITERS)), "")
            delimiter = max(_DELIMITERS, key=line.count)
        report.source = f"CSV, {_DELIMITERS[delimiter]}-separated"
        reader = csv.reader(_counting(handle, progress), delimiter=delimiter)
        try:
            rows = ((reader.line_num + skipped, row) for row in reader)
            found = _find_header(rows)
            if found is None:
                first = next((row for row in csv.reader(sample[skipped:], delimiter=delimiter)
                              if any(cell.strip() for cell in row)), None)
                if first is None:
                    report.problems.append((1, "the file is empty: a header row is required"))
                else:
                    report.columns = _columns(first).summary()
                    report.problems.append((1, _NO_PHONE_COLUMN))
                return report
            columns = _columns(found[1])
            report.columns = columns.summary()
            if found[0] > 1:
                report.source += f", header on line {found[0]}"
            stop = _Stop()
            _import_rows(store, stop.guard(rows, csv.Error), columns, report, os.path.getsize(path))
        except csv.Error as exc:  # in the first lines, before the header was found
            stop = _Stop(exc)
        if stop.error is not None:
            raise ImportFileError(f"line {reader.line_num + skipped}: {stop.error}; the {report.imported} "
                                  "contacts before it were imported") from None
    return report


class _Stop:
    """Ends a stream of rows at the first error of the given kinds, keeping the error, so that the
    rows read before it are still stored."""

    def __init__(self, error: BaseException | None = None):
        self.error = error

    def guard(self, rows: Iterator[T], kinds: type[BaseException] | tuple[type[BaseException], ...]) -> Iterator[T]:
        try:
            yield from rows
        except kinds as exc:
            self.error = exc


_DELIMITERS = {";": "semicolon", ",": "comma", "\t": "tab"}
_SEPARATOR_HINT = re.compile(r"sep=([;,\t])\r?\n?$")
_NO_PHONE_COLUMN = ("no phone column: name one phone, mobile, tel or fax (e.g. 'Phone', 'Business Phone', "
                    "'Telefon', 'Téléphone bureau'; see the README)")


# Excel workbooks -----------------------------------------------------------------------------
def import_xlsx(
    store: ContactStore, path: str, progress: ProgressCallback | None = None, sheet: str | None = None
) -> ImportReport:
    """The first sheet with a header row naming a phone column, or ``sheet``; streamed (read-only)."""
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # zipfile, XML or openpyxl errors: any means the same to the user
        raise ImportFileError(f"cannot read the workbook ({type(exc).__name__}: {exc}); is it an .xlsx file?") from None
    try:
        names = workbook.sheetnames
        if sheet is not None and sheet not in names:
            raise ImportFileError(f"no sheet named {sheet!r}; the workbook has {', '.join(map(repr, names))}")
        report = ImportReport()
        for name in [sheet] if sheet is not None else names:
            worksheet = workbook[name]
            if not hasattr(worksheet, "iter_rows"):  # a chart sheet
                continue
            declared_rows = worksheet.max_row  # from the sheet's dimension record, for the progress bar only
            worksheet.reset_dimensions()  # some writers record wrong dimensions; read what is there
            rows = enumerate(worksheet.iter_rows(), 1)
            try:
                found = _find_header((line, [_cell_text(c.value, None) for c in cells]) for line, cells in rows)
                if found is None:
                    continue
                header_line, header = found
                columns = _columns(header)
                report.source = f"xlsx, sheet {name!r}, header on row {header_line}"
                report.columns = columns.summary()
                lines = ((line, _row_texts(cells, columns.phone_indexes)) for line, cells in rows)
                lines = _row_progress(lines, progress, os.path.getsize(path), declared_rows)
                stop = _Stop()
                _import_rows(store, stop.guard(lines, _DAMAGED), columns, report, _unpacked_size(path))
            except _DAMAGED as exc:  # in the first rows, before the header was found
                stop = _Stop(exc)
            if stop.error is not None:
                exc = stop.error
                raise ImportFileError(f"sheet {name!r} is damaged ({type(exc).__name__}: {exc}); the "
                                      f"{report.imported} contacts before the damage were imported") from None
            return report
        where = f"sheet {sheet!r}" if sheet is not None else f"any sheet ({', '.join(map(repr, names))})"
        report.problems.append((1, f"no header row with a phone column in the first {HEADER_SEARCH_ROWS} rows "
                                   f"of {where}; " + _NO_PHONE_COLUMN))
        return report
    finally:
        workbook.close()


# What a damaged workbook raises while its rows stream in (a cut zip, broken XML).
_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, SyntaxError, KeyError, ValueError, OSError)


def _row_progress(
    lines: Iterator[tuple[int, list[str]]], progress: ProgressCallback | None, size: int, declared_rows: int | None
) -> Iterator[tuple[int, list[str]]]:
    """Rows, reporting progress as the share of the sheet's declared rows read, in file bytes."""
    if progress is None:
        yield from lines
        return
    reported = 0
    for line, texts in lines:
        if declared_rows and line % 1000 == 0:
            done = min(size, size * line // declared_rows)
            progress(done - reported)
            reported = done
        yield line, texts
    progress(size - reported)


def _unpacked_size(path: str) -> int:
    """The bytes of XML a workbook holds: what decides, as a CSV file's size does, whether its
    numbers are read in worker processes (a workbook is compressed about ten to one)."""
    with zipfile.ZipFile(path) as archive:
        return sum(info.file_size for info in archive.infolist())


def _find_header(rows: Iterable[tuple[int, list[str]]]) -> tuple[int, list[str]] | None:
    """The first row, within the first rows, that names a phone column: (its line, its cells)."""
    for line, texts in rows:
        if line > HEADER_SEARCH_ROWS:
            return None
        if any(text.strip() for text in texts) and _columns(texts).phones:
            return line, texts
    return None


def _row_texts(cells: tuple, phone_indexes: frozenset[int]) -> list[str]:
    return [
        _cell_text(cell.value, getattr(cell, "number_format", None) if index in phone_indexes else None)
        for index, cell in enumerate(cells)
    ]


_QUOTED = re.compile(r'"[^"]*"|\\.')


def _cell_text(value: object, number_format: str | None) -> str:
    """A cell as the text it shows. Numbers keep every digit (41215522000, never 4.1215522E+10);
    in a phone column a format such as ``0000000000`` or ``"+"0`` restores the leading zeros or
    the plus sign that storing the number as a number removed."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).upper()
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e17:
        value = int(value)
    if isinstance(value, int):
        text = str(value)
        if number_format and number_format not in ("General", "0", "@"):
            section = number_format.split(";")[0]
            literals = "".join(m.group(0).strip('"').lstrip("\\") for m in _QUOTED.finditer(section))
            bare = _QUOTED.sub("", section)
            text = text.zfill(bare.count("0"))
            if "+" in literals or bare.lstrip().startswith("+"):
                text = "+" + text
        return text
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return str(value)


# vCard ---------------------------------------------------------------------------------------
def import_vcards(store: ContactStore, path: str, progress: ProgressCallback | None = None) -> ImportReport:
    from .vcard import parse_vcards

    with open(path, "rb") as handle:
        data = handle.read()
    codec, label = detect_encoding([data])
    report = ImportReport(source="vCard", encoding=label)
    if progress:
        progress(len(data))

    def contacts() -> Iterator[tuple[Contact, list[StoredPhone]]]:
        for entry in parse_vcards(data.decode(codec), store.region):
            if entry.problem is not None and not (entry.tels and entry.problem.startswith("no usable")):
                report.problems.append((entry.line, f"{entry.problem} ({entry.contact.name or 'unnamed card'})"))
                continue
            numbers = [RawNumber(tel.value, "TEL", ",".join(tel.types) or None) for tel in entry.tels]
            phones, unread = _read_numbers(numbers, store.region)
            if not phones:
                report.problems.append((entry.line, f"no usable phone number: {'; '.join(unread)} "
                                                    f"({entry.contact.name or 'unnamed card'})"))
                continue
            for reason in unread:
                report.warnings.append((entry.line, f"{reason} ({entry.contact.name or 'unnamed card'})"))
            yield entry.contact, phones

    report.imported = _store_batches(store, contacts())
    return report


# columns -------------------------------------------------------------------------------------
def header_key(title: str) -> str:
    """A header as the alias table knows it: accents, case, spaces, punctuation and digits dropped."""
    text = unicodedata.normalize("NFKD", title).casefold()
    return "".join(char for char in text if char.isalpha() and char.isascii())


@dataclass
class _Columns:
    header: list[str]
    named: dict[str, list[int]]  # field -> its columns, in file order
    phones: list[tuple[int, str | None, int | None]]  # (column, type from the header, label column)
    custom: list[tuple[str, int]]
    ignored: list[int]

    @property
    def phone_indexes(self) -> frozenset[int]:
        return frozenset(index for index, _, _ in self.phones)

    def summary(self) -> list[str]:
        """Which column was read as what, for the import report."""
        title = self.header
        lines = []
        for name in ("id", "name", "first_name", "middle_name", "last_name", "company", "title", "email",
                     "contact_uri", "company_uri", "image_url"):
            indexes = self.named.get(name, [])
            if indexes:
                used = title[indexes[0]] + (f" (else {', '.join(title[i] for i in indexes[1:])})"
                                            if len(indexes) > 1 else "")
                target = {"first_name": "name (first)", "middle_name": "name (middle)", "last_name": "name (last)",
                          "title": "job title (and customData title)"}.get(name, name)
                lines.append(f"{used} -> {target}")
        for index, kind, label in self.phones:
            how = f"type from {title[label]}" if label is not None else (kind or "no type")
            lines.append(f"{title[index]} -> phone ({how})")
        if self.custom:
            lines.append(f"{', '.join(name for name, _ in self.custom)} -> customData")
        if self.ignored:
            lines.append(f"{', '.join(title[i] for i in self.ignored)} -> ignored")
        return lines


def _columns(header: list[str]) -> _Columns:
    header = [title.strip() for title in header]
    named: dict[str, list[int]] = {}
    phones: list[tuple[int, str | None, int | None]] = []
    labels: dict[str, int] = {}
    custom: list[tuple[str, int]] = []
    ignored: list[int] = []
    for index, title in enumerate(header):
        key = header_key(title)
        if not key:
            if title:
                custom.append((title, index))
            continue
        kind, phone_type = HEADER_ALIASES.get(key) or _phone_column(title, key)
        if kind == "phone":
            phones.append((index, phone_type, None))
        elif kind == "phone_label":
            labels[_label_pair(title)] = index
        elif kind == "ignore":
            ignored.append(index)
        elif kind:
            named.setdefault(kind, []).append(index)
        else:
            custom.append((title, index))
    # Google's "Phone 1 - Label" gives the type of "Phone 1 - Value"
    phones = [(i, kind, labels.pop(_label_pair(header[i]), None)) for i, kind, _ in phones]
    ignored.extend(labels.values())
    titles = named.get("title", [])
    plain = [i for i in titles if header_key(header[i]) == "title"]
    if plain and len(plain) < len(titles):  # beside a job title, "Title" is the salutation (Outlook: "Dr.")
        ignored.extend(plain)
        named["title"] = [i for i in titles if i not in plain]
    return _Columns(header, named, phones, custom, sorted(ignored))


def _phone_column(title: str, key: str) -> tuple[str | None, str | None]:
    """("phone", type) for a header that names a phone column by its words, else (None, None)."""
    if key.startswith("phonetic"):
        return None, None
    for word in PHONE_WORDS:
        if key.startswith(word) or key.endswith(word):
            rest = key[len(word):] if key.startswith(word) else key[: -len(word)]
            return "phone", _phone_type(title, "" if rest in _NUMBER_WORDS else rest, word)
    if key.startswith(MOBILE_WORDS):
        return "phone", "mobile"
    if key.startswith("tel"):
        rest = key[3:]
        if rest in _NUMBER_WORDS:
            return "phone", None
        known = _known_type(rest)
        if known:
            return "phone", known
    return None, None


def _phone_type(title: str, rest: str, word: str) -> str | None:
    if word == "fax":
        base = TYPE_WORDS.get(rest)
        return f"{base} fax" if base and base != "fax" else "fax"
    if not rest:
        return None
    known = _known_type(rest)
    if known:
        return known
    words = re.sub(r"[\d_\-.:/]+", " ", title).split()
    other = [w for w in words if header_key(w) and not any(header_key(w).startswith(p) for p in PHONE_WORDS)]
    return " ".join(other).lower() or None


def _known_type(rest: str) -> str | None:
    """The type that the rest of a header names: "geschaftlich2" and "privat" give work and home."""
    if rest in TYPE_WORDS:
        return TYPE_WORDS[rest]
    for candidate, kind in TYPE_WORDS.items():
        if rest.startswith(candidate) or rest.endswith(candidate):
            return kind
    return None


_PAIR = re.compile(r"\s*-?\s*(label|type|value)\s*$", re.I)


def _label_pair(title: str) -> str:
    """'Phone 1 - Label', 'Phone 1 - Type' and 'Phone 1 - Value' all give 'phone 1'."""
    return _PAIR.sub("", title).casefold()


# rows ----------------------------------------------------------------------------------------
_NO_VALUE = {"0/0/00", "0.0.00", "00.00.00"}  # Outlook's empty date, written in every date column
@dataclass(slots=True)
class _Row:
    line: int
    contact: Contact
    numbers: list[RawNumber]


def _rows(lines: Iterable[tuple[int, list[str]]], columns: _Columns) -> Iterator[_Row]:
    """Each non-empty row with its contact (raw numbers, no id yet) and its numbers with their types."""
    named = columns.named
    header = columns.header
    for line, row in lines:
        if not any(cell.strip() for cell in row):
            continue

        def cell(name: str, row: list[str] = row) -> str:
            for index in named.get(name, ()):
                value = row[index].strip() if index < len(row) else ""
                if value:
                    return value.split(" ::: ")[0].strip()
            return ""

        numbers = []
        for index, phone_type, label in columns.phones:
            text = row[index].strip() if index < len(row) else ""
            if text:
                if label is not None and label < len(row) and row[label].strip():
                    phone_type = row[label].strip().lstrip("* ").strip() or phone_type
                numbers.append(RawNumber(text, header[index], phone_type))
        name = cell("name") or " ".join(p for p in (cell("first_name"), cell("middle_name"), cell("last_name")) if p)
        custom = {
            title: row[i].strip() for title, i in columns.custom
            if i < len(row) and row[i].strip() and row[i].strip() not in _NO_VALUE
        }
        title = cell("title")
        if title:
            custom.setdefault("title", title)
        image = cell("image_url")
        yield _Row(line, Contact(
            id=cell("id"),
            name=name or None,
            company=cell("company") or None,
            contact_uri=cell("contact_uri") or None,
            company_uri=cell("company_uri") or None,
            email=cell("email") or None,
            custom_data=custom,
            phones=[number.text for number in numbers],
            phone_types={number.text: embeddable_type(number.type) for number in numbers if number.type},
            job_title=title or None,
            image_url=image if image.startswith(("https://", "http://")) else None,
        ), numbers)


def _import_rows(
    store: ContactStore, lines: Iterable[tuple[int, list[str]]], columns: _Columns, report: ImportReport,
    file_bytes: int,
) -> None:
    with _normalizer(store.region, file_bytes) as normalize:
        contacts = _with_phones(_chunks(_rows(lines, columns), BATCH), normalize, report)
        report.imported = _store_batches(store, contacts)


Normalizer = Callable[[Iterator[list[_Row]]], Iterator[tuple[list[_Row], list]]]


def _with_phones(
    chunks: Iterator[list[_Row]], normalize: Normalizer, report: ImportReport
) -> Iterator[tuple[Contact, list[StoredPhone]]]:
    """Attach normalized numbers to each row; report the rows without a usable one."""
    for rows, results in normalize(chunks):
        for row, (phones, unread) in zip(rows, results, strict=True):
            who = row.contact.name or row.contact.company or "unnamed"
            if not phones:
                what = f"no usable phone number: {'; '.join(unread)}" if unread else "no phone number"
                report.problems.append((row.line, f"{what} ({who})"))
                continue
            for reason in unread:
                report.warnings.append((row.line, f"{reason} ({who}; its other numbers were imported)"))
            if not row.contact.id:
                row.contact.id = derived_id(row.contact.name, row.contact.company, phones)
            if not row.contact.name:  # a company's own row: the card shows the company (as for a vCard)
                row.contact.name = row.contact.company
            yield row.contact, phones


@contextmanager
def _normalizer(region: str, file_bytes: int) -> Iterator[Normalizer]:
    """Number normalization (phonenumbers) is most of an import's time; big files spread it over
    worker processes while this one reads the file and writes SQLite."""
    workers = min(4, os.cpu_count() or 1)
    if file_bytes < PARALLEL_FROM_BYTES or workers < 2:
        yield lambda chunks: ((rows, _read_lists(region, [r.numbers for r in rows])) for rows in chunks)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:

        def run(chunks: Iterator[list[_Row]]):
            in_flight: deque = deque()
            for rows in chunks:
                in_flight.append((rows, pool.submit(_read_lists, region, [r.numbers for r in rows])))
                if len(in_flight) > 2 * workers:  # bounded: memory stays flat however big the file
                    done_rows, future = in_flight.popleft()
                    yield done_rows, future.result()
            while in_flight:
                done_rows, future = in_flight.popleft()
                yield done_rows, future.result()

        yield run


def _read_lists(region: str, number_lists: list[list[RawNumber]]) -> list[tuple[list[StoredPhone], list[str]]]:
    return [_read_numbers(numbers, region) for numbers in number_lists]


def _read_numbers(numbers: list[RawNumber], region: str) -> tuple[list[StoredPhone], list[str]]:
    """A row's distinct numbers, and a reason for each value from which no number could be read."""
    seen: dict[StoredPhone, None] = {}
    unread: list[str] = []
    for number in numbers:
        problems: list[str] = []
        phones = normalize_phones([number.text], region, problems)
        seen.update(dict.fromkeys(phones))
        if problems or not phones:
            why = "; ".join(problems) or "not a phone number"
            unread.append(f"{number.column} {_shown(number.text)}: {why}")
    return list(seen), unread


def _shown(text: str) -> str:
    """A value in the report, which may end up in a platform's log (an import in a release phase):
    its words stay readable, every digit but the last three is masked."""
    if len(text) > 60:
        text = text[:57] + "..."
    keep = sum(char.isdigit() for char in text) - 3
    masked = []
    for char in text:
        if char.isdigit() and keep > 0:
            keep -= 1
            char = "*"
        masked.append(char)
    return repr("".join(masked))


def _chunks(rows: Iterator[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def derived_id(name: str | None, company: str | None, phones: list[StoredPhone]) -> str:
    """A stable id for a row or card that has none: its name and company, else its first number."""
    basis = "|".join(" ".join((part or "").casefold().split()) for part in (name, company))
    if basis == "|":
        basis = phones[0].key if phones else ""
    return "auto-" + hashlib.sha1(basis.encode()).hexdigest()[:16]


def _store_batches(store: ContactStore, rows: Iterator[tuple[Contact, list[StoredPhone]]]) -> int:
    return sum(store.upsert(batch) for batch in _chunks(rows, BATCH))


def _counting(handle: io.TextIOBase, progress: ProgressCallback | None) -> Iterator[str]:
    """Iterate lines, reporting the characters read (close enough to bytes for a progress bar)."""
    if progress is None:
        yield from handle
        return
    pending = 0
    for line in handle:
        pending += len(line)
        if pending >= 1 << 20:
            progress(pending)
            pending = 0
        yield line
    progress(pending)


def file_size(path: str) -> int:
    return os.path.getsize(path)
