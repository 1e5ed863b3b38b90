"""The answer cache and the cross-process coordination that goes with it.

Entries are the serialized JSON bytes of a lookup answer, so a hit costs no serialization.
In process by default (cachetools); in Redis when ``REDIS_URL`` is set, so every gunicorn worker
and every machine behind the router shares the cache and the single-flight locks.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from cachetools import TLRUCache

log = logging.getLogger(__name__)
_last_warning = [0.0]


def _warn(message: str) -> None:
    """At most one warning every 10 s: an outage must not flood the log."""
    now = time.monotonic()
    if now - _last_warning[0] > 10:
        _last_warning[0] = now
        log.warning(message)


class MemoryCache:
    """Per-entry TTL cache local to this process. ``shared`` is False: no cross-process locks."""

    shared = False

    def __init__(self, maxsize: int = 100_000):
        self._cache: TLRUCache = TLRUCache(maxsize=maxsize, ttu=lambda _key, value, now: now + value[1])
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._cache.get(key)
        return entry[0] if entry is not None else None

    def set(self, key: str, value: bytes, ttl: float) -> None:
        if ttl <= 0:
            return
        with self._lock:
            self._cache[key] = (value, ttl)

    def delete(self, key: str) -> None:
        with self._lock:
            self._cache.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    # Cross-process coordination is a no-op in process: the in-process single flight suffices.
    def acquire(self, key: str, ttl: float) -> str | None:
        return "local"

    def release(self, key: str, token: str) -> None:
        return None

    def close(self) -> None:
        return None


class RedisCache:
    """The same interface on Redis: ``SET PX`` entries and ``SET NX PX`` single-flight locks."""

    shared = True
    _RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"

    def __init__(self, url: str, prefix: str = "lookup:"):
        import redis

        self.prefix = prefix
        self.client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._errors = (redis.RedisError, OSError)
        self._release = self.client.register_script(self._RELEASE)

    def get(self, key: str) -> bytes | None:
        try:
            return self.client.get(self.prefix + key)
        except self._errors as exc:  # Redis down: a miss, the lookup still answers
            _warn(f"redis unavailable, cache bypassed: {exc}")
            return None

    def set(self, key: str, value: bytes, ttl: float) -> None:
        if ttl <= 0:
            return
        try:
            self.client.set(self.prefix + key, value, px=max(1, int(ttl * 1000)))
        except self._errors as exc:
            _warn(f"redis unavailable, answer not cached: {exc}")

    def delete(self, key: str) -> None:
        try:
            self.client.delete(self.prefix + key, self.prefix + "partial:" + key)
        except self._errors as exc:
            _warn(f"redis unavailable, cached answer not dropped: {exc}")

    def clear(self) -> None:
        for name in self.client.scan_iter(match=self.prefix + "*", count=1000):
            self.client.delete(name)

    def acquire(self, key: str, ttl: float) -> str | None:
        """Take the lock named ``key`` for ``ttl`` seconds; None when another process holds it."""
        token = uuid.uuid4().hex
        if self.client.set(self.prefix + "lock:" + key, token, nx=True, px=max(1, int(ttl * 1000))):
            return token
        return None

    def release(self, key: str, token: str) -> None:
        self._release(keys=[self.prefix + "lock:" + key], args=[token])

    def wait_for(self, key: str, until: float, interval: float = 0.005) -> bytes | None:
        """Poll for ``key`` until the monotonic time ``until`` (bounded by it)."""
        while True:
            value = self.get(key)
            if value is not None or time.monotonic() >= until:
                return value
            time.sleep(min(interval, max(0.0, until - time.monotonic())))

    def close(self) -> None:
        self.client.close()


def make_cache(redis_url: str | None) -> MemoryCache | RedisCache:
    return RedisCache(redis_url) if redis_url else MemoryCache()
