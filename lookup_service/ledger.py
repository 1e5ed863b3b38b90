"""Exactly-once workflows: the ledger remembers which record each call produced.

The connector may post one call twice (the automatic CallFlow and a click, or a retry after its
timeout), even at the same moment. The first post claims the call's key and runs the workflow; any
other post of the same key waits for that run and returns the same id. A run that fails releases
its claim, so a retry can try again.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable

from crm_backends.base import WorkflowResult

CLAIM_TIMEOUT_S = 120.0  # a claim older than this belongs to a process that died mid-run
WAIT_S = 25.0  # how long a duplicate post waits for the first one's result
POLL_S = 0.02


class WorkflowInProgress(Exception):
    """The same call is still being written by another request; try again shortly."""


class Ledger:
    """Claim a call's key, run the workflow once, remember its result. Storage is a subclass's."""

    def run_once(self, key: str, action: Callable[[], WorkflowResult]) -> tuple[WorkflowResult, bool]:
        """Run ``action`` unless ``key`` already ran; returns (result, ran_now)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            done = self._result(key)
            if done is not None:
                return done, False
            if self._claim(key):
                break
            if time.monotonic() >= deadline:
                raise WorkflowInProgress(key)
            time.sleep(POLL_S)
        try:
            result = action()
        except BaseException:
            self._release(key)
            raise
        self._store(key, json.dumps({"id": result.id, "url": result.url}))
        return result, True

    def _result(self, key: str) -> WorkflowResult | None:
        raise NotImplementedError

    def _claim(self, key: str) -> bool:
        raise NotImplementedError

    def _release(self, key: str) -> None:
        raise NotImplementedError

    def _store(self, key: str, result: str) -> None:
        raise NotImplementedError


def _decode(raw: str | bytes) -> WorkflowResult:
    data = json.loads(raw)
    return WorkflowResult(id=data["id"], url=data["url"])


class SqliteLedger(Ledger):
    """The ledger in a SQLite file: shared by every worker process on this machine."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self._local = threading.local()
        self._conn().execute(
            """CREATE TABLE IF NOT EXISTS workflow_runs (
                   key TEXT PRIMARY KEY, state TEXT NOT NULL, result TEXT, claimed_at REAL NOT NULL)"""
        )

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    def _result(self, key: str) -> WorkflowResult | None:
        row = self._conn().execute("SELECT state, result FROM workflow_runs WHERE key=?", (key,)).fetchone()
        return _decode(row[1]) if row and row[0] == "done" else None

    def _claim(self, key: str) -> bool:
        conn = self._conn()
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT state, claimed_at FROM workflow_runs WHERE key=?", (key,)).fetchone()
            if row is None:
                conn.execute("INSERT INTO workflow_runs (key, state, claimed_at) VALUES (?, 'running', ?)", (key, now))
                claimed = True
            elif row[0] == "running" and now - row[1] > CLAIM_TIMEOUT_S:
                conn.execute("UPDATE workflow_runs SET claimed_at=? WHERE key=?", (now, key))
                claimed = True
            else:
                claimed = False
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return claimed

    def _release(self, key: str) -> None:
        self._conn().execute("DELETE FROM workflow_runs WHERE key=? AND state='running'", (key,))

    def _store(self, key: str, result: str) -> None:
        self._conn().execute("UPDATE workflow_runs SET state='done', result=? WHERE key=?", (result, key))


class RedisLedger(Ledger):
    """The same on Redis, for several machines: ``SET NX`` claims, results kept for 30 days."""

    RESULT_TTL_S = 30 * 24 * 3600

    def __init__(self, client):
        self.client = client

    @staticmethod
    def _name(key: str) -> str:
        return "lookup:workflow:" + key

    def _result(self, key: str) -> WorkflowResult | None:
        raw = self.client.get(self._name(key))
        return _decode(raw) if raw is not None and raw != b"running" else None

    def _claim(self, key: str) -> bool:
        return bool(self.client.set(self._name(key), b"running", nx=True, ex=int(CLAIM_TIMEOUT_S)))

    def _release(self, key: str) -> None:
        self.client.delete(self._name(key))

    def _store(self, key: str, result: str) -> None:
        self.client.set(self._name(key), result, ex=self.RESULT_TTL_S)
