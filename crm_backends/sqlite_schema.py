"""The SQLite directory's schema and the queries that read it, shared by the store
(:mod:`crm_backends.contact_store`) and the build of its phone index snapshot
(:mod:`crm_backends.phone_index`), so that neither imports the other."""

from __future__ import annotations

import sqlite3
import time

_WAL_TRIES = 100


def use_wal(conn: sqlite3.Connection) -> None:
    """Put the database in write-ahead-log mode (readers never wait for the writer).

    The switch takes an exclusive lock, and SQLite answers "database is locked" at once, without its
    busy handler, while another connection holds the file, as when every worker of a server opens
    a new store at the same moment: the switch is retried for a few seconds. A database already in
    WAL mode (every later open) is only read."""
    for attempt in range(_WAL_TRIES):
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == _WAL_TRIES - 1:
                raise
            time.sleep(0.05)

SCHEMA = """
CREATE TABLE IF NOT EXISTS contacts (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    name TEXT,
    company TEXT,
    contact_uri TEXT,
    company_uri TEXT,
    email TEXT,
    custom_data TEXT,
    phones TEXT,
    last_activity REAL,
    updated_at REAL NOT NULL,
    phone_types TEXT,  -- JSON: a raw value of phones -> its type (lookup_core.phone_types)
    job_title TEXT,
    image_url TEXT
);
CREATE TABLE IF NOT EXISTS phones (
    key TEXT NOT NULL,
    contact_rowid INTEGER NOT NULL,
    extension TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (key, contact_rowid, extension)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS phones_by_contact ON phones (contact_rowid);
CREATE TABLE IF NOT EXISTS calls (
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
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT);
INSERT OR IGNORE INTO meta (name, value) VALUES ('generation', '0');
INSERT OR IGNORE INTO meta (name, value) VALUES ('contacts_generation', '0');
CREATE INDEX IF NOT EXISTS contacts_by_update ON contacts (updated_at, rowid);
-- deleted contacts, for incremental listings (GET /contacts?syncTimestamp=); kept TOMBSTONE_KEEP_S
CREATE TABLE IF NOT EXISTS tombstones (
    id TEXT PRIMARY KEY,
    position INTEGER NOT NULL,  -- the contact's rowid: its place in a listing
    deleted_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tombstones_by_time ON tombstones (deleted_at);
-- since when every deletion has a tombstone (the table's creation, or the oldest one kept)
INSERT OR IGNORE INTO meta (name, value)
    VALUES ('tombstones_since', CAST((julianday('now') - 2440587.5) * 86400.0 AS TEXT));
-- name search: words of the name and company without accents or case, and the numbers' digits
CREATE VIRTUAL TABLE IF NOT EXISTS contacts_fts USING fts5(
    name, company, numbers, tokenize="unicode61 remove_diacritics 2", prefix='1 2 3'
);
-- message records (MessageLog): an SMS conversation's digest of one day, a voicemail, a fax
CREATE TABLE IF NOT EXISTS messages (
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
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_contact ON messages (contact_id);
"""

# One number's contacts, ranked; and every number's, in the same ranking (the phone index). RANKING
# needs the column `loose` (the contact has the number only with an extension).
_COLUMNS = """c.id, c.name, c.company, c.contact_uri, c.company_uri, c.custom_data, c.last_activity,
       c.email, MIN(p.extension != '') AS loose
FROM phones p JOIN contacts c ON c.rowid = p.contact_rowid"""
RANKING = "loose, c.last_activity DESC NULLS LAST, c.name, c.rowid"
LOOKUP = f"SELECT {_COLUMNS} WHERE p.key = ? GROUP BY c.rowid ORDER BY {RANKING} LIMIT ?"
RANKED_BY_KEY = f"SELECT p.key, {_COLUMNS} GROUP BY p.key, c.rowid ORDER BY p.key, {RANKING}"


# Columns added to ``contacts`` after stores were first written: (name, SQL type). A store file of
# an earlier version gets them when it is opened (see :func:`add_columns`); they are read as NULL.
ADDED_COLUMNS = (("contacts", "phone_types", "TEXT"), ("contacts", "job_title", "TEXT"),
                 ("contacts", "image_url", "TEXT"), ("calls", "note", "TEXT"))


def add_columns(conn: sqlite3.Connection) -> list[str]:
    """Add the :data:`ADDED_COLUMNS` a store written by an earlier version lacks; returns their
    names. Under the write lock, so that two processes opening the same old file do not race."""
    def missing() -> list[tuple[str, str, str]]:
        present = {(table, row[1]) for table in {t for t, _, _ in ADDED_COLUMNS}
                   for row in conn.execute(f"PRAGMA table_info({table})")}
        return [(table, name, kind) for table, name, kind in ADDED_COLUMNS if (table, name) not in present]

    if not missing():
        return []
    conn.execute("BEGIN IMMEDIATE")
    try:
        added = missing()
        for table, name, kind in added:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return [name for _, name, _ in added]


def read_generations(conn: sqlite3.Connection) -> tuple[int, int]:
    """The store's generation (every write) and contacts generation (the last contact change)."""
    meta = dict(conn.execute("SELECT name, value FROM meta WHERE name LIKE '%generation'").fetchall())
    return int(meta.get("generation", 0)), int(meta.get("contacts_generation", 0))
