"""A SQLite index of contacts keyed by normalized phone number.

The embedded directory is one of these (or, with ``DATABASE_URL``, its PostgreSQL twin
:class:`crm_backends.pg_store.PgContactStore`, behind the same :class:`DirectoryStore` interface);
every mirrored backend keeps its copy of the source in another. A lookup is one indexed query on
``phones.key`` whatever the number of contacts.
Writers (imports, syncs, call records) take SQLite's write lock; readers never wait for them (WAL).
"""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import re
import sqlite3
import struct
import threading
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import phonenumbers

from lookup_core.phone import PhoneNumber, extract_numbers
from lookup_core.types import CallRecord, Contact, MessageLog, StoredPhone

from .phone_index import BuildReport, InvalidIndex, PhoneIndex, SnapshotKeeper, build, index_path
from .sqlite_schema import LOOKUP, RANKING, SCHEMA, add_columns, read_generations, use_wal


@dataclass
class WriteReport:
    written: int = 0
    skipped: int = 0
    deleted: int = 0


def normalize_phones(raw_numbers: Iterable[str], region: str, problems: list[str] | None = None) -> list[StoredPhone]:
    """The distinct normalized keys of the numbers in ``raw_numbers``, read as stored text (labels,
    ``tel:`` URIs, several numbers in one value: :func:`lookup_core.phone.extract_numbers`).

    A value or part of one that holds no readable number is left out, and its reason (never the
    number) appended to ``problems`` when given."""
    seen: dict[tuple[str, str], StoredPhone] = {}
    for raw in raw_numbers:
        numbers, reasons = extract_numbers(raw, region)
        if problems is not None:
            problems.extend(reasons)
        for parsed in numbers:
            phone = StoredPhone(parsed.key, parsed.extension or "")
            seen.setdefault((phone.key, phone.extension), phone)
    return list(seen.values())


class DirectoryStore(Protocol):
    """What the directory, its importer, the CLI and the phone index need from a store: SQLite
    (:class:`ContactStore`) or PostgreSQL (:class:`crm_backends.pg_store.PgContactStore`)."""

    path: str  # the local file (SQLite) or the local place (PostgreSQL) of the phone index snapshot
    region: str

    def lookup(self, number: PhoneNumber, limit: int) -> list[Contact]: ...
    def generation(self) -> int: ...
    def stats(self) -> dict[str, int]: ...
    def snapshot_state(self) -> str: ...
    def build_index(self) -> BuildReport: ...
    def contact_ids(self) -> set[str]: ...
    def has_contact(self, contact_id: str) -> bool: ...
    def normalize_phones(self, raw_numbers: Iterable[str]) -> list[StoredPhone]: ...
    def upsert(self, contacts: Iterable[tuple[Contact, list[StoredPhone]]]) -> int: ...
    def delete(self, contact_ids: Iterable[str]) -> int: ...
    def record_call(self, call: CallRecord, call_id: str) -> str: ...
    def calls(self, contact_id: str | None = None) -> list[dict]: ...
    def record_message(self, message_log: MessageLog, record_id: str) -> str: ...
    def messages(self, contact_id: str | None = None) -> list[dict]: ...
    def close(self) -> None: ...


# one encoder for every row: json.dumps with an option builds a new encoder at each call
_to_json = json.JSONEncoder(ensure_ascii=False).encode


def contact_row(contact: Contact, now: float) -> tuple:
    """A contact as the stores write it: id, name, company, contact_uri, company_uri, email,
    custom_data (JSON), phones (JSON), last_activity (epoch seconds), updated_at, phone_types
    (JSON, only the types of numbers in ``phones``), job_title, image_url."""
    types = {raw: kind for raw, kind in contact.phone_types.items() if raw in contact.phones and kind}
    return (
        contact.id,
        contact.name,
        contact.company,
        contact.contact_uri,
        contact.company_uri,
        contact.email,
        _to_json(contact.custom_data) if contact.custom_data else None,
        _to_json(contact.phones),
        contact.last_activity.timestamp() if contact.last_activity else None,
        now,
        _to_json(types) if types else None,
        contact.job_title,
        contact.image_url,
    )


