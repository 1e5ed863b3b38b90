"""The workflow ledger and outbox: one durable row per call, from the first post to its record.

A workflow request that validates is stored here *before* the CRM is called (``pending``); the
attempt that records it stores the CRM's answer (``done``), and every later post of the same call
reads that answer, so the call is recorded once. A delivery the CRM refuses for good is kept as
``failed`` with the reason.

While an attempt runs, its process holds a *claim* on the row: an owner identity (host, pid and
the process's start time) and a short lease that the owner renews. A claim whose lease ran out, or
whose owner is a dead process on this machine, may be taken by anyone: a killed worker blocks a
call for seconds at most, never minutes. Two live attempts of one call never run at once.

Stores: SQLite (the default, every worker process of one machine) or PostgreSQL (``DATABASE_URL``,
every machine) through SQLAlchemy Core, and Redis (``REDIS_URL``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass

from crm_backends.sqlite_schema import use_wal
from lookup_core.types import WorkflowResult
from lookup_service import keys

log = logging.getLogger(__name__)

LEASE_S = 10.0  # a claim lasts this long unless its owner renews it (every LEASE_S / 4)
SCHEMA_VERSION = 1
PENDING, DONE, FAILED = "pending", "done", "failed"
STATES = (PENDING, DONE, FAILED)


class OutboxUnavailable(Exception):
    """The store refused a write (read-only, full, unreachable): the request cannot be accepted."""


@dataclass
class Item:
    key: str
    tenant: str
    backend: str
    workflow: str
    payload: str  # JSON of the call record
    state: str
    result: WorkflowResult | None
    attempts: int
    created_at: float
    next_at: float
    error: str | None
    owner: str | None
    lease_until: float


# --- who owns a claim ---------------------------------------------------------------------------
_HOST = socket.gethostname()
_identity: tuple[int, str] | None = None


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc``), or None where unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()
    if fields and fields[0] in ("Z", "X"):  # a zombie: dead, not yet reaped
        return "dead"
    return fields[19] if len(fields) > 19 else None


def owner_id() -> str:
    """``host:pid:start`` of this process (computed again after a fork)."""
    global _identity
    pid = os.getpid()
    if _identity is None or _identity[0] != pid:
        _identity = (pid, f"{_HOST}:{pid}:{_start_ticks(pid) or int(time.time())}")
    return _identity[1]


def owner_dead(owner: str | None) -> bool:
    """True when ``owner`` is a process of this machine that no longer runs. A process of another
    machine cannot be checked: its claim ends with its lease."""
    if not owner:
        return True
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != _HOST:
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    if pid == os.getpid():
        return parts[2] != owner_id().rsplit(":", 1)[1]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    started = _start_ticks(pid)
    return started == "dead" or (started is not None and started != parts[2])


def encode_result(result: WorkflowResult) -> str:
    return json.dumps({"id": result.id, "url": result.url})


def decode_result(raw: str | bytes | None) -> WorkflowResult | None:
    if not raw:
        return None
    data = json.loads(raw)
    return WorkflowResult(id=data.get("id"), url=data.get("url"))


class Ledger:
    """The operations the outbox needs; a subclass keeps the rows somewhere durable."""

    kind = "?"

    def put(self, key: str, tenant: str, backend: str, workflow: str, payload: str, now: float) -> Item:
        """Store a new pending item unless ``key`` exists; return the item as stored."""
        raise NotImplementedError

    def get(self, key: str) -> Item | None:
        raise NotImplementedError

    def get_many(self, keys: list[str]) -> dict[str, Item]:
        """The items of ``keys`` that exist, in one round trip where the store allows."""
        return {key: item for key in keys if (item := self.get(key)) is not None}

    def claim(self, key: str, owner: str, now: float) -> bool:
        """Take the claim on a pending item whose claim is free, expired or held by a dead process."""
        raise NotImplementedError

    def renew(self, keys: list[str], owner: str, now: float) -> set[str]:
        """Extend the leases of ``keys`` still held by ``owner``; returns those."""
        raise NotImplementedError

    def due(self, now: float, limit: int) -> list[Item]:
        """Pending items whose next attempt is due, oldest first (claimed or not)."""
        raise NotImplementedError

    def finish(self, key: str, result: WorkflowResult, delivered: str | None = None) -> WorkflowResult:
        """Mark done with ``result`` unless done already; returns the result stored first. With
        ``delivered`` (the payload the attempt delivered): when the payload was revised meanwhile,
        the result is kept but the item stays pending and due now, so the next attempt updates
        the record to the revision."""
        raise NotImplementedError

    def revise(self, key: str, seen: str, payload: str, now: float) -> bool:
        """Replace the payload ``seen`` of ``key`` with ``payload`` (compare and set: False when it
        changed meanwhile). A done item becomes pending and due now, keeping its result: the
        record it made is then updated to the revision."""
        raise NotImplementedError

    def fail(self, key: str, owner: str, reason: str, attempts: int) -> None:
        raise NotImplementedError

    def reschedule(self, key: str, owner: str, next_at: float, error: str, attempts: int) -> None:
        """Back to pending, claim released, next attempt at ``next_at``."""
        raise NotImplementedError

    def release(self, key: str, owner: str) -> None:
        raise NotImplementedError

    def listing(self, states: tuple[str, ...], limit: int) -> list[Item]:
        raise NotImplementedError

    def retry(self, key: str, now: float) -> bool:
        """A failed item becomes pending again, due now."""
        raise NotImplementedError

    def drop(self, key: str) -> bool:
        raise NotImplementedError

    def backlog(self) -> tuple[int, float | None]:
        """(number of pending items, creation time of the oldest one)."""
        raise NotImplementedError

    def close(self) -> None:
        return None

    def claimable(self, item: Item, now: float) -> bool:
        if item.state != PENDING:
            return False
        if not item.owner or item.lease_until < now:
            return True
        if owner_dead(item.owner):
            log.info("outbox: the attempt on call %s by %s died; taking it over", item.key[:12], item.owner)
            return True
        return False


# --- SQLite and PostgreSQL ----------------------------------------------------------------------
_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS workflow_outbox (
           key VARCHAR(128) PRIMARY KEY,
           tenant VARCHAR(200) NOT NULL,
           backend VARCHAR(200) NOT NULL,
           workflow VARCHAR(100) NOT NULL,
           payload TEXT NOT NULL,
           state VARCHAR(10) NOT NULL,
           result TEXT,
           attempts INTEGER NOT NULL DEFAULT 0,
           created_at DOUBLE PRECISION NOT NULL,
           next_at DOUBLE PRECISION NOT NULL,
           error TEXT,
           owner VARCHAR(300),
           lease_until DOUBLE PRECISION NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS workflow_outbox_due ON workflow_outbox (state, next_at)",
]
_COLUMNS = "key, tenant, backend, workflow, payload, state, result, attempts, created_at, next_at, error, owner, " \
    "lease_until"


def _item(row) -> Item:
    return Item(row[0], row[1], row[2], row[3], row[4], row[5], decode_result(row[6]), int(row[7]), float(row[8]),
                float(row[9]), row[10], row[11], float(row[12]))


class SqlLedger(Ledger):
    """The rows in SQLite (a file shared by the worker processes of one machine) or PostgreSQL."""

    def __init__(self, url: str):
        import sqlalchemy

        self._sa = sqlalchemy
        self.kind = "postgresql" if url.startswith("postgresql") else "sqlite"
        if self.kind == "sqlite":
            path = url.removeprefix("sqlite:///")
            try:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            except OSError:  # reported by the first use, as the store being unavailable
                pass
            engine = sqlalchemy.create_engine(url, connect_args={"timeout": 30}, isolation_level="AUTOCOMMIT",
                                              poolclass=sqlalchemy.pool.NullPool)

            @sqlalchemy.event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn, _record) -> None:
                use_wal(dbapi_conn)
                dbapi_conn.execute("PRAGMA busy_timeout=30000")
        else:
            engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT", pool_pre_ping=True,
                                              pool_size=4, max_overflow=8)
        self.engine = engine
        self._pid = os.getpid()
        self._migrated = False
        try:
            self._migrate()
        except OutboxUnavailable as exc:  # the service starts; workflows answer 503 until the store works
            log.error("%s; workflows cannot be accepted until it works", exc)

    @classmethod
    def sqlite(cls, path: str) -> SqlLedger:
        return cls("sqlite:///" + os.path.abspath(path))

    def _run(self, sql: str, **params):
        if self._pid != os.getpid():  # forked: never share the parent's connections
            self.engine.dispose(close=False)
            self._pid = os.getpid()
        if not self._migrated:
            self._migrate()
        try:
            with self.engine.connect() as conn:
                result = conn.execute(self._sa.text(sql), params)
                return result.fetchall() if result.returns_rows else result.rowcount
        except self._sa.exc.SQLAlchemyError as exc:
            raise OutboxUnavailable(f"the {self.kind} workflow store failed: {_reason(exc)}") from None

    def _migrate(self) -> None:
        """Create or upgrade the schema to SCHEMA_VERSION, one process at a time."""
        text = self._sa.text
        try:
            with self.engine.connect() as conn:
                if self.kind == "postgresql":  # workers start together: one migrates, the others wait
                    conn.execute(text("SELECT pg_advisory_lock(72310011)"))
                try:
                    conn.execute(text("CREATE TABLE IF NOT EXISTS workflow_schema (version INTEGER NOT NULL)"))
                    rows = conn.execute(text("SELECT version FROM workflow_schema")).fetchall()
                    version = max((r[0] for r in rows), default=0)
                    if version < SCHEMA_VERSION:
                        for statement in _SCHEMA:
                            conn.execute(text(statement))
                        if self.kind == "sqlite":
                            self._adopt_old_ledger(conn)
                        conn.execute(text("DELETE FROM workflow_schema"))
                        conn.execute(text("INSERT INTO workflow_schema (version) VALUES (:v)"), {"v": SCHEMA_VERSION})
                    self._migrated = True
                finally:
                    if self.kind == "postgresql":
                        conn.execute(text("SELECT pg_advisory_unlock(72310011)"))
        except self._sa.exc.SQLAlchemyError as exc:
            raise OutboxUnavailable(f"the {self.kind} workflow store failed: {_reason(exc)}") from None

    def _adopt_old_ledger(self, conn) -> None:
        """Results of the ledger before the outbox (table ``workflow_runs``) stay answers."""
        text = self._sa.text
        if not conn.execute(text("SELECT name FROM sqlite_master WHERE type='table' AND name='workflow_runs'")).all():
            return
        conn.execute(text(f"""INSERT OR IGNORE INTO workflow_outbox ({_COLUMNS})
                              SELECT key, '', '', '', '{{}}', 'done', result, 1, claimed_at, claimed_at, NULL, NULL, 0
                              FROM workflow_runs WHERE state='done'"""))

    def put(self, key: str, tenant: str, backend: str, workflow: str, payload: str, now: float) -> Item:
        self._run(f"""INSERT INTO workflow_outbox ({_COLUMNS})
                      VALUES (:key, :tenant, :backend, :workflow, :payload, 'pending', NULL, 0, :now, :now, NULL,
                              NULL, 0)
                      ON CONFLICT (key) DO NOTHING""",
                  key=key, tenant=tenant, backend=backend, workflow=workflow, payload=payload, now=now)
        item = self.get(key)
        if item is None:  # dropped between the two statements
            raise OutboxUnavailable("the workflow store lost an item it had just written")
        return item

    def get(self, key: str) -> Item | None:
        rows = self._run(f"SELECT {_COLUMNS} FROM workflow_outbox WHERE key=:key", key=key)
        return _item(rows[0]) if rows else None

    def get_many(self, keys: list[str]) -> dict[str, Item]:
        names = {f"k{i}": key for i, key in enumerate(keys)}
        if not names:
            return {}
        rows = self._run(f"SELECT {_COLUMNS} FROM workflow_outbox WHERE key IN ({', '.join(':' + n for n in names)})",
                         **names)
        return {row[0]: _item(row) for row in rows}

    def claim(self, key: str, owner: str, now: float) -> bool:
        item = self.get(key)
        if item is None or not self.claimable(item, now):
            return False
        # compare and set: only if nobody changed the claim since it was read
        return self._run("""UPDATE workflow_outbox SET owner=:owner, lease_until=:until
                            WHERE key=:key AND state='pending' AND COALESCE(owner, '')=:seen
                              AND lease_until=:seen_until""",
                         owner=owner, until=now + LEASE_S, key=key, seen=item.owner or "",
                         seen_until=item.lease_until) == 1

    def renew(self, keys: list[str], owner: str, now: float) -> set[str]:
        held = set()
        for key in keys:
            if self._run("UPDATE workflow_outbox SET lease_until=:until WHERE key=:key AND owner=:owner "
                         "AND state='pending'", until=now + LEASE_S, key=key, owner=owner) == 1:
                held.add(key)
        return held

    def due(self, now: float, limit: int) -> list[Item]:
        rows = self._run(f"""SELECT {_COLUMNS} FROM workflow_outbox WHERE state='pending' AND next_at<=:now
                             ORDER BY next_at LIMIT :limit""", now=now, limit=limit)
        return [_item(r) for r in rows]

    def finish(self, key: str, result: WorkflowResult, delivered: str | None = None) -> WorkflowResult:
        encoded = encode_result(result)
        if delivered is None:
            self._run("""UPDATE workflow_outbox SET state='done', result=:result, owner=NULL, lease_until=0,
                                error=NULL, attempts=attempts+1
                         WHERE key=:key AND state<>'done'""", result=encoded, key=key)
        elif not self._run("""UPDATE workflow_outbox SET state='done', result=:result, owner=NULL, lease_until=0,
                                     error=NULL, attempts=attempts+1
                              WHERE key=:key AND state<>'done' AND payload=:delivered""",
                           result=encoded, key=key, delivered=delivered):
            # revised while the attempt ran: the record exists now, the next attempt updates it
            self._run("""UPDATE workflow_outbox SET result=:result, owner=NULL, lease_until=0, error=NULL,
                                attempts=attempts+1, next_at=:now
                         WHERE key=:key AND state='pending'""", result=encoded, key=key, now=time.time())
        item = self.get(key)
        return item.result if item is not None and item.result is not None else result

    def revise(self, key: str, seen: str, payload: str, now: float) -> bool:
        return self._run("""UPDATE workflow_outbox SET payload=:payload,
                                   next_at=CASE WHEN state='done' THEN :now ELSE next_at END,
                                   attempts=CASE WHEN state='done' THEN 0 ELSE attempts END,
                                   state=CASE WHEN state='done' THEN 'pending' ELSE state END
                            WHERE key=:key AND payload=:seen""", payload=payload, now=now, key=key, seen=seen) == 1

    def fail(self, key: str, owner: str, reason: str, attempts: int) -> None:
        self._run("""UPDATE workflow_outbox SET state='failed', error=:error, owner=NULL, lease_until=0,
                            attempts=:attempts
                     WHERE key=:key AND state='pending' AND owner=:owner""",
                  error=reason[:1000], attempts=attempts, key=key, owner=owner)

    def reschedule(self, key: str, owner: str, next_at: float, error: str, attempts: int) -> None:
        self._run("""UPDATE workflow_outbox SET next_at=:next_at, error=:error, owner=NULL, lease_until=0,
                            attempts=:attempts
                     WHERE key=:key AND state='pending' AND owner=:owner""",
                  next_at=next_at, error=error[:1000], attempts=attempts, key=key, owner=owner)

    def release(self, key: str, owner: str) -> None:
        self._run("UPDATE workflow_outbox SET owner=NULL, lease_until=0 WHERE key=:key AND owner=:owner",
                  key=key, owner=owner)

    def listing(self, states: tuple[str, ...], limit: int) -> list[Item]:
        names = ", ".join(f"'{s}'" for s in states if s in STATES)
        rows = self._run(f"SELECT {_COLUMNS} FROM workflow_outbox WHERE state IN ({names}) "
                         "ORDER BY created_at LIMIT :limit", limit=limit)
        return [_item(r) for r in rows]

    def retry(self, key: str, now: float) -> bool:
        return self._run("""UPDATE workflow_outbox SET state='pending', next_at=:now, created_at=:now, attempts=0,
                                   owner=NULL, lease_until=0
                            WHERE key=:key AND state='failed'""", now=now, key=key) == 1

    def drop(self, key: str) -> bool:
        return self._run("DELETE FROM workflow_outbox WHERE key=:key AND state<>'done'", key=key) == 1

    def backlog(self) -> tuple[int, float | None]:
        rows = self._run("SELECT COUNT(*), MIN(created_at) FROM workflow_outbox WHERE state='pending'")
        count, oldest = rows[0]
        return int(count or 0), (float(oldest) if oldest is not None else None)

    def close(self) -> None:
        self.engine.dispose()


# --- Redis --------------------------------------------------------------------------------------
# One hash per item; the sorted set ``due`` holds every pending item by its next attempt time, until
# the item is done or failed (the acknowledgement). A claim is a key with a TTL: a worker that dies
# stops renewing it, it expires, and the item, still in ``due``, is taken again.
_PUT = """
if redis.call('exists', KEYS[1]) == 0 then
  redis.call('hset', KEYS[1], 'tenant', ARGV[2], 'backend', ARGV[3], 'workflow', ARGV[4], 'payload', ARGV[5],
             'state', 'pending', 'attempts', 0, 'created_at', ARGV[6], 'next_at', ARGV[6])
  local legacy = redis.call('get', KEYS[3])
  if legacy and legacy ~= 'running' then
    redis.call('hset', KEYS[1], 'state', 'done', 'result', legacy, 'attempts', 1)
    redis.call('expire', KEYS[1], ARGV[7])
  else
    redis.call('zadd', KEYS[2], ARGV[6], ARGV[1])
  end
