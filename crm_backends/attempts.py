"""Attempts to create a record whose outcome is unknown, shared by the processes of one machine.

A backend that cannot see its own fresh writes at once (HubSpot's search index lags by seconds)
notes here when it sent a create whose answer never arrived, and asks before creating again: a
retry from another worker of the same machine then waits for the index instead of writing twice.
The note is a row in a small SQLite file in the instance directory; when the file cannot be used
(a read-only disk), the notes stay in this process's memory and a warning says so once.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict

from .sqlite_schema import use_wal

log = logging.getLogger(__name__)

KEEP_S = 3600.0  # notes older than this are pruned: every lag a backend waits for is far shorter
MEMORY_NOTES = 4096


class AttemptLog:
    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._memory: OrderedDict[str, float] = OrderedDict()
        self._local = threading.local()
        self._broken = False

    def _conn(self) -> sqlite3.Connection | None:
        if self._broken:
            return None
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=5, isolation_level=None, check_same_thread=False)
            use_wal(conn)
            # no fsync per note: a note must outlive its process, not a power cut
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE IF NOT EXISTS attempts (key TEXT PRIMARY KEY, sent REAL NOT NULL)")
        except (sqlite3.Error, OSError) as exc:
            self._give_up(exc)
            return None
        self._local.conn = conn
        return conn

    def _give_up(self, exc: Exception) -> None:
        if not self._broken:
            self._broken = True
            log.warning(
                "cannot use %s (%s): attempts of unknown outcome are remembered by this process only",
                self.path,
                exc,
            )

    def sent(self, key: str) -> None:
        """A create for ``key`` is about to leave: until :meth:`settled`, its outcome is unknown."""
        now = time.time()
        conn = self._conn()
        if conn is not None:
            try:
                conn.execute("INSERT OR REPLACE INTO attempts (key, sent) VALUES (?, ?)", (key, now))
                conn.execute("DELETE FROM attempts WHERE sent < ?", (now - KEEP_S,))
                return
            except sqlite3.Error as exc:
                self._give_up(exc)
        with self._lock:
            self._memory[key] = now
            while len(self._memory) > MEMORY_NOTES:
                self._memory.popitem(last=False)

    def settled(self, key: str) -> None:
        """The create for ``key`` was answered (created, or refused): nothing unknown remains."""
        conn = self._conn()
        if conn is not None:
            try:
                conn.execute("DELETE FROM attempts WHERE key = ?", (key,))
                return
            except sqlite3.Error as exc:
                self._give_up(exc)
        with self._lock:
            self._memory.pop(key, None)

    def age(self, key: str) -> float | None:
        """Seconds since a create for ``key`` of unknown outcome was sent; None when there is none."""
        sent: float | None = None
        conn = self._conn()
        if conn is not None:
            try:
                row = conn.execute("SELECT sent FROM attempts WHERE key = ?", (key,)).fetchone()
                sent = row[0] if row else None
            except sqlite3.Error as exc:
                self._give_up(exc)
        if conn is None or self._broken:
            with self._lock:
                sent = self._memory.get(key)
        return None if sent is None else max(0.0, time.time() - sent)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
