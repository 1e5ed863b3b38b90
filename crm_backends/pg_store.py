"""The embedded directory in PostgreSQL, for a PaaS whose dynos have ephemeral, unshared disks.

Same interface and same answers as :class:`crm_backends.contact_store.ContactStore` (SQLite): the
contacts, their phone keys and the call records live in one schema per directory backend, so every
process on every machine sees the same directory and a restart loses nothing.

Each process keeps its own memory-mapped phone index snapshot in its instance folder and answers
from it while it is current. Whether it is current is decided by the directory's two generation
counters (a one-row table that every write bumps in its transaction). Each process reads them once
a second (:data:`POLL_EVERY_S`) in a thread started on first use (after any fork): a one-row read a
second per process, on a pooled connection, and a lookup never waits for it, even while the
database is unreachable. LISTEN/NOTIFY would save that read but holds a dedicated connection per
process (small PaaS plans allow 20), does not pass through a transaction-mode pooler (pgbouncer, as
PaaS offer it), and a notification lost while reconnecting leaves a process stale without knowing
it; a poll cannot miss a change, and a second is well inside what a directory import needs.

Lookups the snapshot cannot answer go to PostgreSQL under a statement timeout inside the lookup
deadline; writers take longer ones. Schema changes are numbered steps recorded in a
``schema_version`` table and applied at start under an advisory lock, so processes starting
together do not race.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime

import phonenumbers
import psycopg
from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError

from lookup_core.errors import BackendUnavailable
from lookup_core.phone import PhoneNumber
from lookup_core.types import CallRecord, Contact, MessageLog, StoredPhone

from .contact_store import (
    _FULL,
    CALL_COLUMNS,
    CALL_UPDATED,
    MESSAGE_COLUMNS,
    MESSAGE_UPDATED,
    TOMBSTONE_KEEP_S,
    _contact,
    _full_contact,
    call_row,
    contact_row,
    fold_words,
    message_row,
    normalize_phones,
    number_words,
    upsert_sql,
)
from .phone_index import PG_URL_VARIABLE, BuildReport, InvalidIndex, PhoneIndex, SnapshotKeeper, build, index_path

log = logging.getLogger(__name__)

POLL_EVERY_S = 1.0  # a process reads the shared generations at most this often
WRITE_TIMEOUT_MS = 600_000  # a batch of an import, a call record: generous, but not for ever
_CONNECT_TIMEOUT_S = 3
# Which process this is, without a system call on the lookup path: bumped in every forked child,
# whose copies of the stores must start their own poller and must not use the parent's connections.
_PROCESS = [0]
os.register_at_fork(after_in_child=lambda: _PROCESS.__setitem__(0, _PROCESS[0] + 1))

# Numbered steps; a step is never edited once released, a change is a new step.
MIGRATIONS: list[tuple[int, str]] = [
    (1, """
