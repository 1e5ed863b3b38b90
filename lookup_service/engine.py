"""The lookup engine: cache, single flight, parallel fan-out with a deadline, merge, rank, cap.

Every tenant's backends are asked at once; the answer leaves by the tenant's deadline with
whatever arrived. Work still running then goes on in the background and fills the cache, so the
next ring of the same number is answered from it. Concurrent lookups of one number share one call
per backend (in process always, across processes and machines with Redis).

The engine answers with contacts (:class:`Answer`). It knows no output format: the web layer
gives it a ``render`` function, and what the cache keeps, and what a cache hit returns, is that
function's rendering of an answer, so a hit costs neither a query nor a serialization, and a cached
entry is one ``bytes`` object, which the garbage collector does not walk.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import NamedTuple

from crm_backends.mirror import MirrorNotReady
from crm_backends.resilience import CircuitBreaker, RateLimiter
from lookup_core.errors import BackendUnavailable, CredentialsRejected, RateLimited
from lookup_core.phone import PhoneNumber
from lookup_core.types import Contact
from lookup_service.cache import Coordination
from lookup_service.metrics import Metrics
from lookup_service.tenants import BackendSlot, Tenant

log = logging.getLogger(__name__)
# The answer must reach the connector by the deadline: waiting stops this much earlier, to leave
# time for the merge and for the way out through a worker whose threads are all busy.
SENDING_MARGIN_S = 0.02


class Match(NamedTuple):
    """One contact of an answer and the backend (slot) it came from."""

    contact: Contact
    source: BackendSlot

    @property
    def public_id(self) -> str:
        """The contact's id as the connector sees it: the backend's name, then the backend's own id
        (a workflow call is routed to the backend by it)."""
        return f"{self.source.name}:{self.contact.id}"


class Answer(NamedTuple):
    """The contacts that match a number, ranked and capped; ``complete`` unless a backend failed,
    was skipped or missed the deadline (such an answer is cached only briefly, if at all)."""

    matches: tuple[Match, ...] = ()
    complete: bool = True

    @property
    def outcome(self) -> str:
        """The label of the lookup in the metrics: found or empty, partial when incomplete."""
        outcome = "found" if self.matches else "empty"
        return outcome if self.complete else "partial_" + outcome


Render = Callable[[Answer], bytes]


class Flight:
    """One in-progress lookup of one number for one tenant, shared by concurrent requests.

    Each backend asked puts its contacts (or the exception it raised) into ``results``; when the
    last one has, ``answer`` holds the full answer, ``body`` its rendering, and the flight is
    done. A request waits for that until its own deadline, then answers with it or with whatever
    ``results`` holds. A remote flight (another process asks the backends) only ever gets a
    ``body``, from the shared cache. Most flights have no follower, so the event followers wait on
    is only made when one arrives.
    """

    __slots__ = ("key", "asked", "results", "skipped", "remote", "lock_token", "answer", "body", "pending", "lock",
                 "late_counted", "finished", "_event")

    def __init__(self, key: str):
        self.key = key
        self.asked: list[str] = []
        self.results: dict[str, list[Contact] | BaseException] = {}
        self.skipped: set[str] = set()
        self.remote = False  # another process holds the lock and computes; poll the shared cache
        self.lock_token: str | None = None
        self.answer: Answer | None = None
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
    """``render`` turns an answer into what :meth:`lookup_rendered` returns and the cache keeps
    (the web layer's JSON); ``cache`` is the cache and coordination (in process or Redis)."""

    def __init__(
        self,
        tenants: list[Tenant],
        cache: Coordination,
        render: Render,
        metrics: Metrics,
        threads: int = 32,
        breaker_failures: int = 5,
        breaker_cooldown: float = 30.0,
    ):
        self.tenants = tenants
        self.cache = cache
        self.render = render
        self.metrics = metrics
        self._empty = render(Answer())  # what a remote flight that brought nothing answers
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="backend")
        self._flights: dict[str, Flight] = {}
        self._flights_lock = threading.Lock()
        counters = cache if cache.shared else None  # else each limiter keeps its own bucket
        self.breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self.limiters: dict[tuple[str, str], RateLimiter] = {}
        self._credential_alerts: set[tuple[str, str]] = set()
        self._not_ready_alerts: set[tuple[str, str]] = set()
        for tenant in tenants:
            for slot in tenant.slots:
                ident = (tenant.name, slot.name)
                self.breakers[ident] = CircuitBreaker(threshold=breaker_failures, cooldown=breaker_cooldown)
                self.limiters[ident] = RateLimiter(slot.backend.rate_per_second, f"{tenant.name}:{slot.name}", counters)

    # --- public ------------------------------------------------------------------------------
    def lookup_rendered(self, tenant: Tenant, number: PhoneNumber) -> bytes:
        """The answer for ``number`` as ``render`` renders it: from the cache, or computed within the
        deadline (and cached). The connector's path: a cache hit is one dictionary or Redis read."""
        key = self.cache_key(tenant, number)
        cached = self.cache.get(key)
        if cached is not None:
            self.metrics.lookup(tenant.name, "cache_hit")
            return cached
        self.metrics.cache_miss(tenant.name)
        if tenant.all_inline:
            answer, body = self._lookup_inline(tenant, number, key)
            return body if body is not None else self.render(answer)
        deadline = time.monotonic() + tenant.deadline_s - min(SENDING_MARGIN_S, tenant.deadline_s / 10)
        flight, leader = self._join(key)
        if leader:
            self._launch(tenant, number, flight, shared=True)
            if flight.remote:
                return self._await_remote(tenant, flight, deadline)
        flight.wait(max(0.0, deadline - time.monotonic()))
        if flight.remote:  # our leader waited on another process's answer and shares it
            self.metrics.lookup(tenant.name, "shared_flight" if flight.body else "partial_empty")
            return flight.body or self._empty
        answer = self._answer(tenant, flight)
        if answer is flight.answer and flight.body is not None:  # the full answer, rendered once
            return flight.body
        return self.render(answer)

    def lookup(self, tenant: Tenant, number: PhoneNumber) -> Answer:
        """The contacts for ``number``, asked of the backends now, within the deadline.

        For callers that want contacts rather than the connector's bytes (the command line): the
        cache is not read (it holds renderings), though a complete answer is still cached for the
        connector. Concurrent lookups of the connector's path are not joined, nor is another
        process waited for: a fresh answer, for one caller.
        """
        key = self.cache_key(tenant, number)
        if tenant.all_inline:
            return self._lookup_inline(tenant, number, key)[0]
        deadline = time.monotonic() + tenant.deadline_s - min(SENDING_MARGIN_S, tenant.deadline_s / 10)
        flight = Flight(key)  # not registered: no other request joins it
        self._launch(tenant, number, flight, shared=False)
        flight.wait(max(0.0, deadline - time.monotonic()))
        return self._answer(tenant, flight)

    def cache_key(self, tenant: Tenant, number: PhoneNumber) -> str:
        return f"{tenant.name}|{number.key}|{tenant.data_version()}"

    def forget(self, tenant: Tenant, number: PhoneNumber) -> None:
        """Drop the cached answer for ``number`` (a contact was just created with it): in this
        process, and with Redis in every process and machine."""
        self.cache.delete(self.cache_key(tenant, number))

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    def breaker_states(self) -> dict[tuple[str, str], str]:
        return {ident: breaker.state for ident, breaker in self.breakers.items()}

    def _lookup_inline(self, tenant: Tenant, number: PhoneNumber, key: str) -> tuple[Answer, bytes | None]:
        """Every backend is a local index: ask each in turn, in this thread. The answer, and its
        rendering if it was cached.

        A local query costs less than the single-flight bookkeeping (or a Redis lock) would, and
        it cannot outlast the deadline, so there is no flight to share and nothing to wait for.
        """
        results: list[tuple[BackendSlot, list[Contact]]] = []
        failed = skipped = not_ready = False
        for slot in tenant.slots:
            if not self.admit(tenant, slot):
                skipped = True
                continue
            try:
                results.append((slot, self._call(tenant, slot, number)))
            except MirrorNotReady:
                not_ready = True
            except Exception:  # logged and counted by _call
                failed = True
        answer = self._merge(tenant, results, not (failed or skipped or not_ready))
        body = None if not_ready else self._store(tenant, key, answer)
        self.metrics.lookup(tenant.name, answer.outcome)
        return answer, body

    def admit(self, tenant: Tenant, slot: BackendSlot) -> bool:
        """Whether the backend may be asked now: under its rate limit and its breaker closed."""
        ident = (tenant.name, slot.name)
        if not self.limiters[ident].try_acquire():
            self.metrics.backend_skipped(tenant.name, slot.name, "rate_limited")
            return False
        if not self.breakers[ident].allow():
            self.metrics.backend_skipped(tenant.name, slot.name, "breaker_open")
            return False
        return True

    def _store(self, tenant: Tenant, key: str, answer: Answer) -> bytes | None:
        """Cache the rendering of ``answer`` for as long as it may be trusted; the rendering, or
        None when nothing was cached (then nothing was rendered either)."""
        if not answer.complete:  # a missing backend may hold the answer: keep it briefly
            ttl = min(tenant.negative_cache_ttl, tenant.cache_ttl)
        else:
            ttl = tenant.cache_ttl if answer.matches else tenant.negative_cache_ttl
        if ttl <= 0:
            return None
        body = self.render(answer)
        self.cache.set(key, body, ttl)
        return body

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

    def _launch(self, tenant: Tenant, number: PhoneNumber, flight: Flight, shared: bool) -> None:
        """Ask the backends for the flight. ``shared``: the flight is the connector's, which the
        other processes may join (with a shared cache, through its lock)."""
        if shared and self.cache.shared:
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
            if not self.admit(tenant, slot):
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
            answer = flight.answer = self._merge(tenant, results, not (failed or flight.skipped))
            if not any(isinstance(r, MirrorNotReady) for r in flight.results.values()):
                flight.body = self._store(tenant, flight.key, answer)
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
    def _answer(self, tenant: Tenant, flight: Flight) -> Answer:
        """The answer of a local flight waited on: the full answer if complete, else what it holds
        now, at the deadline."""
        answer = flight.answer
        if answer is not None:
            self.metrics.lookup(tenant.name, answer.outcome)
            return answer
        snapshot = dict(flight.results)
        results, failed = self._collect(tenant, snapshot)
        late = [name for name in flight.asked if name not in snapshot]
        answer = self._merge(tenant, results, not (late or failed or flight.skipped))
        with flight.lock:
            count_late, flight.late_counted = not flight.late_counted, True
        if count_late:  # a backend that never returns must still open its breaker
            for name in late:
                self.breakers[(tenant.name, name)].record_failure()
        log.warning("tenant %s: answered at the deadline without %s", tenant.name, ", ".join(late))
        for name in late:
            self.metrics.backend_skipped(tenant.name, name, "late")
        if flight.lock_token and self.cache.shared:  # other processes waiting on our lock answer with it too
            self.cache.set_partial(flight.key, self.render(answer), tenant.deadline_s * 3)
        self.metrics.lookup(tenant.name, answer.outcome)
        return answer

    def _await_remote(self, tenant: Tenant, flight: Flight, deadline: float) -> bytes:
        """Another process computes this answer: wait for it in the shared cache, for this
        process's followers too, until the deadline (then take the other process's partial answer).

        Followers of a remote flight find it remote and share its ``body``."""
        body = None
        try:
            body = self.cache.wait_for(flight.key, deadline)
            if body is None:
                body = self.cache.get_partial(flight.key)
        finally:
            flight.body = body
            flight.set_done()
            self._finish(flight)
        self.metrics.lookup(tenant.name, "shared_flight" if body is not None else "partial_empty")
        return body if body is not None else self._empty

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

    def _merge(self, tenant: Tenant, results: list[tuple[BackendSlot, list[Contact]]], complete: bool) -> Answer:
        """De-duplicate, rank (exact match, backend order, recent activity) and cap."""
        if len(results) == 1 and len(results[0][1]) <= 1:  # the common answer: nothing to rank
            slot, contacts = results[0]
            return Answer(tuple(Match(contact, slot) for contact in contacts), complete)
        return Answer(tuple(Match(contact, slot) for slot, contact in self._ranked(tenant, results)), complete)

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
        return self.call(tenant, slot, lambda: slot.backend.lookup(number, tenant.max_results))

    def call(self, tenant: Tenant, slot: BackendSlot, fetch: Callable[[], list[Contact]]) -> list[Contact]:
        """Runs ``fetch`` (a lookup, a search by name) on ``slot``'s backend under the engine's rules:
        a 429 pauses the rate limiter, failures count for the breaker, everything is logged once and
        measured. The caller has asked :meth:`admit` first."""
        ident = (tenant.name, slot.name)
        breaker = self.breakers[ident]
        started = time.perf_counter()
        try:
            contacts = fetch()
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
                if not getattr(slot.backend, "alerts_credentials", False):  # else the backend said it
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


def _with_missing_filled(kept: Contact, duplicate: Contact) -> Contact:
    """A copy of ``kept`` completed with what only the duplicate from another backend knows."""
    changes = {
        attribute: getattr(duplicate, attribute)
        for attribute in ("company", "contact_uri", "company_uri", "email")
        if not getattr(kept, attribute) and getattr(duplicate, attribute)
    }
    return replace(kept, custom_data={**duplicate.custom_data, **kept.custom_data}, **changes)