# Call and message records: the columns both stores write, and those a later post updates.
CALL_COLUMNS = ("key", "id", "contact_id", "direction", "status", "originator_number", "originator_name",
                "destination_number", "destination_name", "started", "answered", "ended", "duration", "user_id",
                "note", "created_at")
CALL_UPDATED = ("status", "answered", "ended", "duration", "note")
MESSAGE_COLUMNS = ("id", "key", "contact_id", "type", "conversation_id", "day", "title", "body", "message_count",
                   "link", "user_id", "created_at", "updated_at")
MESSAGE_UPDATED = ("title", "body", "message_count", "link", "updated_at")


def upsert_sql(table: str, columns: tuple[str, ...], updated: tuple[str, ...], mark: str) -> str:
    """INSERT of ``columns`` that, for an existing ``key``, updates ``updated`` (SQLite and PostgreSQL)."""
    changes = ", ".join(f"{c} = excluded.{c}" for c in updated)
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))}) "
            f"ON CONFLICT (key) DO UPDATE SET {changes}")


def call_row(call: CallRecord, call_id: str, now: float) -> tuple:
    return (call.key, call_id, call.contact_id, call.direction, call.status, call.originator_number,
            call.originator_name, call.destination_number, call.destination_name, _iso(call.started),
            _iso(call.answered), _iso(call.ended or call.declined), call.duration_seconds, call.user_id, call.note, now)


def message_row(message_log: MessageLog, record_id: str, now: float) -> tuple:
    return (record_id, message_log.key, message_log.contact_id, message_log.kind, message_log.conversation_id,
            message_log.day, message_log.title, message_log.body(), len(message_log.messages), message_log.link,
            message_log.user_id, now, now)