CREATE TABLE {s}.contacts (
    pk BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    name TEXT,
    company TEXT,
    contact_uri TEXT,
    company_uri TEXT,
    email TEXT,
    custom_data TEXT,
    phones TEXT,
    last_activity DOUBLE PRECISION,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE {s}.phones (
    key TEXT COLLATE "C" NOT NULL,
    contact_pk BIGINT NOT NULL,
    extension TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (key, contact_pk, extension)
);
CREATE INDEX phones_by_contact ON {s}.phones (contact_pk);
CREATE TABLE {s}.calls (
    key TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    contact_id TEXT NOT NULL,
    direction TEXT NOT NULL,
    status TEXT NOT NULL,
    originator_number TEXT,
    originator_name TEXT,
    destination_number TEXT,
    destination_name TEXT,
    started TEXT,
    answered TEXT,
    ended TEXT,
    duration INTEGER NOT NULL,
    user_id TEXT,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE {s}.meta (name TEXT PRIMARY KEY, value TEXT);
CREATE TABLE {s}.state (
    one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    generation BIGINT NOT NULL DEFAULT 0,
    contacts_generation BIGINT NOT NULL DEFAULT 0,
    identity TEXT NOT NULL DEFAULT md5(random()::text || clock_timestamp()::text)
);
INSERT INTO {s}.state DEFAULT VALUES;
"""),
    # the contacts API: deletions for incremental listings, and the words a search matches
    (2, """
CREATE TABLE {s}.tombstones (
    id TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    deleted_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX tombstones_by_time ON {s}.tombstones (deleted_at);
CREATE INDEX contacts_by_update ON {s}.contacts (updated_at, pk);
ALTER TABLE {s}.contacts ADD COLUMN words TEXT;
-- what _fill_words looks for at every start: an empty index once every contact has its words
CREATE INDEX contacts_without_words ON {s}.contacts (pk) WHERE words IS NULL;
INSERT INTO {s}.meta (name, value) VALUES ('tombstones_since', extract(epoch FROM now())::text);
"""),
    # call notes and later updates of a call; message records (MessageLog)
    (3, """
ALTER TABLE {s}.calls ADD COLUMN note TEXT;
CREATE TABLE {s}.messages (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    contact_id TEXT NOT NULL,
    type TEXT NOT NULL,
    conversation_id TEXT,
    day TEXT,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    message_count INTEGER NOT NULL,
    link TEXT,
    user_id TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX messages_by_contact ON {s}.messages (contact_id);
"""),
    # the contacts API: each number's type (JSON, raw value -> type), the job title and the picture
    (4, """
ALTER TABLE {s}.contacts ADD COLUMN phone_types TEXT;
ALTER TABLE {s}.contacts ADD COLUMN job_title TEXT;
ALTER TABLE {s}.contacts ADD COLUMN image_url TEXT;
"""),
]

# The ranking of contact_store.py, in PostgreSQL: NULL names first and names in byte order, as SQLite
# sorts them, whatever the database's collation; ties in insertion order (pk as SQLite's rowid).
_COLUMNS = """c.id, c.name, c.company, c.contact_uri, c.company_uri, c.custom_data, c.last_activity,
       c.email, bool_and(p.extension <> '') AS loose
FROM {s}.phones p JOIN {s}.contacts c ON c.pk = p.contact_pk"""
_RANKING = 'loose, c.last_activity DESC NULLS LAST, c.name COLLATE "C" NULLS FIRST, c.pk'
_LOOKUP = f"SELECT {_COLUMNS} WHERE p.key = %s GROUP BY c.pk ORDER BY {_RANKING} LIMIT %s"
_RANKED_BY_KEY = f"SELECT p.key, {_COLUMNS} GROUP BY p.key, c.pk ORDER BY p.key, {_RANKING}"
_CONTACT_FIELDS = ("id", "name", "company", "contact_uri", "company_uri", "email", "custom_data", "phones",
                   "last_activity", "updated_at", "phone_types", "job_title", "image_url")


def sqlalchemy_url(url: str) -> str:
    """``postgres://`` or ``postgresql://`` (as PaaS add-ons give it) for SQLAlchemy with psycopg 3."""
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql+psycopg://", url.strip())


def libpq_url(url: str) -> str:
    """The same URL for psycopg itself."""
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url.strip())


def schema_name(tenant: str, backend: str) -> str:
    """The PostgreSQL schema of a directory backend: one per tenant and backend. A name that had to
    be changed to fit (case, '-', '.', length) gets a checksum, so two tenants never share a schema."""
    wanted = f"directory_{tenant}_{backend}"
    name = re.sub(r"[^a-z0-9_]", "_", wanted.lower())
    if name != wanted or len(name) > 63:
        name = f"{name[:54]}_{zlib.crc32(wanted.encode()):08x}"
    return name


def _quoted(schema: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", schema):
        raise ValueError(f"{schema!r} is not a valid schema name (letters, digits and '_')")
    return f'"{schema}"'


def migrate(conn: psycopg.Connection, schema: str) -> int:
    """Apply the missing steps of :data:`MIGRATIONS` in one transaction, under an advisory lock
    (two processes starting at once: the second waits, then finds nothing to do). Returns the version."""
    s = _quoted(schema)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (zlib.crc32(f"lookup-schema:{schema}".encode()),))
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
        conn.execute(f"""CREATE TABLE IF NOT EXISTS {s}.schema_version (
            version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())""")
        current = conn.execute(f"SELECT COALESCE(MAX(version), 0) FROM {s}.schema_version").fetchone()[0]
        for version, script in MIGRATIONS:
            if version > current:
                conn.execute(script.format(s=s))
                conn.execute(f"INSERT INTO {s}.schema_version (version) VALUES (%s)", (version,))
                current = version
                log.info("directory schema %s: migrated to version %d", schema, version)
    return current


@contextmanager
def ranked_rows(url: str, schema: str) -> Iterator[tuple[int, int, Iterable[tuple]]]:
    """Every key's ranked contacts and the generations they belong to, from one snapshot of the
    database: what :func:`crm_backends.phone_index.build` writes to the local index."""
    s = _quoted(schema)
    with psycopg.connect(libpq_url(url), connect_timeout=_CONNECT_TIMEOUT_S) as conn:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            generation, contacts_generation = conn.execute(
                f"SELECT generation, contacts_generation FROM {s}.state").fetchone()
            with conn.cursor(name="ranked_by_key") as cursor:  # server side: flat memory
                cursor.itersize = 5000
                cursor.execute(_RANKED_BY_KEY.format(s=s))
                yield generation, contacts_generation, cursor


class PgContactStore:
    """Contacts and call records in a PostgreSQL schema; safe to share between threads.

    ``path`` is a local path standing for the store in the instance folder: the phone index
    snapshot is written beside it (it holds the database's identity, so a snapshot of another
    database is never taken for current).
    """

    def __init__(self, url: str, schema: str, region: str = "CH", phone_index: bool = False,
                 instance_dir: str = "instance", lookup_timeout_s: float = 1.0):
        self.url = url
        self.schema = schema
        self.region = region
        self._s = _quoted(schema)
        timeout_ms = max(50, int(lookup_timeout_s * 1000))
        self._pool_process = _PROCESS[0]
        self.engine = create_engine(
            sqlalchemy_url(url),
            pool_size=2, max_overflow=6, pool_timeout=lookup_timeout_s, pool_pre_ping=True, pool_recycle=1800,
            connect_args={"connect_timeout": _CONNECT_TIMEOUT_S, "options": f"-c statement_timeout={timeout_ms}",
                          "application_name": "lookup-service"},
        )
        self._calling_code = str(phonenumbers.country_code_for_region(region) or "")
        try:
            with self._connection() as conn:
                migrate(conn, schema)
                identity = conn.execute(f"SELECT identity FROM {self._s}.state").fetchone()[0]
                self.trigram_search = _trigram_index(conn, self._s)
        except BackendUnavailable:
            self.engine.dispose()
            raise
        os.makedirs(instance_dir, exist_ok=True)
        self.path = os.path.join(os.path.abspath(instance_dir), f"{schema}-{identity[:12]}.pg")
        self._known = (-1, -1)
        self._poll_lock = threading.Lock()
        self._poll_failed = False
        self._poller_process: int | None = None
        self._stopped = threading.Event()
        self._poll()
        self.snapshot = SnapshotKeeper(self.path, self._generations, self._start_builder) if phone_index else None
        self._fill_words()

    def _fill_words(self) -> None:
        """Contacts written before the ``words`` column existed get theirs (once, in batches)."""
        s = self._s
        for _ in range(100_000):  # bounded: every round fills up to 5000 contacts or ends
            with self._connection() as conn:
                rows = conn.execute(f"SELECT pk, name, company FROM {s}.contacts WHERE words IS NULL LIMIT 5000"
                                    ).fetchall()
                if not rows:
                    return
                keys = conn.execute(f"SELECT contact_pk, key FROM {s}.phones WHERE contact_pk = ANY(%s)",
                                    ([r[0] for r in rows],)).fetchall()
                numbers: dict[int, list[str]] = {}
                for pk, key in keys:
                    numbers.setdefault(pk, []).extend(number_words(key, self._calling_code))
                conn.execute(f"""UPDATE {s}.contacts c SET words = w.words
                    FROM unnest(%s::bigint[], %s::text[]) AS w(pk, words) WHERE c.pk = w.pk""",
                             ([r[0] for r in rows], [search_words(r[1], r[2], numbers.get(r[0], ())) for r in rows]))

    # connections -------------------------------------------------------------------------
    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        if self._pool_process != _PROCESS[0]:  # forked: the parent's connections are the parent's
            self.engine.dispose(close=False)
            self._pool_process = _PROCESS[0]
        try:
            pooled = self.engine.raw_connection()
        except (psycopg.Error, SQLAlchemyError) as exc:  # none free within the pool timeout, or none possible
            raise BackendUnavailable(f"directory database: {_reason(exc)}") from None
        try:
            conn = pooled.driver_connection
            if not conn.autocommit:  # reads are single statements; writes open their transaction
                conn.autocommit = True
            yield conn
        except psycopg.Error as exc:  # the engine, the workflows and the CLI report it as such
            raise BackendUnavailable(f"directory database: {_reason(exc)}") from None
        finally:
            pooled.close()

    def close(self) -> None:
        self._stopped.set()
        if self.snapshot is not None:
            self.snapshot.close()
        self.engine.dispose()

    # generations -------------------------------------------------------------------------
    def _poll(self) -> None:
        try:
            with self._connection() as conn:
                row = conn.execute(f"SELECT generation, contacts_generation FROM {self._s}.state").fetchone()
        except BackendUnavailable as exc:
            if not self._poll_failed:
                log.warning("directory %s: cannot read its generation (%s); retrying every %.0fs",
                            self.schema, exc, POLL_EVERY_S)
            self._poll_failed = True
            return
        if self._poll_failed:
            log.info("directory %s: database reachable again", self.schema)
        self._poll_failed = False
        self._known = (row[0], row[1])

    def _generations(self) -> tuple[int, int]:
        if self._poller_process != _PROCESS[0]:
            self._start_poller()
        return self._known

    def _start_poller(self) -> None:
        with self._poll_lock:
            if self._poller_process == _PROCESS[0] or self._stopped.is_set():
                return
            self._poller_process = _PROCESS[0]
            threading.Thread(target=self._poll_loop, name=f"generations-{self.schema}", daemon=True).start()

    def _poll_loop(self) -> None:
        while not self._stopped.wait(POLL_EVERY_S):  # until close()
            self._poll()

    def refresh(self) -> None:
        """Read the shared generations now (the poller does it every second)."""
        self._poll()

    def generation(self) -> int:
        """Grows with every committed write from any process (seen within a second)."""
        return self._generations()[0]

    # reading -----------------------------------------------------------------------------
    def lookup(self, number: PhoneNumber, limit: int) -> list[Contact]:
        if self.snapshot is not None:
            rows = self.snapshot.find(number.key, limit)
            if rows is not None:
                return [_contact(row, row[5] or {}) for row in rows]
        with self._connection() as conn:  # bounded by the statement timeout, within the deadline
            rows = conn.execute(_LOOKUP.format(s=self._s), (number.key, limit)).fetchall()
        return [_contact(row, json.loads(row[5]) if row[5] else {}) for row in rows]

    def _one(self, query: str, params: tuple = ()) -> tuple | None:
        with self._connection() as conn:
            return conn.execute(query.format(s=self._s), params).fetchone()

    def get_meta(self, name: str) -> str | None:
        row = self._one("SELECT value FROM {s}.meta WHERE name = %s", (name,))
        return row[0] if row else None

    def set_meta(self, name: str, value: str | None) -> None:
        with self._connection() as conn:
            conn.execute(f"INSERT INTO {self._s}.meta (name, value) VALUES (%s, %s) "
                         "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value", (name, value))

    def stats(self) -> dict[str, int]:
        row = self._one("SELECT (SELECT COUNT(*) FROM {s}.contacts), (SELECT COUNT(*) FROM {s}.phones), "
                        "(SELECT COUNT(*) FROM {s}.calls)")
        return {"contacts": row[0], "phone_numbers": row[1], "calls": row[2]}

    def snapshot_state(self) -> str:
        """The local phone index snapshot against the shared directory: current, stale or missing."""
        try:
            index = PhoneIndex(index_path(self.path))
        except InvalidIndex:
            return "none (lookups use the database; the service builds it after the next lookup)"
        self._poll()
        generation, contacts_generation = self._known
        current = index.contacts_generation == contacts_generation
        return f"{'current' if current else 'stale'} (generation {index.generation}, store at {generation})"

    def build_index(self) -> BuildReport:
        return build(self.path, lambda: ranked_rows(self.url, self.schema))

    def _start_builder(self) -> subprocess.Popen | None:
        from . import phone_index

        return phone_index._start_builder(self.path, ["--postgres-schema", self.schema], {PG_URL_VARIABLE: self.url})

    def contact_ids(self) -> set[str]:
        with self._connection() as conn:
            return {row[0] for row in conn.execute(f"SELECT id FROM {self._s}.contacts")}

    def has_contact(self, contact_id: str) -> bool:
        return self._one("SELECT 1 FROM {s}.contacts WHERE id = %s", (contact_id,)) is not None

    # writing -----------------------------------------------------------------------------
    def normalize_phones(self, raw_numbers: Iterable[str]) -> list[StoredPhone]:
        return normalize_phones(raw_numbers, self.region)

    @contextmanager
    def write(self, contacts_changed: bool = True) -> Iterator[psycopg.Connection]:
        """A write transaction that bumps the generations first: the row lock serializes writers
        (as SQLite's write lock does), and readers see the new generation with the new data."""
        with self._connection() as conn:
            with conn.transaction():
                conn.execute(f"SET LOCAL statement_timeout = {WRITE_TIMEOUT_MS}")
                generations = conn.execute(
                    f"""UPDATE {self._s}.state SET generation = generation + 1,
                        contacts_generation = CASE WHEN %s THEN generation + 1 ELSE contacts_generation END
                        RETURNING generation, contacts_generation""", (contacts_changed,)).fetchone()
                yield conn
        if generations[0] > self._known[0]:
            self._known = (generations[0], generations[1])

    def upsert(self, contacts: Iterable[tuple[Contact, list[StoredPhone]]]) -> int:
        """Insert or replace contacts (matched by id) with their normalized phones, in one
        transaction, through COPY. Returns how many were written (rows, as the SQLite store)."""
        now = time.time()
        contact_rows: list[tuple] = []
        phone_rows: list[tuple] = []
        for order, (contact, phones) in enumerate(contacts):
            contact_rows.append((order, *contact_row(contact, now)))
            phone_rows.extend((phone.key, contact.id, phone.extension) for phone in phones)
        if not contact_rows:
            return 0
        s = self._s
        fields = ", ".join(_CONTACT_FIELDS)
        with self.write() as conn:
            conn.execute("""CREATE TEMP TABLE IF NOT EXISTS incoming_contacts (ord INTEGER, id TEXT, name TEXT,
                company TEXT, contact_uri TEXT, company_uri TEXT, email TEXT, custom_data TEXT, phones TEXT,
                last_activity DOUBLE PRECISION, updated_at DOUBLE PRECISION, phone_types TEXT, job_title TEXT,
                image_url TEXT) ON COMMIT DELETE ROWS""")
            conn.execute("""CREATE TEMP TABLE IF NOT EXISTS incoming_phones (key TEXT, contact_id TEXT,
                extension TEXT) ON COMMIT DELETE ROWS""")
            with conn.cursor() as cursor:
                with cursor.copy(f"COPY incoming_contacts (ord, {fields}) FROM STDIN") as copy:
                    for row in contact_rows:
                        copy.write_row(row)
                with cursor.copy("COPY incoming_phones (key, contact_id, extension) FROM STDIN") as copy:
                    for row in phone_rows:
                        copy.write_row(row)
            conn.execute("ANALYZE incoming_contacts")  # temporary tables have no statistics otherwise
            conn.execute("ANALYZE incoming_phones")
            # Only what changed is written: a re-import of the same file rewrites no row.
            conn.execute(f"""DELETE FROM {s}.phones p
                USING {s}.contacts c, (SELECT DISTINCT id FROM incoming_contacts) i
                WHERE p.contact_pk = c.pk AND c.id = i.id AND NOT EXISTS (SELECT 1 FROM incoming_phones n
                    WHERE n.contact_id = c.id AND n.key = p.key AND n.extension = p.extension)""")
            # A contact twice in a batch: the last row's fields, its last known activity and the
            # first row's place, as SQLite's row by row upsert gives; new contacts get pks in file order.
            latest = ", ".join(f"a.{f}" if f == "last_activity" else f"l.{f}" for f in _CONTACT_FIELDS)
            conn.execute(f"""INSERT INTO {s}.contacts ({fields})
                SELECT {latest} FROM (
                    SELECT DISTINCT ON (id) *, MIN(ord) OVER w AS first,
                        MAX(ord) FILTER (WHERE last_activity IS NOT NULL) OVER w AS active
                    FROM incoming_contacts WINDOW w AS (PARTITION BY id) ORDER BY id, ord DESC
                ) l LEFT JOIN incoming_contacts a ON a.ord = l.active ORDER BY l.first
                ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, company = EXCLUDED.company,
                    contact_uri = EXCLUDED.contact_uri, company_uri = EXCLUDED.company_uri,
                    email = EXCLUDED.email, custom_data = EXCLUDED.custom_data, phones = EXCLUDED.phones,
                    phone_types = EXCLUDED.phone_types, job_title = EXCLUDED.job_title,
                    image_url = EXCLUDED.image_url,
                    last_activity = COALESCE(EXCLUDED.last_activity, contacts.last_activity),
                    updated_at = EXCLUDED.updated_at
                WHERE (contacts.name, contacts.company, contacts.contact_uri, contacts.company_uri, contacts.email,
                       contacts.custom_data, contacts.phones, contacts.phone_types, contacts.job_title,
                       contacts.image_url, contacts.last_activity)
                    IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.company, EXCLUDED.contact_uri, EXCLUDED.company_uri,
                       EXCLUDED.email, EXCLUDED.custom_data, EXCLUDED.phones, EXCLUDED.phone_types,
                       EXCLUDED.job_title, EXCLUDED.image_url,
                       COALESCE(EXCLUDED.last_activity, contacts.last_activity))""")
            conn.execute(f"""INSERT INTO {s}.phones (key, contact_pk, extension)
                SELECT DISTINCT i.key, c.pk, i.extension
                FROM incoming_phones i JOIN {s}.contacts c ON c.id = i.contact_id
                ON CONFLICT DO NOTHING""")
            numbers: dict[str, list[str]] = {}
            for key, cid, _ext in phone_rows:
                numbers.setdefault(cid, []).extend(number_words(key, self._calling_code))
            words = {row[1]: search_words(row[2], row[3], numbers.get(row[1], ())) for row in contact_rows}
            conn.execute(f"""UPDATE {s}.contacts c SET words = w.words
                FROM unnest(%s::text[], %s::text[]) AS w(id, words)
                WHERE c.id = w.id AND c.words IS DISTINCT FROM w.words""", (list(words), list(words.values())))
            conn.execute(f"DELETE FROM {s}.tombstones WHERE id = ANY(%s)", (list(words),))
        return len(contact_rows)

    def delete(self, contact_ids: Iterable[str]) -> int:
        ids = list(contact_ids)
        if not ids:
            return 0
        s = self._s
        now = time.time()
        with self.write() as conn:
            conn.execute(f"DELETE FROM {s}.phones p USING {s}.contacts c "
                         "WHERE p.contact_pk = c.pk AND c.id = ANY(%s)", (ids,))
            conn.execute(f"""INSERT INTO {s}.tombstones (id, position, deleted_at)
                SELECT id, pk, %s FROM {s}.contacts WHERE id = ANY(%s)
                ON CONFLICT (id) DO UPDATE SET position = EXCLUDED.position, deleted_at = EXCLUDED.deleted_at""",
                         (now, ids))
            deleted = conn.execute(f"DELETE FROM {s}.contacts WHERE id = ANY(%s)", (ids,)).rowcount
            cutoff = now - TOMBSTONE_KEEP_S
            if conn.execute(f"DELETE FROM {s}.tombstones WHERE deleted_at < %s", (cutoff,)).rowcount:
                conn.execute(f"UPDATE {s}.meta SET value = GREATEST(value::double precision, %s)::text "
                             "WHERE name = 'tombstones_since'", (cutoff,))
            return deleted

    # the contacts API (see ContactStore: the same answers) ---------------------------------
    def complete_since(self) -> float:
        return float(self.get_meta("tombstones_since") or time.time())

    def listing(self, offset: int, limit: int, held_after: float) -> tuple[list[Contact | None], int]:
        s = self._s
        with self._connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            total = conn.execute(f"SELECT (SELECT COUNT(*) FROM {s}.contacts) + (SELECT COUNT(*) FROM {s}.tombstones "
                                 "WHERE deleted_at > %s)", (held_after,)).fetchone()[0]
            rows = conn.execute(
                f"""SELECT p.pos, {_FULL} FROM (
                        SELECT pk AS pos, pk AS cr, 0 AS gone FROM {s}.contacts
                        UNION ALL SELECT position, NULL, 1 FROM {s}.tombstones WHERE deleted_at > %s
                        ORDER BY pos, gone LIMIT %s OFFSET %s) p
                    LEFT JOIN {s}.contacts c ON c.pk = p.cr ORDER BY p.pos, p.gone""",
                (held_after, limit, offset)).fetchall()
        return [_full_contact(row[1:]) if row[1] is not None else None for row in rows], total

    def changes(self, since: float, offset: int, limit: int) -> tuple[list[Contact | str], int]:
        s = self._s
        with self._connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            total = conn.execute(f"SELECT (SELECT COUNT(*) FROM {s}.contacts WHERE updated_at > %s) + "
                                 f"(SELECT COUNT(*) FROM {s}.tombstones WHERE deleted_at > %s)",
                                 (since, since)).fetchone()[0]
            rows = conn.execute(
                f"""SELECT p.gone, {_FULL} FROM (
                        SELECT updated_at AS t, pk AS r, NULL AS gone FROM {s}.contacts WHERE updated_at > %s
                        UNION ALL SELECT deleted_at, position, id FROM {s}.tombstones WHERE deleted_at > %s
                        ORDER BY t, r LIMIT %s OFFSET %s) p
                    LEFT JOIN {s}.contacts c ON c.pk = p.r AND p.gone IS NULL ORDER BY p.t, p.r""",
                (since, since, limit, offset)).fetchall()
        return [row[0] if row[0] is not None else _full_contact(row[1:]) for row in rows], total

    def search(self, words: list[str], digits: str, limit: int) -> list[Contact]:
        """Word prefixes on the folded ``words`` column (lowercase, accents removed in Python, so
        the ``unaccent`` extension is not needed): ``LIKE '% mül%'``, served by a pg_trgm index
        when the extension could be created (:attr:`trigram_search`), else by a scan."""
        terms = [" " + word for word in fold_words(" ".join(words))] if words else []
        if digits:
            terms = [" #" + digits]
        if not terms:
            return []
        first = " " + fold_words(" ".join(words))[0] if words else None
        conditions = " AND ".join("c.words LIKE %s" for _ in terms)
        params: list = ["%" + _like(term) + "%" for term in terms]
        order = "c.name COLLATE \"C\", c.pk"
        if not digits and max(len(term) for term in terms) < 4:
            # one or two letters: no trigram to use, and a third of the directory may match; ranking
            # them all took 400 ms on a million contacts, so the first matches in the directory's
            # order are answered (as the SQLite store does)
            first, order = None, "c.pk"
        if first:  # names starting with the first word, then names having it, then companies
            order = f"(position(%s IN c.words) <> 1), (position(%s IN c.words) > position(' |' IN c.words)), {order}"
            params.extend((first, first))
        with self._connection() as conn:
            rows = conn.execute(f"SELECT {_FULL} FROM {self._s}.contacts c WHERE {conditions} ORDER BY {order} "
                                "LIMIT %s", (*params, limit)).fetchall()
        return [_full_contact(row) for row in rows]

    def lookup_many(self, numbers: list[PhoneNumber], limit: int) -> dict[str, list[Contact]]:
        keys = list(dict.fromkeys(number.key for number in numbers))
        found: dict[str, list[Contact]] = {}
        if not keys:
            return found
        s = self._s
        with self._connection() as conn:
            rows = conn.execute(
                f"""SELECT p.key, {_FULL}, bool_and(p.extension <> '') AS loose
                    FROM {s}.phones p JOIN {s}.contacts c ON c.pk = p.contact_pk
                    WHERE p.key = ANY(%s) GROUP BY p.key, c.pk ORDER BY p.key, {_RANKING}""", (keys,)).fetchall()
        for row in rows:
            bucket = found.setdefault(row[0], [])
            if len(bucket) < limit:
                bucket.append(_full_contact(row[1:-1]))
        return found

    def get(self, contact_id: str) -> Contact | None:
        row = self._one(f"SELECT {_FULL} FROM {{s}}.contacts c WHERE c.id = %s", (contact_id,))
        return _full_contact(row) if row else None

    # call records ------------------------------------------------------------------------
    def record_call(self, call: CallRecord, call_id: str) -> str:
        """Store ``call`` once: a second call with the same key (from any process) updates the first
        record (its end, duration, status, note) and returns its id."""
        s = self._s
        with self.write(contacts_changed=False) as conn:
            conn.execute(upsert_sql(f"{s}.calls", CALL_COLUMNS, CALL_UPDATED, "%s"),
                         call_row(call, call_id, time.time()))
            moment = call.ended or call.declined or call.started
            if moment is not None:
                self._touch(conn, call.contact_id, moment)
            row = conn.execute(f"SELECT id FROM {s}.calls WHERE key = %s", (call.key,)).fetchone()
        return row[0]

    def record_message(self, message_log: MessageLog, record_id: str) -> str:
        """Store the record of ``message_log``, made by its first version and replaced by later ones."""
        s = self._s
        with self.write(contacts_changed=False) as conn:
            conn.execute(upsert_sql(f"{s}.messages", MESSAGE_COLUMNS, MESSAGE_UPDATED, "%s"),
                         message_row(message_log, record_id, time.time()))
            self._touch(conn, message_log.contact_id, message_log.messages[-1].time)
            row = conn.execute(f"SELECT id FROM {s}.messages WHERE key = %s", (message_log.key,)).fetchone()
        return row[0]

    def _touch(self, conn: psycopg.Connection, contact_id: str, moment: datetime) -> None:
        conn.execute(f"UPDATE {self._s}.contacts SET last_activity = GREATEST(COALESCE(last_activity, 0), %s) "
                     "WHERE id = %s", (moment.timestamp(), contact_id))

    def messages(self, contact_id: str | None = None) -> list[dict]:
        return self._rows("messages", contact_id)

    def calls(self, contact_id: str | None = None) -> list[dict]:
        return self._rows("calls", contact_id)

    def _rows(self, table: str, contact_id: str | None) -> list[dict]:
        query = f"SELECT * FROM {self._s}.{table}" + (" WHERE contact_id = %s" if contact_id else "")
        with self._connection() as conn:
            cursor = conn.execute(query + " ORDER BY created_at", (contact_id,) if contact_id else ())
            names = [d.name for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]




def search_words(name: str | None, company: str | None, numbers: Iterable[str]) -> str:
    """The ``words`` column: folded words of the name, ``|``, those of the company, and ``#digits``
    per number, each after a space, so that ``LIKE '% mul%'`` is a word prefix (" jurg muller | zkb #41445001020")."""
    parts = [*fold_words(name or ""), "|", *fold_words(company or ""), *("#" + n for n in numbers)]
    return "".join(" " + part for part in parts)


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _trigram_index(conn: psycopg.Connection, s: str) -> bool:
    """A pg_trgm index on ``words`` where the extension exists or may be created; without it a
    search scans the table (fine for tens of thousands of contacts). The DDL runs only while the
    index is missing: processes that start later find it in the catalog."""
    if conn.execute("SELECT to_regclass(%s)", (f"{s}.contacts_words_trgm",)).fetchone()[0] is not None:
        return True
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            conn.execute(f"CREATE INDEX IF NOT EXISTS contacts_words_trgm ON {s}.contacts "
                         "USING gin (words gin_trgm_ops)")
        return True
    except psycopg.Error as exc:
        log.info("directory %s: no pg_trgm index for name search (%s); searches scan the table", s, _reason(exc))
        return False


def _reason(exc: BaseException) -> str:
    """The first line of a driver error, without the URL or password (psycopg never includes them)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
