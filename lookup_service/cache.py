"""The answer cache and the cross-process coordination that goes with it, behind one interface.

The engine sees only :class:`Coordination`: cached answers (opaque bytes, so a hit costs no
serialization and a cached entry is no object the garbage collector walks), single-flight locks,
the shared per-second request counters and 429 blocks of the rate limiters, and a health check.
In process by default (a dict per generation of entries); in Redis when ``REDIS_URL`` is set, so every gunicorn worker
and every machine behind the router shares the cache, the locks and the counters. Redis key
names come from :mod:`lookup_service.keys`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Protocol

from crm_backends.resilience import SharedCounters
from lookup_service import keys

log = logging.getLogger(__name__)
_last_warning = [0.0]


def _warn(message: str) -> None:
    """At most one warning every 10 s: an outage must not flood the log."""
    now = time.monotonic()
    if now - _last_warning[0] > 10:
        _last_warning[0] = now
        log.warning(message)


class Coordination(SharedCounters, Protocol):
    """The engine's cache and coordination. ``shared``: whether other processes see the same
    entries, locks and counters (Redis); if not, the in-process single flight is all there is."""

    shared: bool

    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes, ttl: float) -> None: ...

    def acquire(self, key: str, ttl: float) -> str | None:
        """Take the single-flight lock of ``key`` for ``ttl`` seconds: a token to release it
        with, or None when another process holds it (and will fill the cache)."""

    def release(self, key: str, token: str) -> None: ...

    def wait_for(self, key: str, until: float) -> bytes | None:
        """The entry ``key`` once another process has set it, waiting at most until the monotonic
        time ``until``; None if it did not come."""

    def set_partial(self, key: str, value: bytes, ttl: float) -> None:
        """The answer given at the deadline without every backend, for the processes waiting on
        this one's lock; never a cache hit."""

    def get_partial(self, key: str) -> bytes | None: ...

    def ping(self) -> None:
        """Raises when the shared store cannot be reached."""

    def close(self) -> None: ...


class MemoryCache:
    """Per-entry TTL cache local to this process. ``shared`` is False: no cross-process locks or
    counters (the rate limiters use their own token buckets).

    An entry is a tuple ``(expires, value)`` of a float and bytes in a plain dict: the garbage
    collector untracks such tuples, and then the dict, so a full cache adds nothing to a full
    collection (a ``cachetools.TLRUCache`` of 100,000 entries, one tracked item object each plus
    its heap, added about 10 ms to each). The size is bounded by generations rather than by
    evicting entries one at a time: new entries go into ``_young``; when it holds half the maximum
    it becomes ``_old`` and the previous old half is dropped whole. A read takes no lock.
    """

    shared = False

    def __init__(self, maxsize: int = 100_000):
        self._half = max(1, maxsize // 2)
        self._young: dict[str, tuple[float, bytes]] = {}
        self._old: dict[str, tuple[float, bytes]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        entry = self._young.get(key) or self._old.get(key)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        return None

    def set(self, key: str, value: bytes, ttl: float) -> None:
        if ttl <= 0:
            return
        entry = (time.monotonic() + ttl, value)
        with self._lock:
            if len(self._young) >= self._half and key not in self._young:
                self._old, self._young = self._young, {}
            self._young[key] = entry
            self._old.pop(key, None)

    # In process the in-process single flight suffices: the lock is always ours, nobody else
    # computes an answer to wait for, and there is no other process to share counters with.
    def acquire(self, key: str, ttl: float) -> str | None:
        return "local"

    def release(self, key: str, token: str) -> None:
        return None

    def wait_for(self, key: str, until: float) -> bytes | None:
        return self.get(key)

    def set_partial(self, key: str, value: bytes, ttl: float) -> None:
        return None

    def get_partial(self, key: str) -> bytes | None:
        return None

    def count_request(self, name: str, window: int) -> int:
        raise NotImplementedError("an in-process cache shares no counters; use a local bucket")

    def set_blocked(self, name: str, until: float, seconds: float) -> None:
        return None

    def blocked_until(self, name: str) -> float | None:
        return None

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None


class RedisCache:
    """The same interface on Redis: ``SET PX`` entries, ``SET NX PX`` single-flight locks released
    by a script only by their holder, ``INCR`` counters per second."""

    shared = True
    _RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"

    def __init__(self, url: str):
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._errors = (redis.RedisError, OSError)
        self._release = self.client.register_script(self._RELEASE)

    def get(self, key: str) -> bytes | None:
        return self._get(keys.answer(key))

    def set(self, key: str, value: bytes, ttl: float) -> None:
        self._set(keys.answer(key), value, ttl)

    def _get(self, name: str) -> bytes | None:
        try:
            return self.client.get(name)
        except self._errors as exc:  # Redis down: a miss, the lookup still answers
            _warn(f"redis unavailable, cache bypassed: {exc}")
            return None

    def _set(self, name: str, value: bytes, ttl: float) -> None:
        if ttl <= 0:
            return
        try:
            self.client.set(name, value, px=max(1, int(ttl * 1000)))
        except self._errors as exc:
            _warn(f"redis unavailable, answer not cached: {exc}")

    def set_partial(self, key: str, value: bytes, ttl: float) -> None:
        self._set(keys.partial_answer(key), value, ttl)

    def get_partial(self, key: str) -> bytes | None:
        return self._get(keys.partial_answer(key))

    def acquire(self, key: str, ttl: float) -> str | None:
        token = uuid.uuid4().hex
        if self.client.set(keys.flight_lock(key), token, nx=True, px=max(1, int(ttl * 1000))):
            return token
        return None

    def release(self, key: str, token: str) -> None:
        self._release(keys=[keys.flight_lock(key)], args=[token])

    def wait_for(self, key: str, until: float, interval: float = 0.005) -> bytes | None:
        """Poll for ``key`` until the monotonic time ``until`` (bounded by it)."""
        while True:
            value = self.get(key)
            if value is not None or time.monotonic() >= until:
                return value
            time.sleep(min(interval, max(0.0, until - time.monotonic())))

    # Errors propagate from here: the rate limiter falls back to its own bucket and block.
    def count_request(self, name: str, window: int) -> int:
        key = keys.rate_window(name, window)
        count = self.client.incr(key)
        if count == 1:
            self.client.expire(key, 2)
        return count

    def set_blocked(self, name: str, until: float, seconds: float) -> None:
        self.client.set(keys.blocked(name), str(until), px=max(1, int(seconds * 1000)))

    def blocked_until(self, name: str) -> float | None:
        value = self.client.get(keys.blocked(name))
        return float(value) if value else None

    def ping(self) -> None:
        self.client.ping()

    def close(self) -> None:
        self.client.close()


def make_cache(redis_url: str | None) -> Coordination:
    return RedisCache(redis_url) if redis_url else MemoryCache()
