"""Protecting the deadline from sick backends: a circuit breaker and a rate limiter per backend."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol


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


class SharedCounters(Protocol):
    """What rate limiters share between processes (``lookup_service.cache.RedisCache``). Its
    methods may raise when the store is down: the limiter then goes on with its own state."""

    def count_request(self, name: str, window: int) -> int:
        """Count one request to backend ``name`` in the second ``window``; the count so far."""

    def set_blocked(self, name: str, until: float, seconds: float) -> None:
        """Backend ``name`` asked to be sent nothing until the wall-clock time ``until``."""

    def blocked_until(self, name: str) -> float | None:
        """The wall-clock time until which ``name`` is blocked, or None."""


class RateLimiter:
    """Keeps a backend under ``rate`` requests a second and out of the way after a 429.

    In process: a token bucket. With shared counters (Redis): a per-second counter shared by
    every process, since the vendor's limit is per credential, not per worker.
    """

    def __init__(self, rate: float | None, name: str, shared: SharedCounters | None = None):
        self.rate = rate
        self.name = name
        self.shared = shared
        self._lock = threading.Lock()
        self._tokens = float(rate or 0)
        self._stamp = time.monotonic()
        self._blocked_until = 0.0  # wall clock, so it can be shared between processes

    def block(self, seconds: float) -> None:
        """The source answered 429: send it nothing for ``seconds``."""
        until = time.time() + max(0.0, seconds)
        with self._lock:
            self._blocked_until = max(self._blocked_until, until)
        if self.shared is not None:
            try:
                self.shared.set_blocked(self.name, until, seconds)
            except Exception:  # Redis down: the local block still applies
                pass

    def blocked_for(self) -> float:
        remaining = self._blocked_until - time.time()
        if remaining <= 0 and self.shared is not None:
            try:
                shared = self.shared.blocked_until(self.name)
            except Exception:  # Redis down: rely on the local state
                shared = None
            if shared:
                remaining = shared - time.time()
        return max(0.0, remaining)

    def try_acquire(self) -> bool:
        if not self.rate and self.shared is None and self._blocked_until == 0.0:
            return True  # no limit and never asked to slow down: the common case
        if self.blocked_for() > 0:
            return False
        if not self.rate:
            return True
        if self.shared is not None:
            try:
                return self.shared.count_request(self.name, int(time.time())) <= max(1, int(self.rate))
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
