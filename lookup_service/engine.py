"""The lookup engine: cache, single flight, parallel fan-out with a deadline, merge, rank, cap.

Every tenant's backends are asked at once; the answer leaves by the tenant's deadline with
whatever arrived. Work still running then goes on in the background and fills the cache, so the
next ring of the same number is answered from it. Concurrent lookups of one number share one call
per backend (in process always, across processes and machines with Redis).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from crm_backends.mirror import MirrorNotReady
from crm_backends.resilience import CircuitBreaker, RateLimiter
from lookup_core.errors import BackendUnavailable, CredentialsRejected, RateLimited
from lookup_core.phone import PhoneNumber
from lookup_core.types import Contact
from lookup_service.cache import MemoryCache, RedisCache
from lookup_service.metrics import Metrics
from lookup_service.schemas import EMPTY_ANSWER, ResponseFormat
from lookup_service.tenants import BackendSlot, Tenant

log = logging.getLogger(__name__)
# The answer must reach the connector by the deadline: waiting stops this much earlier, to leave
# time for the merge and for the way out through a worker whose threads are all busy.
SENDING_MARGIN_S = 0.02


class Flight:
    """One in-progress lookup of one number for one tenant, shared by concurrent requests.

    Each backend asked puts its contacts (or the exception it raised) into ``results``; when the
    last one has, ``body`` holds the full answer and the flight is done. A request waits for that
    until its own deadline, then answers with ``body`` or with whatever ``results`` holds. Most
    flights have no follower, so the event followers wait on is only made when one arrives.
    """

    __slots__ = ("key", "asked", "results", "skipped", "remote", "lock_token", "body", "pending", "lock",
                 "late_counted", "finished", "_event")

    def __init__(self, key: str):
        self.key = key
        self.asked: list[str] = []
        self.results: dict[str, list[Contact] | BaseException] = {}
        self.skipped: set[str] = set()
        self.remote = False  # another process holds the lock and computes; poll the shared cache
        self.lock_token: str | None = None
        self.body: bytes | None = None
        self.pending = 0
        self.lock = threading.Lock()
        self.late_counted = False
        self.finished = False
        self._event: threading.Event | None = None

    def set_done(self) -> None:
        with self.lock:
            self.finished = True
            event = self._event
        if event is not None:
            event.set()

    def wait(self, timeout: float) -> None:
        if self.finished:
            return
        with self.lock:
            if self.finished:
                return
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        event.wait(timeout)


class LookupEngine:
    def __init__(
        self,
        tenants: list[Tenant],
        cache: MemoryCache | RedisCache,
        formatter: ResponseFormat,
        metrics: Metrics,
        threads: int = 32,
        breaker_failures: int = 5,
        breaker_cooldown: float = 30.0,
    ):
        self.tenants = tenants
        self.cache = cache
        self.formatter = formatter
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="backend")
        self._flights: dict[str, Flight] = {}
        self._flights_lock = threading.Lock()
        redis_client = cache.client if isinstance(cache, RedisCache) else None
        self.breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self.limiters: dict[tuple[str, str], RateLimiter] = {}
        self._credential_alerts: set[tuple[str, str]] = set()
        self._not_ready_alerts: set[tuple[str, str]] = set()
        for tenant in tenants:
            for slot in tenant.slots:
                ident = (tenant.name, slot.name)
                self.breakers[ident] = CircuitBreaker(threshold=breaker_failures, cooldown=breaker_cooldown)
                self.limiters[ident] = RateLimiter(
                    slot.backend.rate_per_second, f"{tenant.name}:{slot.name}", redis_client
                )

    # --- public ------------------------------------------------------------------------------
    def lookup(self, tenant: Tenant, number: PhoneNumber) -> bytes:
        """The serialized JSON answer for ``number``: cached, or computed within the deadline."""
        key = self.cache_key(tenant, number)
        cached = self.cache.get(key)
        if cached is not None:
            self.metrics.lookup(tenant.name, "cache_hit")
            return cached
        self.metrics.cache_miss(tenant.name)
        if tenant.all_inline:
            return self._lookup_inline(tenant, number, key)
        deadline = time.monotonic() + tenant.deadline_s - min(SENDING_MARGIN_S, tenant.deadline_s / 10)
        flight, leader = self._join(key)
        if leader:
            self._launch(tenant, number, flight)
            if flight.remote:
                return self._await_remote(tenant, flight, deadline)
        return self._answer(tenant, flight, deadline)

    def cache_key(self, tenant: Tenant, number: PhoneNumber) -> str:
        return f"{tenant.name}|{number.key}|{tenant.data_version()}"

    def forget(self, tenant: Tenant, number: PhoneNumber) -> None:
        """Drop the cached answer for ``number`` (a contact was just created with it): in this
        process, and with Redis in every process and machine."""
        key = self.cache_key(tenant, number)
        self.cache.delete(key)
        self.cache.delete("partial:" + key)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    def breaker_states(self) -> dict[tuple[str, str], str]:
        return {ident: breaker.state for ident, breaker in self.breakers.items()}

    def _lookup_inline(self, tenant: Tenant, number: PhoneNumber, key: str) -> bytes:
        """Every backend is a local index: ask each in turn, in this thread.

        A local query costs less than the single-flight bookkeeping (or a Redis lock) would, and
        it cannot outlast the deadline, so there is no flight to share and nothing to wait for.
        """
        results: list[tuple[BackendSlot, list[Contact]]] = []
        failed = skipped = not_ready = False
        for slot in tenant.slots:
            if not self._admit(tenant, slot):
                skipped = True
                continue
            try:
                results.append((slot, self._call(tenant, slot, number)))
            except MirrorNotReady:
                not_ready = True
            except Exception:  # logged and counted by _call
                failed = True
        body = self._merge(tenant, results)
        if not not_ready:
            self.cache.set(key, body, self._ttl(tenant, body, failed or skipped))
        failed = failed or not_ready
        self.metrics.lookup(tenant.name, _outcome(body, failed or skipped))
        return body

    def _admit(self, tenant: Tenant, slot: BackendSlot) -> bool:
        """Whether the backend may be asked now: under its rate limit and its breaker closed."""
        ident = (tenant.name, slot.name)
        if not self.limiters[ident].try_acquire():
            self.metrics.backend_skipped(tenant.name, slot.name, "rate_limited")
            return False
        if not self.breakers[ident].allow():
            self.metrics.backend_skipped(tenant.name, slot.name, "breaker_open")
            return False
        return True

    @staticmethod
    def _ttl(tenant: Tenant, body: bytes, incomplete: bool) -> float:
        if incomplete:  # a missing backend may hold the answer: keep it briefly
            return min(tenant.negative_cache_ttl, tenant.cache_ttl)
        return tenant.negative_cache_ttl if body == EMPTY_ANSWER else tenant.cache_ttl

    # --- single flight -------------------------------------------------------------------------
    def _join(self, key: str) -> tuple[Flight, bool]:
        with self._flights_lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = Flight(key=key)
            return flight, True

    def _finish(self, flight: Flight) -> None:
        with self._flights_lock:
            if self._flights.get(flight.key) is flight:
                del self._flights[flight.key]

    def _launch(self, tenant: Tenant, number: PhoneNumber, flight: Flight) -> None:
        if self.cache.shared:
            try:
                flight.lock_token = self.cache.acquire(flight.key, tenant.deadline_s * 3 + 1.0)
            except Exception as exc:  # Redis down: lookups go on without cross-process sharing
                log.warning("single-flight lock unavailable: %s", exc)
                flight.lock_token = ""
            if flight.lock_token is None:
                flight.remote = True
                return
        inline: list[BackendSlot] = []
        remote: list[BackendSlot] = []
        for slot in tenant.slots:
            if not self._admit(tenant, slot):
                flight.skipped.add(slot.name)
            else:
                (inline if slot.inline else remote).append(slot)
                flight.asked.append(slot.name)
        flight.pending = len(flight.asked)
        if not flight.asked:
            self._complete(tenant, flight)
            return
        for slot in remote:
            self.executor.submit(self._run, tenant, slot, number, flight)
        for slot in inline:  # local and fast: run here, after the remote calls are on their way
            self._run(tenant, slot, number, flight)

    def _run(self, tenant: Tenant, slot: BackendSlot, number: PhoneNumber, flight: Flight) -> None:
        """Ask one backend and record its result in the flight; the last one completes it."""
        try:
            result: list[Contact] | BaseException = self._call(tenant, slot, number)
        except Exception as exc:  # recorded; _call has logged and counted it
            result = exc
        with flight.lock:
            flight.results[slot.name] = result
            flight.pending -= 1
            last = flight.pending == 0
        if last:
            self._complete(tenant, flight)

    def _complete(self, tenant: Tenant, flight: Flight) -> None:
        """All backends have answered (or failed): cache the full answer, end the flight."""
        try:
            results, failed = self._collect(tenant, flight.results)
            body = flight.body = self._merge(tenant, results)
            if not any(isinstance(r, MirrorNotReady) for r in flight.results.values()):
                self.cache.set(flight.key, body, self._ttl(tenant, body, bool(failed or flight.skipped)))
        except Exception:
            log.exception("caching the answer for tenant %s failed", tenant.name)
        finally:
            flight.set_done()
            if flight.lock_token:
                try:
                    self.cache.release(flight.key, flight.lock_token)
                except Exception:
                    log.warning("could not release the single-flight lock (it expires by itself)")
            self._finish(flight)

    # --- answering ---------------------------------------------------------------------------
    def _answer(self, tenant: Tenant, flight: Flight, deadline: float) -> bytes:
        flight.wait(max(0.0, deadline - time.monotonic()))
        if flight.remote:  # our leader waited on another process's answer and shares it
            self.metrics.lookup(tenant.name, "shared_flight" if flight.body else "partial_empty")
            return flight.body or EMPTY_ANSWER
        body = flight.body
        if body is not None:
            failed = any(isinstance(r, BaseException) for r in flight.results.values())
            late: list[str] = []
        else:
            snapshot = dict(flight.results)
            results, failed = self._collect(tenant, snapshot)
            late = [name for name in flight.asked if name not in snapshot]
            body = self._merge(tenant, results)
            with flight.lock:
                count_late, flight.late_counted = not flight.late_counted, True
            if count_late:  # a backend that never returns must still open its breaker
                for name in late:
                    self.breakers[(tenant.name, name)].record_failure()
            log.warning("tenant %s: answered at the deadline without %s", tenant.name, ", ".join(late))
            for name in late:
                self.metrics.backend_skipped(tenant.name, name, "late")
            if self.cache.shared:  # let other processes waiting on our lock answer with it too
                self.cache.set("partial:" + flight.key, body, tenant.deadline_s * 3)
        self.metrics.lookup(tenant.name, _outcome(body, bool(late or failed or flight.skipped)))
        return body

    def _await_remote(self, tenant: Tenant, flight: Flight, deadline: float) -> bytes:
        """Another process computes this answer: poll the shared cache for it, for this process's
        followers too, until the deadline (then take the other process's partial answer)."""
        assert isinstance(self.cache, RedisCache)
        body = None
        try:
            body = self.cache.wait_for(flight.key, deadline)
            if body is None:
                body = self.cache.get("partial:" + flight.key)
        finally:
            flight.body = body
            flight.set_done()
            self._finish(flight)
        self.metrics.lookup(tenant.name, "shared_flight" if body is not None else "partial_empty")
        return body if body is not None else EMPTY_ANSWER

    @staticmethod
    def _collect(
        tenant: Tenant, results: dict[str, list[Contact] | BaseException]
    ) -> tuple[list[tuple[BackendSlot, list[Contact]]], bool]:
        """The contacts that arrived, in backend order, and whether a backend failed."""
        collected = []
        failed = False
        for slot in tenant.slots:
            result = results.get(slot.name)
            if isinstance(result, BaseException):
                failed = True
            elif result is not None:
                collected.append((slot, result))
        return collected, failed

    def _merge(self, tenant: Tenant, results: list[tuple[BackendSlot, list[Contact]]]) -> bytes:
        """De-duplicate, rank (exact match, backend order, recent activity) and cap."""
        if len(results) == 1 and len(results[0][1]) <= 1:  # the common answer: nothing to rank
            slot, contacts = results[0]
            kept = [(slot, contact) for contact in contacts]
        else:
            kept = self._ranked(tenant, results)
        if not kept:
            return EMPTY_ANSWER
        return self.formatter.dumps(
            self.formatter.contact(c, f"{s.name}:{c.id}", s.crm_name, s.crm_logo, s.workflows) for s, c in kept
        )

    @staticmethod
    def _ranked(tenant: Tenant, results: list[tuple[BackendSlot, list[Contact]]]) -> list[tuple[BackendSlot, Contact]]:
        entries = [(slot, contact) for slot, contacts in results for contact in contacts]
        entries.sort(
            key=lambda e: (
                not e[1].exact,
                e[0].position,
                -(e[1].last_activity.timestamp() if e[1].last_activity else float("-inf")),
            )
        )
        kept: list[tuple[BackendSlot, Contact]] = []
        seen_ids: set[tuple[str, str]] = set()
        by_name: dict[str, int] = {}  # normalized name -> index in kept
        for slot, contact in entries:
            ident = (slot.name, contact.id)
            if ident in seen_ids:
                continue
            seen_ids.add(ident)
            name = " ".join((contact.name or "").casefold().split())
            index = by_name.get(name) if name else None
            if index is not None and kept[index][0] is not slot:
                kept[index] = (kept[index][0], _with_missing_filled(kept[index][1], contact))
                continue
            if name and index is None:
                by_name[name] = len(kept)
            kept.append((slot, contact))
            if len(kept) == tenant.max_results:
                break
        return kept

    # --- one backend call --------------------------------------------------------------------
    def _call(self, tenant: Tenant, slot: BackendSlot, number: PhoneNumber) -> list[Contact]:
        ident = (tenant.name, slot.name)
        breaker = self.breakers[ident]
        started = time.perf_counter()
        try:
            contacts = slot.backend.lookup(number, tenant.max_results)
        except MirrorNotReady as exc:  # no answer yet, not a failure: the breaker stays as it is
            self.metrics.backend_skipped(tenant.name, slot.name, "not_synced")
            if ident not in self._not_ready_alerts:  # one line saying why, not one per ring
                self._not_ready_alerts.add(ident)
                log.warning("backend %s/%s: %s; answers leave without it and are not cached until it has",
                            tenant.name, slot.name, exc)
            raise
        except RateLimited as exc:
            pause = exc.retry_after if exc.retry_after is not None else 1.0
            self.limiters[ident].block(pause)
            self.metrics.backend_error(tenant.name, slot.name, "rate_limited")
            log.warning("backend %s/%s asked to slow down for %.1fs", tenant.name, slot.name, pause)
            raise
        except CredentialsRejected as exc:
            breaker.record_failure()
            self.metrics.backend_error(tenant.name, slot.name, "credentials")
            if ident not in self._credential_alerts:  # one clear line, not one per ring
                self._credential_alerts.add(ident)
                log.error("backend %s/%s rejected its credentials: %s", tenant.name, slot.name, exc)
            raise
        except BackendUnavailable as exc:
            breaker.record_failure()
            self.metrics.backend_error(tenant.name, slot.name, "unavailable")
            log.warning("backend %s/%s unavailable: %s", tenant.name, slot.name, exc)
            raise
        except Exception:
            breaker.record_failure()
            self.metrics.backend_error(tenant.name, slot.name, "bug")
            log.exception("backend %s/%s failed unexpectedly", tenant.name, slot.name)
            raise
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.backend_latency(tenant.name, slot.name, elapsed)
        self._credential_alerts.discard(ident)
        self._not_ready_alerts.discard(ident)
        if elapsed <= tenant.deadline_s:  # a late answer was already counted as a failure
            breaker.record_success()
        return contacts


def _outcome(body: bytes, incomplete: bool) -> str:
    """The lookup's label in the metrics: found or empty, partial when a backend was missing."""
    outcome = "found" if body != EMPTY_ANSWER else "empty"
    return "partial_" + outcome if incomplete else outcome


def _with_missing_filled(kept: Contact, duplicate: Contact) -> Contact:
    """A copy of ``kept`` completed with what only the duplicate from another backend knows."""
    changes = {
        attribute: getattr(duplicate, attribute)
        for attribute in ("company", "contact_uri", "company_uri", "email")
        if not getattr(kept, attribute) and getattr(duplicate, attribute)
    }
    return replace(kept, custom_data={**duplicate.custom_data, **kept.custom_data}, **changes)
