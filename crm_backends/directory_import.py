"""Filling the embedded directory from files: CSV (any spreadsheet or CRM export) and vCard.

Imports stream in batches, so a million rows need little memory, and are idempotent: a contact is
matched by its ``id`` column, or without one by its name and company, so importing the same file
again updates contacts instead of duplicating them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from .base import Contact
from .contact_store import ContactStore, StoredPhone, normalize_phones

T = TypeVar("T")
BATCH = 5000
PARALLEL_FROM_BYTES = 4 << 20
ProgressCallback = Callable[[int], None]

_PHONE_PREFIXES = ("phone", "mobile", "tel", "fax")
_ALIASES = {
    "id": "id", "name": "name", "full_name": "name", "fullname": "name", "display_name": "name",
    "first_name": "first_name", "firstname": "first_name", "given_name": "first_name",
    "last_name": "last_name", "lastname": "last_name", "family_name": "last_name", "surname": "last_name",
    "company": "company", "organization": "company", "organisation": "company",
    "email": "email", "e-mail": "email", "e_mail": "email",
    "contact_uri": "contact_uri", "company_uri": "company_uri",
}


@dataclass
class ImportReport:
    imported: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)

    @property
    def skipped(self) -> int:
        return len(self.problems)


def import_file(store: ContactStore, path: str, progress: ProgressCallback | None = None) -> ImportReport:
    """Import a ``.csv`` or ``.vcf`` file (chosen by extension, else by content)."""
    with open(path, "rb") as handle:
        head = handle.read(4096).lstrip(b"\xef\xbb\xbf").lstrip()
    if path.lower().endswith((".vcf", ".vcard")) or head[:11].upper() == b"BEGIN:VCARD":
        return import_vcards(store, path, progress)
    return import_csv(store, path, progress)


def import_csv(store: ContactStore, path: str, progress: ProgressCallback | None = None) -> ImportReport:
    report = ImportReport()
    with open(path, encoding="utf-8-sig", newline="") as handle:
        sample = handle.readline()
        delimiter = max((";", ",", "\t"), key=sample.count)
        handle.seek(0)
        reader = csv.reader(_counting(handle, progress), delimiter=delimiter)
        header = next(reader, None)
        if not header:
            report.problems.append((1, "the file is empty: a header row is required"))
            return report
        columns = _columns(header)
        if not columns.phones:
            report.problems.append((1, "no phone column: name one phone, mobile, tel or fax (e.g. 'phone_work')"))
            return report
        rows = _csv_rows(reader, columns)
        with _normalizer(store.region, os.path.getsize(path)) as normalize:
            contacts = _with_phones(_chunks(rows, BATCH), normalize, report)
            report.imported = _store_batches(store, contacts)
    return report


def import_vcards(store: ContactStore, path: str, progress: ProgressCallback | None = None) -> ImportReport:
    from .vcard import decode_vcard_bytes, parse_vcards

    report = ImportReport()
    with open(path, "rb") as handle:
        data = handle.read()
    if progress:
        progress(len(data))

    def contacts() -> Iterator[tuple[Contact, list[StoredPhone]]]:
        for entry in parse_vcards(decode_vcard_bytes(data), store.region):
            phones = store.normalize_phones(entry.contact.phones) if entry.problem is None else []
            if not phones:
                reason = entry.problem or "no usable phone number"
                report.problems.append((entry.line, f"{reason} ({entry.contact.name or 'unnamed card'})"))
                continue
            yield entry.contact, phones

    report.imported = _store_batches(store, contacts())
    return report


@dataclass
class _Columns:
    named: dict[str, int]
    phones: list[int]
    custom: list[tuple[str, int]]


def _columns(header: list[str]) -> _Columns:
    named: dict[str, int] = {}
    phones: list[int] = []
    custom: list[tuple[str, int]] = []
    for index, title in enumerate(header):
        key = title.strip().lower().replace(" ", "_")
        if key in _ALIASES and _ALIASES[key] not in named:
            named[_ALIASES[key]] = index
        elif key.startswith(_PHONE_PREFIXES):
            phones.append(index)
        elif title.strip():
            custom.append((title.strip(), index))
    return _Columns(named, phones, custom)


def _csv_rows(reader: Iterable[list[str]], columns: _Columns) -> Iterator[tuple[int, Contact]]:
    """Each non-empty row as (line number, contact with its raw numbers and no id yet)."""
    named = columns.named
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue

        def cell(name: str, row: list[str] = row) -> str:
            index = named.get(name)
            return row[index].strip() if index is not None and index < len(row) else ""

        name = cell("name") or " ".join(p for p in (cell("first_name"), cell("last_name")) if p)
        yield reader.line_num, Contact(  # type: ignore[attr-defined]
            id=cell("id"),
            name=name or None,
            company=cell("company") or None,
            contact_uri=cell("contact_uri") or None,
            company_uri=cell("company_uri") or None,
            email=cell("email") or None,
            custom_data={title: row[i].strip() for title, i in columns.custom if i < len(row) and row[i].strip()},
            phones=[row[i].strip() for i in columns.phones if i < len(row) and row[i].strip()],
        )


Normalizer = Callable[[Iterator[list[tuple[int, Contact]]]], Iterator[tuple[list[tuple[int, Contact]], list]]]


def _with_phones(
    chunks: Iterator[list[tuple[int, Contact]]], normalize: Normalizer, report: ImportReport
) -> Iterator[tuple[Contact, list[StoredPhone]]]:
    """Attach normalized numbers to each row; report the rows without a usable one."""
    for rows, phone_lists in normalize(chunks):
        for (line, contact), phones in zip(rows, phone_lists, strict=True):
            if not phones:
                what = f"no usable phone number in {contact.phones!r}" if contact.phones else "no phone number"
                report.problems.append((line, f"{what} ({contact.name or 'unnamed'})"))
                continue
            if not contact.id:
                contact.id = derived_id(contact.name, contact.company, phones)
            yield contact, phones


@contextmanager
def _normalizer(region: str, file_bytes: int) -> Iterator[Normalizer]:
    """Number normalization (phonenumbers) is most of an import's time; big files spread it over
    worker processes while this one reads the CSV and writes SQLite."""
    workers = min(4, os.cpu_count() or 1)
    if file_bytes < PARALLEL_FROM_BYTES or workers < 2:
        yield lambda chunks: ((rows, _normalize_lists(region, [c.phones for _, c in rows])) for rows in chunks)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:

        def run(chunks: Iterator[list[tuple[int, Contact]]]):
            in_flight: deque = deque()
            for rows in chunks:
                in_flight.append((rows, pool.submit(_normalize_lists, region, [c.phones for _, c in rows])))
                if len(in_flight) > 2 * workers:  # bounded: memory stays flat however big the file
                    done_rows, future = in_flight.popleft()
                    yield done_rows, future.result()
            while in_flight:
                done_rows, future = in_flight.popleft()
                yield done_rows, future.result()

        yield run


def _normalize_lists(region: str, phone_lists: list[list[str]]) -> list[list[StoredPhone]]:
    return [normalize_phones(phones, region) for phones in phone_lists]


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