end
return redis.call('hgetall', KEYS[1])
"""
_CLAIM = """
if redis.call('hget', KEYS[1], 'state') ~= 'pending' then return 0 end
local held = redis.call('get', KEYS[2])
if held and held ~= ARGV[3] then return 0 end
redis.call('set', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
"""
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_FINISH = """
if ARGV[4] ~= '' and redis.call('hget', KEYS[1], 'state') == 'pending'
   and redis.call('hget', KEYS[1], 'payload') ~= ARGV[4] then
  -- revised while the attempt ran: keep the record's id, due again now to update it
  redis.call('hset', KEYS[1], 'result', ARGV[2], 'next_at', ARGV[5])
  redis.call('hincrby', KEYS[1], 'attempts', 1)
  redis.call('hdel', KEYS[1], 'error')
  redis.call('zadd', KEYS[2], ARGV[5], ARGV[1])
  redis.call('del', KEYS[4])
  return redis.call('hget', KEYS[1], 'result')
end
if redis.call('hget', KEYS[1], 'state') ~= 'done' then
  redis.call('hset', KEYS[1], 'state', 'done', 'result', ARGV[2])
  redis.call('hincrby', KEYS[1], 'attempts', 1)
  redis.call('hdel', KEYS[1], 'error')
  redis.call('zrem', KEYS[2], ARGV[1])
  redis.call('zrem', KEYS[3], ARGV[1])
  redis.call('expire', KEYS[1], ARGV[3])
end
redis.call('del', KEYS[4])
return redis.call('hget', KEYS[1], 'result')
"""
_REVISE = """
if redis.call('hget', KEYS[1], 'payload') ~= ARGV[2] then return 0 end
redis.call('hset', KEYS[1], 'payload', ARGV[3])
if redis.call('hget', KEYS[1], 'state') == 'done' then
  redis.call('hset', KEYS[1], 'state', 'pending', 'next_at', ARGV[4], 'attempts', 0)
  redis.call('persist', KEYS[1])
  redis.call('zadd', KEYS[2], ARGV[4], ARGV[1])
end
return 1
"""
_SETTLE = """
if redis.call('get', KEYS[4]) ~= ARGV[2] or redis.call('hget', KEYS[1], 'state') ~= 'pending' then return 0 end
redis.call('hset', KEYS[1], 'error', ARGV[4], 'attempts', ARGV[5])
if ARGV[3] == 'failed' then
  redis.call('hset', KEYS[1], 'state', 'failed')
  redis.call('zrem', KEYS[2], ARGV[1])
  redis.call('zadd', KEYS[3], redis.call('hget', KEYS[1], 'created_at'), ARGV[1])
else
  redis.call('hset', KEYS[1], 'next_at', ARGV[6])
  redis.call('zadd', KEYS[2], ARGV[6], ARGV[1])
end
redis.call('del', KEYS[4])
return 1
"""
_RETRY = """
if redis.call('hget', KEYS[1], 'state') ~= 'failed' then return 0 end
redis.call('hset', KEYS[1], 'state', 'pending', 'next_at', ARGV[2], 'created_at', ARGV[2], 'attempts', 0)
redis.call('zrem', KEYS[3], ARGV[1])
redis.call('zadd', KEYS[2], ARGV[2], ARGV[1])
return 1
"""
_DROP = """
local state = redis.call('hget', KEYS[1], 'state')
if not state or state == 'done' then return 0 end
redis.call('del', KEYS[1])
redis.call('zrem', KEYS[2], ARGV[1])
redis.call('zrem', KEYS[3], ARGV[1])
return 1
"""


class RedisLedger(Ledger):
    """The rows in Redis, shared by every machine. Done results are kept for 30 days."""

    kind = "redis"
    RESULT_TTL_S = 30 * 24 * 3600

    def __init__(self, url: str):
        import redis

        self._redis = redis
        self.client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._due = keys.OUTBOX_DUE
        self._failed = keys.OUTBOX_FAILED
        self._scripts = {name: self.client.register_script(text) for name, text in (
            ("put", _PUT), ("claim", _CLAIM), ("renew", _RENEW), ("release", _RELEASE), ("finish", _FINISH),
            ("revise", _REVISE), ("settle", _SETTLE), ("retry", _RETRY), ("drop", _DROP))}

    def _item_key(self, key: str) -> str:
        return keys.outbox_item(key)

    def _claim_key(self, key: str) -> str:
        return keys.outbox_claim(key)

    def _call(self, name: str, keys: list[str], args: list):
        try:
            return self._scripts[name](keys=keys, args=args)
        except (self._redis.RedisError, OSError) as exc:
            raise OutboxUnavailable(f"the redis workflow store failed: {_reason(exc)}") from None

    def _do(self, method: str, *args):
        try:
            return getattr(self.client, method)(*args)
        except (self._redis.RedisError, OSError) as exc:
            raise OutboxUnavailable(f"the redis workflow store failed: {_reason(exc)}") from None

    def _decode(self, key: str, flat, owner: bytes | None = None, ttl_ms: int = -2) -> Item | None:
        data = dict(zip(flat[::2], flat[1::2], strict=False)) if isinstance(flat, list) else flat
        if not data:
            return None
        text = {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
                for k, v in data.items()}
        return Item(
            key=key, tenant=text.get("tenant", ""), backend=text.get("backend", ""),
            workflow=text.get("workflow", ""), payload=text.get("payload", "{}"), state=text.get("state", PENDING),
            result=decode_result(text.get("result")), attempts=int(text.get("attempts") or 0),
            created_at=float(text.get("created_at") or 0), next_at=float(text.get("next_at") or 0),
            error=text.get("error"), owner=owner.decode() if owner else None,
            lease_until=time.time() + ttl_ms / 1000 if owner and ttl_ms > 0 else 0.0,
        )

    def put(self, key: str, tenant: str, backend: str, workflow: str, payload: str, now: float) -> Item:
        # KEYS[3]: the result of the ledger before the outbox, which stays the answer
        flat = self._call("put", [self._item_key(key), self._due, keys.workflow_result(key)],
                          [key, tenant, backend, workflow, payload, repr(now), self.RESULT_TTL_S])
        item = self._decode(key, flat)
        if item is None:
            raise OutboxUnavailable("the workflow store lost an item it had just written")
        return item

    def get(self, key: str) -> Item | None:
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(self._item_key(key))
            pipe.get(self._claim_key(key))
            pipe.pttl(self._claim_key(key))
            data, owner, ttl = pipe.execute()
        except (self._redis.RedisError, OSError) as exc:
            raise OutboxUnavailable(f"the redis workflow store failed: {_reason(exc)}") from None
        return self._decode(key, data, owner, ttl)

    def get_many(self, keys: list[str]) -> dict[str, Item]:
        try:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(self._item_key(key))
            found = pipe.execute()
        except (self._redis.RedisError, OSError) as exc:
            raise OutboxUnavailable(f"the redis workflow store failed: {_reason(exc)}") from None
        items = {key: self._decode(key, data) for key, data in zip(keys, found, strict=True)}
        return {key: item for key, item in items.items() if item is not None}

    def claim(self, key: str, owner: str, now: float) -> bool:
        item = self.get(key)
        if item is None or not self.claimable(item, now):
            return False
        # the claim key expires by itself; a dead owner's key on this machine is replaced at once
        return bool(self._call("claim", [self._item_key(key), self._claim_key(key)],
                               [owner, int(LEASE_S * 1000), item.owner or ""]))

    def renew(self, keys: list[str], owner: str, now: float) -> set[str]:
        return {k for k in keys if self._call("renew", [self._claim_key(k)], [owner, int(LEASE_S * 1000)])}

    def due(self, now: float, limit: int) -> list[Item]:
        keys = self._do("zrangebyscore", self._due, "-inf", repr(now), 0, limit)
        items = [self.get(k.decode()) for k in keys]
        return [i for i in items if i is not None]

    def finish(self, key: str, result: WorkflowResult, delivered: str | None = None) -> WorkflowResult:
        raw = self._call("finish", [self._item_key(key), self._due, self._failed, self._claim_key(key)],
                         [key, encode_result(result), self.RESULT_TTL_S, delivered or "", repr(time.time())])
        return decode_result(raw) or result

    def revise(self, key: str, seen: str, payload: str, now: float) -> bool:
        return bool(self._call("revise", [self._item_key(key), self._due], [key, seen, payload, repr(now)]))

    def _settle(self, key: str, owner: str, state: str, error: str, attempts: int, next_at: float) -> None:
        self._call("settle", [self._item_key(key), self._due, self._failed, self._claim_key(key)],
                   [key, owner, state, error[:1000], attempts, repr(next_at)])

    def fail(self, key: str, owner: str, reason: str, attempts: int) -> None:
        self._settle(key, owner, FAILED, reason, attempts, 0.0)

    def reschedule(self, key: str, owner: str, next_at: float, error: str, attempts: int) -> None:
        self._settle(key, owner, PENDING, error, attempts, next_at)

    def release(self, key: str, owner: str) -> None:
        self._call("release", [self._claim_key(key)], [owner])

    def listing(self, states: tuple[str, ...], limit: int) -> list[Item]:
        keys: list[bytes] = []
        if PENDING in states:
            keys += self._do("zrange", self._due, 0, limit - 1)
        if FAILED in states:
            keys += self._do("zrange", self._failed, 0, limit - 1)
        items = [self.get(k.decode()) for k in keys]
        return sorted((i for i in items if i is not None and i.state in states), key=lambda i: i.created_at)[:limit]

    def retry(self, key: str, now: float) -> bool:
        return bool(self._call("retry", [self._item_key(key), self._due, self._failed], [key, repr(now)]))

    def drop(self, key: str) -> bool:
        return bool(self._call("drop", [self._item_key(key), self._due, self._failed], [key]))

    def backlog(self) -> tuple[int, float | None]:
        count = int(self._do("zcard", self._due))
        if not count:
            return 0, None
        # the due set is ordered by next attempt, not by age: read the creation times (bounded)
        keys = self._do("zrange", self._due, 0, 999)
        try:
            pipe = self.client.pipeline(transaction=False)
            for k in keys:
                pipe.hget(self._item_key(k.decode()), "created_at")
            created = [float(v) for v in pipe.execute() if v is not None]
        except (self._redis.RedisError, OSError) as exc:
            raise OutboxUnavailable(f"the redis workflow store failed: {_reason(exc)}") from None
        return count, min(created) if created else None

    def close(self) -> None:
        self.client.close()


def make_ledger(state_db: str, redis_url: str | None, database_url: str | None) -> Ledger:
    """PostgreSQL when ``database_url`` is set, else Redis when ``redis_url`` is, else SQLite."""
    if database_url:
        url = database_url
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                url = "postgresql+psycopg://" + url[len(prefix):]
        return SqlLedger(url)
    if redis_url:
        return RedisLedger(redis_url)
    return SqlLedger.sqlite(state_db)


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]
