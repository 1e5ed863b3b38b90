"""Protecting the deadline from sick backends: a circuit breaker and a rate limiter per backend."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass
class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; after ``cooldown`` seconds one trial request
    is let through (half-open): success closes it, failure opens it again."""

    threshold: int = 5
    cooldown: float = 30.0
    failures: int = 0
    opened_at: float | None = None
    trial_running: bool = False

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if time.monotonic() - self.opened_at >= self.cooldown:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        if self.opened_at is None:  # closed: the common case needs no lock
            return True
        with self._lock:
            state = self.state
            if state == "closed":
                return True
            if state == "half-open" and not self.trial_running:
                self.trial_running = True
                return True
            return False

    def record_success(self) -> None:
        if self.opened_at is None and not self.failures:
            return
        with self._lock:
            self.failures = 0
            self.opened_at = None
            self.trial_running = False

    def record_failure(self) -> None:
        with self._lock:
            self.failures += 1
            self.trial_running = False
            if self.opened_at is not None or self.failures >= self.threshold:
                self.opened_at = time.monotonic()


class RateLimiter:
    """Keeps a backend under ``rate`` requests a second and out of the way after a 429.

    In process: a token bucket. With Redis: a per-second counter shared by every process, since
    the vendor's limit is per credential, not per worker.
    """

    def __init__(self, rate: float | None, name: str, redis_client=None):
        self.rate = rate
        self.name = name
        self.redis = redis_client
        self._lock = threading.Lock()
        self._tokens = float(rate or 0)
        self._stamp = time.monotonic()
        self._blocked_until = 0.0  # wall clock, so it can be shared through Redis

    def block(self, seconds: float) -> None:
        """The source answered 429: send it nothing for ``seconds``."""
        until = time.time() + max(0.0, seconds)
        with self._lock:
            self._blocked_until = max(self._blocked_until, until)
        if self.redis is not None:
            try:
                self.redis.set(f"lookup:blocked:{self.name}", str(until), px=max(1, int(seconds * 1000)))
            except Exception:  # Redis down: the local block still applies
                pass

    def blocked_for(self) -> float:
        remaining = self._blocked_until - time.time()
        if remaining <= 0 and self.redis is not None:
            try:
                shared = self.redis.get(f"lookup:blocked:{self.name}")
            except Exception:  # Redis down: rely on the local state
                shared = None
            if shared:
                remaining = float(shared) - time.time()
        return max(0.0, remaining)

    def try_acquire(self) -> bool:
        if not self.rate and self.redis is None and self._blocked_until == 0.0:
            return True  # no limit and never asked to slow down: the common case
        if self.blocked_for() > 0:
            return False
        if not self.rate:
            return True
        if self.redis is not None:
            window = int(time.time())
            key = f"lookup:rate:{self.name}:{window}"
            try:
                count = self.redis.incr(key)
                if count == 1:
                    self.redis.expire(key, 2)
                return count <= max(1, int(self.rate))
            except Exception:  # Redis down: fall back to this process's own bucket
                pass
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.rate, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False
