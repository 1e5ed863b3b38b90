"""A memory-mapped snapshot of a contact store's phone index, for lookups that keep the GIL.

Python's sqlite3 releases the GIL around every step of a query. In a threaded gunicorn worker
another request thread takes it each time, and getting it back costs two context switches: on
the 2-core benchmark machine the directory query cost the server about 150 µs a lookup instead
of the 20 µs it takes on its own. This snapshot answers the same query from a read-only memory
map, without releasing the GIL and without a system call; the page cache shares it between the
workers.

The store (SQLite, or PostgreSQL shared by several machines, each with its own snapshot) stays
the truth. A snapshot carries the store's two generations from the moment
it was read: it answers while no contact has changed since (a call record only changes the
order of several contacts sharing a number, so such keys then go to the store). A store that finds
its snapshot stale asks its database and starts a rebuild in a separate process
(:func:`crm_backends.index_build.main`), one at a time per machine, so the build never
competes with requests for the GIL.

File layout (little endian): a header (magic, generation, contacts generation, slot count,
table offset); records of (key length u16, payload length u32, flags u8, key, payload), the
payload being the JSON list of the key's ranked contact rows; then an open-addressing table of
u64 slots, each 0 or a record offset + 1, indexed by CRC-32 of the key with linear probing.
"""

from __future__ import annotations

import fcntl
import glob
import json
import logging
import mmap
import os
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import partial
from urllib.parse import quote

from .sqlite_schema import RANKED_BY_KEY, read_generations

log = logging.getLogger(__name__)

MAGIC = b"LKPHIX01"
HEADER = struct.Struct("<8sQQQQ")  # magic, generation, contacts generation, slot count, table offset
RECORD = struct.Struct("<HIB")  # key length, payload length, flags
SLOT = struct.Struct("<Q")
SEVERAL = 1  # flag: the key has more than one contact, ranked by recent activity among others
MAX_STORED = 5  # contacts kept per key: the connector's cap
REBUILD_EVERY_S = 10.0  # at most one rebuild started per store and process in this time
CHECK_EVERY_S = 1.0  # a stale snapshot looks for a newer file at most this often

PG_URL_VARIABLE = "LOOKUP_INDEX_DATABASE_URL"  # how the build process gets the URL: never on a command line
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class InvalidIndex(Exception):
    """The file is not a complete snapshot (missing, torn, or of another format)."""


Row = list  # [id, name, company, contact_uri, company_uri, custom_data (dict|None), last_activity, email, loose]
# What a build reads, in one consistent view: (generation, contacts generation, ranked rows by key).
RankedRows = Callable[[], AbstractContextManager[tuple[int, int, Iterable[tuple]]]]


class PhoneIndex:
    """One snapshot file, memory-mapped read-only."""

    def __init__(self, path: str):
        try:
            with open(path, "rb") as handle:
                stat = os.fstat(handle.fileno())
                self.identity = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:  # ValueError: an empty file cannot be mapped
            raise InvalidIndex(f"{path}: {exc}") from None
        try:
            magic, self.generation, self.contacts_generation, slots, self._table = HEADER.unpack_from(self._map, 0)
        except struct.error:
            raise InvalidIndex(f"{path}: too short") from None
        if magic != MAGIC or not slots or slots & (slots - 1) or self._table + slots * SLOT.size != len(self._map):
            raise InvalidIndex(f"{path}: not a complete phone index")
        self._mask = slots - 1

    def find(self, key: str) -> tuple[list[Row], bool] | None:
        """The ranked rows stored for ``key`` and whether it has several contacts; None if absent."""
        wanted = key.encode()
        data = self._map
        slot = zlib.crc32(wanted) & self._mask
        try:
            for _ in range(self._mask + 1):
                offset = SLOT.unpack_from(data, self._table + slot * SLOT.size)[0]
                if not offset:
                    return None
                start = offset - 1 + RECORD.size
                key_length, payload_length, flags = RECORD.unpack_from(data, offset - 1)
                if data[start : start + key_length] == wanted:
                    start += key_length
                    return json.loads(data[start : start + payload_length]), bool(flags & SEVERAL)
                slot = (slot + 1) & self._mask
        except (struct.error, ValueError) as exc:
            raise InvalidIndex(str(exc)) from None
        return None