class ContactStore:
    """Contacts and call records in one SQLite file; safe to share between threads."""

    def __init__(self, path: str, region: str = "CH", phone_index: bool = False):
        """``phone_index``: answer lookups from the memory-mapped snapshot while it is current
        (see :mod:`crm_backends.phone_index`); for stores that serve lookups."""
        self.path = path
        self.region = region
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self._local = threading.local()
        conn = self._connect()
        try:
            conn.executescript(SCHEMA)
            add_columns(conn)  # a store written by an earlier version
            # a new store's search index is kept by every write from the start
            conn.execute("INSERT OR IGNORE INTO meta (name, value) SELECT 'search_index', '1' "
                         "WHERE NOT EXISTS (SELECT 1 FROM contacts)")
            stored = read_generations(conn)
        finally:
            conn.close()
        self.board = GenerationBoard(path + ".generation", *stored)
        if self.board.read() > stored[0]:
            # The database was replaced by one that has seen fewer writes (a restore, a fresh
            # import under the same path). The board never goes backwards, so the database moves
            # past it: caches and the phone index then see its contents as the change they are.
            with self.write() as conn:
                conn.execute("UPDATE meta SET value = ? WHERE name = 'generation'", (str(self.board.read()),))
        self.snapshot = SnapshotKeeper(path, self.board.read_both) if phone_index else None
        self._search_ready = False
        self._calling_code = str(phonenumbers.country_code_for_region(region) or "")

    # connections -------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        use_wal(conn)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        # No memory map (mmap_size): each thread's connection would map the whole file, and a
        # PaaS that meters RSS counts every mapped page once per thread (1.5 GB for one worker on
        # a 190 MB directory), while the server measured no faster with it.
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (sqlite3 connections must not be shared across threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def close(self) -> None:
        if self.snapshot is not None:
            self.snapshot.close()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # reading -----------------------------------------------------------------------------
    def lookup(self, number: PhoneNumber, limit: int) -> list[Contact]:
        if self.snapshot is not None:
            rows = self.snapshot.find(number.key, limit)
            if rows is not None:
                return [_contact(row, row[5] or {}) for row in rows]
        rows = self.conn.execute(LOOKUP, (number.key, limit)).fetchall()
        return [_contact(row, json.loads(row[5]) if row[5] else {}) for row in rows]

    def generation(self) -> int:
        """Grows with every committed write from any process: the cache's invalidation signal.
        Read from the generation board, so it costs no query (see :class:`GenerationBoard`)."""
        return self.board.read()

    def get_meta(self, name: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return row[0] if row else None

    def set_meta(self, name: str, value: str | None) -> None:
        self.conn.execute(
            "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value=excluded.value",
            (name, value),
        )

    def stats(self) -> dict[str, int]:
        conn = self.conn
        return {
            "contacts": conn.execute("SELECT COUNT(*) FROM contacts").fetchone()[0],
            "phone_numbers": conn.execute("SELECT COUNT(*) FROM phones").fetchone()[0],
            "calls": conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0],
        }

    def snapshot_state(self) -> str:
        """The phone index snapshot against the store: current, stale or missing."""
        try:
            index = PhoneIndex(index_path(self.path))
        except InvalidIndex:
            return "none (lookups use the database; the service builds it after the next lookup)"
        generation, contacts_generation = self.board.read_both()
        current = index.contacts_generation == contacts_generation
        return f"{'current' if current else 'stale'} (generation {index.generation}, store at {generation})"

    def build_index(self) -> BuildReport:
        return build(self.path)

    def contact_ids(self) -> set[str]:
        return {row[0] for row in self.conn.execute("SELECT id FROM contacts")}

    def has_contact(self, contact_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM contacts WHERE id=?", (contact_id,)).fetchone() is not None

    # writing -----------------------------------------------------------------------------
    def normalize_phones(self, raw_numbers: Iterable[str], problems: list[str] | None = None) -> list[StoredPhone]:
        return normalize_phones(raw_numbers, self.region, problems)

    def upsert(self, contacts: Iterable[tuple[Contact, list[StoredPhone]]]) -> int:
        """Insert or replace contacts (matched by id) with their normalized phones, in one
        transaction. Returns how many were written."""
        now = time.time()
        contact_rows = []
        phone_rows = []
        ids = []
        for contact, phones in contacts:
            ids.append((contact.id,))
            contact_rows.append(contact_row(contact, now))
            phone_rows.extend((phone.key, contact.id, phone.extension) for phone in phones)
        if not contact_rows:
            return 0
        with self.write() as conn:
            conn.executemany(
                "DELETE FROM phones WHERE contact_rowid = (SELECT rowid FROM contacts WHERE id = ?)", ids
            )
            conn.executemany(
                """INSERT INTO contacts (id, name, company, contact_uri, company_uri, email,
                       custom_data, phones, last_activity, updated_at, phone_types, job_title, image_url)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(id) DO UPDATE SET name=excluded.name, company=excluded.company,
                       contact_uri=excluded.contact_uri, company_uri=excluded.company_uri,
                       email=excluded.email, custom_data=excluded.custom_data,
                       phones=excluded.phones, phone_types=excluded.phone_types,
                       job_title=excluded.job_title, image_url=excluded.image_url,
                       last_activity=COALESCE(excluded.last_activity, contacts.last_activity),
                       updated_at=excluded.updated_at""",
                contact_rows,
            )
            conn.executemany(
                """INSERT OR IGNORE INTO phones (key, contact_rowid, extension)
                   SELECT ?, rowid, ? FROM contacts WHERE id = ?""",
                [(key, ext, cid) for key, cid, ext in phone_rows],
            )
            self._index_words(conn, contact_rows, phone_rows)
            conn.executemany("DELETE FROM tombstones WHERE id = ?", ids)  # back again: no longer deleted
        return len(contact_rows)

    def delete(self, contact_ids: Iterable[str]) -> int:
        ids = [(cid,) for cid in contact_ids]
        if not ids:
            return 0
        now = time.time()
        with self.write() as conn:
            conn.executemany(
                "DELETE FROM phones WHERE contact_rowid = (SELECT rowid FROM contacts WHERE id = ?)", ids
            )
            conn.executemany("DELETE FROM contacts_fts WHERE rowid = (SELECT rowid FROM contacts WHERE id = ?)", ids)
            conn.executemany(
                """INSERT INTO tombstones (id, position, deleted_at) SELECT id, rowid, ? FROM contacts WHERE id = ?
                   ON CONFLICT(id) DO UPDATE SET position = excluded.position, deleted_at = excluded.deleted_at""",
                [(now, cid) for (cid,) in ids],
            )
            before = conn.total_changes
            conn.executemany("DELETE FROM contacts WHERE id = ?", ids)
            deleted = conn.total_changes - before
            self._prune_tombstones(conn, now)
            return deleted

    def write(self, contacts_changed: bool = True) -> _WriteTransaction:
        """A write transaction that bumps the generation, so caches see the change at once.
        ``contacts_changed`` False: only calls are written (the phone index stays current)."""
        return _WriteTransaction(self.conn, self.board, contacts_changed)

    # the contacts API (GET /contacts, /contacts/search, POST /contacts/match, /contacts/view) ---
    def _index_words(self, conn: sqlite3.Connection, contact_rows: list[tuple], phone_rows: list[tuple]) -> None:
        """Keep the search index (``contacts_fts``, rowid = the contact's rowid) in step with an upsert."""
        numbers: dict[str, list[str]] = {}
        for key, cid, _ext in phone_rows:
            numbers.setdefault(cid, []).extend(number_words(key, self._calling_code))
        last = {row[0]: row for row in contact_rows}  # a contact twice in a batch: its last row, as the upsert
        conn.executemany(
            "DELETE FROM contacts_fts WHERE rowid = (SELECT rowid FROM contacts WHERE id = ?)", [(cid,) for cid in last]
        )
        conn.executemany(
            "INSERT INTO contacts_fts (rowid, name, company, numbers) SELECT rowid, ?, ?, ? FROM contacts WHERE id = ?",
            [(row[1] or "", row[2] or "", " ".join(dict.fromkeys(numbers.get(cid, ()))), cid)
             for cid, row in last.items()],
        )

    def _ensure_search_index(self) -> None:
        """A store written before the search index existed gets it filled once."""
        if self._search_ready or self.get_meta("search_index") == "1":
            self._search_ready = True
            return
        with self.write(contacts_changed=False) as conn:
            if conn.execute("SELECT value FROM meta WHERE name = 'search_index'").fetchone():
                return
            conn.execute("DELETE FROM contacts_fts")
            last = 0
            while True:  # bounded: every round moves past BATCH rowids
                rows = conn.execute("SELECT rowid, id, name, company FROM contacts WHERE rowid > ? ORDER BY rowid "
                                    "LIMIT 5000", (last,)).fetchall()
                if not rows:
                    break
                last = rows[-1][0]
                keys = conn.execute(f"SELECT contact_rowid, key FROM phones WHERE contact_rowid IN "
                                    f"({','.join('?' * len(rows))})", [r[0] for r in rows]).fetchall()
                words: dict[int, list[str]] = {}
                for rowid, key in keys:
                    words.setdefault(rowid, []).extend(number_words(key, self._calling_code))
                conn.executemany("INSERT INTO contacts_fts (rowid, name, company, numbers) VALUES (?, ?, ?, ?)",
                                 [(r[0], r[2] or "", r[3] or "", " ".join(words.get(r[0], ()))) for r in rows])
            conn.execute("INSERT INTO meta (name, value) VALUES ('search_index', '1')")
        self._search_ready = True

    def _prune_tombstones(self, conn: sqlite3.Connection, now: float) -> None:
        cutoff = now - TOMBSTONE_KEEP_S
        if conn.execute("DELETE FROM tombstones WHERE deleted_at < ?", (cutoff,)).rowcount:
            conn.execute("UPDATE meta SET value = MAX(CAST(value AS REAL), ?) WHERE name = 'tombstones_since'",
                         (cutoff,))

    def complete_since(self) -> float:
        """Epoch seconds since when every deletion is known (older ``syncTimestamp``: a full listing)."""
        return float(self.get_meta("tombstones_since") or time.time())

    def listing(self, offset: int, limit: int, held_after: float) -> tuple[list[Contact | None], int]:
        """One page of every contact in a stable order (rowid), and the number of positions.

        A contact deleted after ``held_after`` keeps its position (as None) so that a deletion
        while a client pages through does not shift the later pages; read in one transaction."""
        conn = self.conn
        conn.execute("BEGIN")
        try:
            total = conn.execute("SELECT (SELECT COUNT(*) FROM contacts) + (SELECT COUNT(*) FROM tombstones "
                                 "WHERE deleted_at > ?)", (held_after,)).fetchone()[0]
            rows = conn.execute(
                f"""SELECT p.pos, {_FULL} FROM (
                        SELECT rowid AS pos, rowid AS cr, 0 AS gone FROM contacts
                        UNION ALL SELECT position, NULL, 1 FROM tombstones WHERE deleted_at > ?
                        ORDER BY pos, gone LIMIT ? OFFSET ?) p
                    LEFT JOIN contacts c ON c.rowid = p.cr ORDER BY p.pos, p.gone""",
                (held_after, limit, offset),
            ).fetchall()
        finally:
            conn.execute("COMMIT")
        return [_full_contact(row[1:]) if row[1] is not None else None for row in rows], total

    def changes(self, since: float, offset: int, limit: int) -> tuple[list[Contact | str], int]:
        """One page of what changed after ``since`` (epoch seconds), oldest change first: contacts
        written after it, and the ids (str) of contacts deleted after it; and how many in all."""
        conn = self.conn
        conn.execute("BEGIN")
        try:
            total = conn.execute("SELECT (SELECT COUNT(*) FROM contacts WHERE updated_at > ?) + "
                                 "(SELECT COUNT(*) FROM tombstones WHERE deleted_at > ?)", (since, since)).fetchone()[0]
            rows = conn.execute(
                f"""SELECT p.gone, {_FULL} FROM (
                        SELECT updated_at AS t, rowid AS r, NULL AS gone FROM contacts WHERE updated_at > ?
                        UNION ALL SELECT deleted_at, position, id FROM tombstones WHERE deleted_at > ?
                        ORDER BY t, r LIMIT ? OFFSET ?) p
                    LEFT JOIN contacts c ON c.rowid = p.r AND p.gone IS NULL ORDER BY p.t, p.r""",
                (since, since, limit, offset),
            ).fetchall()
        finally:
            conn.execute("COMMIT")
        return [row[0] if row[0] is not None else _full_contact(row[1:]) for row in rows], total

    def search(self, words: list[str], digits: str, limit: int) -> list[Contact]:
        """Contacts whose name or company has a word starting with each of ``words`` (accents and
        case ignored), or with a number starting with ``digits``; best first (name before company)."""
        self._ensure_search_index()
        query = fts_query(words, digits)
        if not query:
            return []
        if digits or max(len(word) for word in words) >= 3:
            ranked = ("bm25(contacts_fts, 4.0, 1.0, 1.0) AS score FROM contacts_fts WHERE contacts_fts MATCH ? "
                      "ORDER BY score")
        else:
            # one or two letters may match a third of the directory: ranking them all costs seconds
            # on a million contacts, so the first matches in the directory's order are answered
            ranked = "rowid AS score FROM contacts_fts WHERE contacts_fts MATCH ?"
        rows = self.conn.execute(
            f"""SELECT {_FULL} FROM (SELECT rowid AS r, {ranked} LIMIT ?) f
                JOIN contacts c ON c.rowid = f.r ORDER BY f.score, c.name""",
            (query, limit),
        ).fetchall()
        return [_full_contact(row) for row in rows]

    def lookup_many(self, numbers: list[PhoneNumber], limit: int) -> dict[str, list[Contact]]:
        """The contacts of each number (by key), in one query; numbers nobody has are absent."""
        keys = list(dict.fromkeys(number.key for number in numbers))
        found: dict[str, list[Contact]] = {}
        if not keys:
            return found
        rows = self.conn.execute(
            f"""SELECT p.key, {_FULL}, MIN(p.extension != '') AS loose
                FROM phones p JOIN contacts c ON c.rowid = p.contact_rowid
                WHERE p.key IN ({','.join('?' * len(keys))})
                GROUP BY p.key, c.rowid ORDER BY p.key, {RANKING}""",
            keys,
        ).fetchall()
        for row in rows:
            bucket = found.setdefault(row[0], [])
            if len(bucket) < limit:
                bucket.append(_full_contact(row[1:-1]))
        return found

    def get(self, contact_id: str) -> Contact | None:
        row = self.conn.execute(f"SELECT {_FULL} FROM contacts c WHERE c.id = ?", (contact_id,)).fetchone()
        return _full_contact(row) if row else None

    # call records ------------------------------------------------------------------------
    def record_call(self, call: CallRecord, call_id: str) -> str:
        """Store ``call`` once: a second call with the same key updates the first record (its end,
        duration, status, note) and returns its id."""
        with self.write(contacts_changed=False) as conn:
            conn.execute(upsert_sql("calls", CALL_COLUMNS, CALL_UPDATED, "?"), call_row(call, call_id, time.time()))
            moment = call.ended or call.declined or call.started
            if moment is not None:
                self._touch(conn, call.contact_id, moment)
            row = conn.execute("SELECT id FROM calls WHERE key = ?", (call.key,)).fetchone()
        return row[0]

    def record_message(self, message_log: MessageLog, record_id: str) -> str:
        """Store the record of ``message_log``: the first version of a digest makes it, a later one
        (more messages) replaces its text. Returns the record's id."""
        with self.write(contacts_changed=False) as conn:
            conn.execute(upsert_sql("messages", MESSAGE_COLUMNS, MESSAGE_UPDATED, "?"),
                         message_row(message_log, record_id, time.time()))
            self._touch(conn, message_log.contact_id, message_log.messages[-1].time)
            row = conn.execute("SELECT id FROM messages WHERE key = ?", (message_log.key,)).fetchone()
        return row[0]

    @staticmethod
    def _touch(conn: sqlite3.Connection, contact_id: str, moment: datetime) -> None:
        conn.execute("UPDATE contacts SET last_activity = MAX(COALESCE(last_activity, 0), ?) WHERE id = ?",
                     (moment.timestamp(), contact_id))

    def messages(self, contact_id: str | None = None) -> list[dict]:
        return self._rows("messages", contact_id)

    def calls(self, contact_id: str | None = None) -> list[dict]:
        return self._rows("calls", contact_id)

    def _rows(self, table: str, contact_id: str | None) -> list[dict]:
        query = f"SELECT * FROM {table}" + (" WHERE contact_id = ?" if contact_id else "") + " ORDER BY created_at"
        cursor = self.conn.execute(query, (contact_id,) if contact_id else ())
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]



TOMBSTONE_KEEP_S = 30 * 86400.0  # deletions older than this are forgotten: older syncs get a full listing
_FULL = ("c.id, c.name, c.company, c.contact_uri, c.company_uri, c.email, c.custom_data, c.phones, c.updated_at, "
         "c.phone_types, c.job_title, c.image_url")


def _full_contact(row: tuple | list) -> Contact:
    """A contact from the ``_FULL`` columns, with its numbers as stored (``phones``) and their types;
    ``last_activity`` carries the time it was last written (the contacts API has no other use for it).
    A contact written before types were kept has none (its numbers answer "unknown")."""
    return Contact(
        id=row[0], name=row[1], company=row[2], contact_uri=row[3], company_uri=row[4], email=row[5],
        custom_data=json.loads(row[6]) if row[6] else {}, phones=json.loads(row[7]) if row[7] else [],
        last_activity=datetime.fromtimestamp(row[8], UTC) if row[8] else None,
        phone_types=json.loads(row[9]) if row[9] else {}, job_title=row[10], image_url=row[11],
    )


def number_words(key: str, calling_code: str) -> list[str]:
    """The words a number is found by in a search: its international digits, and its national
    digits with a leading 0 when it is in the store's country (``calling_code``, e.g. "41")."""
    if not key.startswith("+"):
        return [key.partition(":")[2]] if ":" in key else []
    digits = key[1:]
    if calling_code and digits.startswith(calling_code):
        return [digits, "0" + digits[len(calling_code):]]
    return [digits]


def fold_words(text: str) -> list[str]:
    """The words of ``text`` in lowercase without accents ("Jürg Müller" -> ["jurg", "muller"])."""
    folded = "".join(ch for ch in unicodedata.normalize("NFKD", text.casefold()) if not unicodedata.combining(ch))
    return [word for word in _WORD.findall(folded) if word]


_WORD = re.compile(r"[^\W_]+")


def fts_query(words: list[str], digits: str) -> str:
    """An FTS5 query: every word a prefix of a name or company word, or the digits a number's prefix."""
    terms = []
    for word in words:
        cleaned = "".join(ch for ch in word if ch.isalnum())
        if cleaned:
            terms.append('"' + cleaned + '"*')
    parts = []
    if terms:
        parts.append("{name company}: (" + " AND ".join(terms) + ")")
    if digits:
        parts.append('numbers: "' + digits + '"*')
    return " OR ".join(f"({part})" for part in parts)


def _contact(row: tuple | list, custom_data: dict) -> Contact:
    """A contact from a lookup row, of the query or of the phone index (same columns)."""
    return Contact(
        id=row[0],
        name=row[1],
        company=row[2],
        contact_uri=row[3],
        company_uri=row[4],
        custom_data=custom_data,
        last_activity=datetime.fromtimestamp(row[6], UTC) if row[6] else None,
        email=row[7],
        exact=not row[8],
    )


class _WriteTransaction:
    def __init__(self, conn: sqlite3.Connection, board: GenerationBoard, contacts_changed: bool):
        self.conn = conn
        self.board = board
        self.contacts_changed = contacts_changed

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.conn.execute("ROLLBACK")
            return
        self.conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE name = 'generation'")
        if self.contacts_changed:
            self.conn.execute("UPDATE meta SET value = (SELECT value FROM meta WHERE name = 'generation') "
                              "WHERE name = 'contacts_generation'")
        generations = read_generations(self.conn)
        self.conn.execute("COMMIT")
        self.board.publish(*generations)


class GenerationBoard:
    """The store's two generations in a small memory-mapped file beside the database.

    Every lookup compares them (the cache key holds the generation; the phone index checks
    both), so they must cost no query and no system call: reading 16 mapped bytes does neither.
    Writers publish after their commit, under a file lock and never backwards, so a reader seeing
    a generation also sees that generation's data. A torn or stale read can only cost a cache
    miss or delay a change to the next lookup.
    """

    _FORMAT = struct.Struct("<QQ")  # generation, contacts generation

    def __init__(self, path: str, generation: int, contacts_generation: int):
        self.path = path
        with open(path, "a+b") as handle:
            if os.fstat(handle.fileno()).st_size < self._FORMAT.size:
                handle.truncate(self._FORMAT.size)
            self._map = mmap.mmap(handle.fileno(), self._FORMAT.size, access=mmap.ACCESS_READ)
        self.publish(generation, contacts_generation)

    def read(self) -> int:
        return self._FORMAT.unpack_from(self._map, 0)[0]

    def read_both(self) -> tuple[int, int]:
        return self._FORMAT.unpack_from(self._map, 0)

    def publish(self, generation: int, contacts_generation: int) -> None:
        with open(self.path, "r+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                if self.read() < generation:
                    handle.write(self._FORMAT.pack(generation, contacts_generation))
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def close(self) -> None:
        self._map.close()


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