class SnapshotKeeper:
    """A store's current snapshot: reopened when a newer file appears, rebuilt when stale."""

    def __init__(self, db_path: str, generations: Callable[[], tuple[int, int]],
                 start_builder: Callable[[], subprocess.Popen | None] | None = None):
        """``start_builder``: starts the rebuild process; by default a build from the SQLite file."""
        self.db_path = db_path
        self.path = index_path(db_path)
        self._generations = generations
        self._start = start_builder or (lambda: _start_builder(self.db_path))
        self._index: PhoneIndex | None = None
        self._lock = threading.Lock()
        self._next_check = 0.0
        self._next_build = 0.0
        self._builder: subprocess.Popen | None = None

    def find(self, key: str, limit: int) -> list[Row] | None:
        """The rows for ``key`` if the snapshot can answer for it now, else None (ask SQLite)."""
        if limit > MAX_STORED:
            return None
        index = self._index
        generation, contacts_generation = self._generations()
        if index is None or index.contacts_generation != contacts_generation:
            index = self._refresh(contacts_generation)
            if index is None:
                return None
        try:
            found = index.find(key)
        except InvalidIndex as exc:
            log.warning("phone index %s unreadable (%s); answering from the database", self.path, exc)
            self._index = None
            return None
        if found is None:
            return []
        rows, several = found
        if several and index.generation != generation:  # a call since may have reordered them
            return None
        return rows[:limit]

    def _refresh(self, contacts_generation: int) -> PhoneIndex | None:
        now = time.monotonic()
        if now < self._next_check or not self._lock.acquire(blocking=False):
            return None
        try:
            self._next_check = now + CHECK_EVERY_S
            index = self._open_newer()
            if index is not None and index.contacts_generation == contacts_generation:
                return index
            if now >= self._next_build and (self._builder is None or self._builder.poll() is not None):
                self._next_build = now + REBUILD_EVERY_S
                self._builder = self._start()
            return None
        finally:
            self._lock.release()

    def _open_newer(self) -> PhoneIndex | None:
        current = self._index
        try:
            stat = os.stat(self.path)
        except OSError:
            return current
        if current is not None and current.identity == (stat.st_ino, stat.st_mtime_ns, stat.st_size):
            return current
        try:
            self._index = PhoneIndex(self.path)
        except InvalidIndex as exc:
            log.warning("phone index not usable: %s", exc)
            return current
        return self._index

    def close(self) -> None:
        builder = self._builder
        if builder is not None and builder.poll() is None:
            builder.terminate()
            try:
                builder.wait(5)
            except subprocess.TimeoutExpired:
                builder.kill()
        self._index = None


def index_path(db_path: str) -> str:
    return db_path + ".index"


def _start_builder(db_path: str, options: Iterable[str] = (), env: dict[str, str] | None = None
                   ) -> subprocess.Popen | None:
    try:
        return subprocess.Popen(
            [sys.executable, "-c", "import sys; from crm_backends.index_build import main; main(sys.argv[1:])",
             db_path, *options], cwd=_ROOT, env={**os.environ, **env} if env else None,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True,
        )
    except OSError as exc:
        log.warning("could not start the phone index build: %s", exc)
        return None


@dataclass
class BuildReport:
    built: bool
    keys: int = 0
    seconds: float = 0.0
    size_bytes: int = 0


def build(db_path: str, source: RankedRows | None = None) -> BuildReport:
    """Write a snapshot of the store at ``db_path`` beside it, unless another build runs.
    ``source``: where the rows come from when the store is not that SQLite file (PostgreSQL)."""
    started = time.monotonic()
    target = index_path(db_path)
    with open(target + ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return BuildReport(built=False)
        for leftover in glob.glob(glob.escape(target) + ".*.tmp"):  # from a build that was killed
            os.unlink(leftover)
        temporary = f"{target}.{os.getpid()}.tmp"
        try:
            keys = _write(source or partial(_sqlite_rows, db_path), temporary)
            os.replace(temporary, target)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
    return BuildReport(built=True, keys=keys, seconds=time.monotonic() - started, size_bytes=os.path.getsize(target))


@contextmanager
def _sqlite_rows(db_path: str) -> Iterator[tuple[int, int, Iterable[tuple]]]:
    conn = sqlite3.connect(f"file:{quote(os.path.abspath(db_path))}?mode=ro", uri=True, isolation_level=None)
    try:
        conn.execute("BEGIN")  # one read transaction: the rows and the generations agree
        yield (*read_generations(conn), conn.execute(RANKED_BY_KEY))
    finally:
        conn.close()


def _write(source: RankedRows, temporary: str) -> int:
    with source() as (generation, contacts_generation, ranked):
        checksums, offsets = array("L"), array("Q")
        with open(temporary, "wb") as out:
            out.write(bytes(HEADER.size))  # the header goes in last: a torn file has no magic
            position = HEADER.size
            key, rows = None, []
            for row in ranked:
                if row[0] != key:
                    if rows:
                        position += _write_record(out, key, rows, position, checksums, offsets)
                    key, rows = row[0], []
                if len(rows) <= MAX_STORED:  # one more than kept: "several" must stay true
                    rows.append(row)
            if rows:
                position += _write_record(out, key, rows, position, checksums, offsets)
            slots = 8
            while slots < 2 * len(offsets):
                slots *= 2
            table = array("Q", bytes(slots * SLOT.size))
            mask = slots - 1
            for checksum, offset in zip(checksums, offsets, strict=True):
                slot = checksum & mask
                while table[slot]:
                    slot = (slot + 1) & mask
                table[slot] = offset + 1
            if sys.byteorder != "little":
                table.byteswap()
            out.write(table.tobytes())
            out.seek(0)
            out.write(HEADER.pack(MAGIC, generation, contacts_generation, slots, position))
        return len(offsets)


def _write_record(out, key: str, rows: list[tuple], position: int, checksums: array, offsets: array) -> int:
    stored = [
        [row[1], row[2], row[3], row[4], row[5], json.loads(row[6]) if row[6] else None, row[7], row[8], int(row[9])]
        for row in rows[:MAX_STORED]
    ]
    encoded_key = key.encode()
    payload = json.dumps(stored, ensure_ascii=False, separators=(",", ":")).encode()
    out.write(RECORD.pack(len(encoded_key), len(payload), SEVERAL if len(rows) > 1 else 0))
    out.write(encoded_key)
    out.write(payload)
    checksums.append(zlib.crc32(encoded_key))
    offsets.append(position)
    return RECORD.size + len(encoded_key) + len(payload)
