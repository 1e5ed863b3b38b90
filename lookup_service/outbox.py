"""Durable workflow delivery: a call is stored before the CRM is asked, and delivered until it is.

``submit`` (the request path) writes the call to the ledger, then gives one attempt the request's
budget (``workflow_deadline_ms``). Delivered in time: the CRM's id. Otherwise (the CRM down, slow,
rate limited, its breaker open): the call's own key as id, ``url`` empty, and a delivery thread in
every worker process goes on trying with exponential backoff and jitter, honouring ``Retry-After``
and the backend's circuit breaker, for up to ``workflow_max_age``. A refusal for good (unknown
contact, a field the CRM rejects) is kept as failed with its reason and not retried.

Attempts run on a small thread pool of the process and hold a claim on their item (see
:mod:`lookup_service.ledger`), renewed by the delivery thread while they run, so no item is
delivered by two processes at the same time and a dead process's items are taken over in seconds.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, fields, is_dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from lookup_core.errors import (
    BackendError,
    BackendUnavailable,
    ContactNotFound,
    CredentialsRejected,
    DeliveryRefused,
    RateLimited,
    RecordGone,
)
from lookup_core.phone import parse_number
from lookup_core.types import CallRecord, Contact, Message, MessageLog, NewContact, WorkflowResult
from lookup_service.ledger import (
    DONE,
    FAILED,
    LEASE_S,
    PENDING,
    Item,
    Ledger,
    OutboxUnavailable,
    owner_id,
)
from lookup_service.tenants import CREATE_CONTACT, MESSAGE_LOG

if TYPE_CHECKING:
    from lookup_service.engine import LookupEngine
    from lookup_service.metrics import Metrics
    from lookup_service.tenants import BackendSlot, Tenant

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 8  # attempts the delivery thread of one process runs at once (each may wait for a slow CRM)
POOL_SIZE = 32  # the delivery thread's attempts plus one per request thread of a worker
POLL_S = 1.0  # how often the delivery thread looks for due items
BATCH = 100  # items read per poll, including those other processes are attempting
BACKOFF_CAP_S = 900.0  # the longest pause between two attempts of one item
WAIT_POLL_S = 0.02
HEALTH_EVERY_S = 60.0


@dataclass
class Attempt:
    """What one attempt came to: ``result`` when delivered, ``refused`` when the CRM refused it for
    good, neither when it will be tried again."""

    result: WorkflowResult | None = None
    refused: Exception | None = None


Payload = CallRecord | NewContact | MessageLog


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    return value


def encode_payload(value: Payload) -> str:
    return json.dumps(_plain(value))  # ASCII: a lone surrogate cannot break the store


def decode_call(payload: str) -> CallRecord:
    data = json.loads(payload)
    for name in ("started", "answered", "ended", "declined"):
        if data.get(name):
            data[name] = datetime.fromisoformat(data[name])
    return CallRecord(**data)


def decode_message_log(payload: str) -> MessageLog:
    data = json.loads(payload)
    messages = tuple(Message(**{**m, "time": datetime.fromisoformat(m["time"])}) for m in data.pop("messages"))
    return MessageLog(**data, messages=messages)


def _keeping_link(result: WorkflowResult, made: WorkflowResult) -> WorkflowResult:
    """An update's answer may lack the link the creation gave: the record keeps it."""
    return result if result.url or not made.url else WorkflowResult(id=result.id, url=made.url)


def revision(workflow: str, stored: str, posted: str) -> str:
    """The stored payload completed by a later post of the same key: a call with its end or note,
    a digest with its new messages. Equal to ``stored`` when the post adds nothing."""
    try:
        if workflow == CREATE_CONTACT:
            return stored
        if workflow == MESSAGE_LOG:
            digest = decode_message_log(stored)
            for message in decode_message_log(posted).messages:
                digest = digest.with_message(message)
            return encode_payload(digest)
        return encode_payload(decode_call(stored).merged(decode_call(posted)))
    except (TypeError, KeyError, ValueError):  # a result kept from the ledger before the outbox: no payload
        return stored


class Outbox:
    def __init__(self, ledger: Ledger, tenants: list[Tenant], engine: LookupEngine, metrics: Metrics,
                 deadline_s: float = 4.0, max_age_s: float = 7 * 86400, retry_base_s: float = 2.0,
                 warn_age_s: float = 900.0):
        self.ledger = ledger
        self.tenants = {t.name: t for t in tenants}
        self.engine = engine
        self.metrics = metrics
        self.deadline_s = deadline_s
        self.max_age_s = max_age_s
        self.retry_base_s = retry_base_s
        self.warn_age_s = warn_age_s
        self._lock = threading.Lock()
        self._held: set[str] = set()  # items this process holds a claim on
        self._pid: int | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_health = 0.0
        self._last_store_warning = -HEALTH_EVERY_S

    # --- the request path ---------------------------------------------------------------------
    def submit(self, tenant: Tenant, workflow: str, slot: BackendSlot, payload: Payload) -> tuple[WorkflowResult, str]:
        """Store ``payload`` (a call, a message digest, a contact to create) and try to deliver it
        within the budget. Returns (answer, outcome) where outcome is ``created``, ``updated`` (a
        later post completed the record), ``duplicate`` or ``queued``; raises the backend's refusal
        (ContactNotFound, DeliveryRefused) when the CRM refused it for good within the budget, and
        :class:`OutboxUnavailable` when the store cannot take it."""
        started = time.monotonic()
        deadline = started + self.deadline_s
        now = time.time()
        key = payload.key
        encoded = encode_payload(payload)
        item = self.ledger.put(key, tenant.name, slot.name, workflow, encoded, now)
        revised = False
        for _ in range(20):  # compare and set against concurrent posts of the same key; bounded
            if item.payload == encoded:
                break
            wanted = revision(workflow, item.payload, encoded)
            if wanted == item.payload:
                break
            if self.ledger.revise(key, item.payload, wanted, now):
                revised = True
                item = self.ledger.get(key) or item
                break
            item = self.ledger.get(key) or item
        if item.state == DONE and item.result is not None:
            return item.result, "duplicate"
        if item.state == FAILED:  # posted again after a refusal: the CRM may accept it now
            self.ledger.retry(key, now)
        self.ensure_started()
        done = "updated" if revised and item.result is not None else "created"
        while True:
            future = self._try_start(key, time.time())
            if future is not None:
                try:
                    attempt = future.result(timeout=max(0.0, deadline - time.monotonic()))
                except FutureTimeout:
                    attempt = Attempt()
                if attempt.result is not None:
                    return attempt.result, done
                if attempt.refused is not None:
                    raise attempt.refused
                return self._queued(key)
            # another live attempt holds the item: its result, if it comes within the budget
            current = self.ledger.get(key)
            if current is not None and current.state == DONE and current.result is not None:
                return current.result, "duplicate" if not revised else done
            now = time.time()
            if current is None or current.state == FAILED or time.monotonic() >= deadline:
                return self._queued(key)
            if (not current.owner or current.lease_until < now) and current.next_at > now:
                return self._queued(key)  # an attempt failed meanwhile: the item waits for its next one
            time.sleep(WAIT_POLL_S)

    def digest_states(self, keys: list[str], message_id: str) -> dict[str, tuple[bool, int, int]]:
        """Of each message digest stored under one of ``keys``: whether it holds ``message_id``, how
        many messages and how many characters of JSON it has. Read in one round trip from the stored
        text, without decoding it: a long day has many parts to look through."""
        marker = '"id": '  # how encode_payload writes each message's id (a digest has no other "id")
        wanted = marker + json.dumps(message_id)
        return {key: (wanted in item.payload, item.payload.count(marker), len(item.payload))
                for key, item in self.ledger.get_many(keys).items() if item.workflow == MESSAGE_LOG}

    def _queued(self, key: str) -> tuple[WorkflowResult, str]:
        """Delivered later: the record's id when it exists already (an update waits), else the key."""
        try:
            item = self.ledger.get(key)
        except OutboxUnavailable:
            item = None
        if item is not None and item.result is not None:
            return item.result, "queued"
        return WorkflowResult(id=key, url=""), "queued"

    # --- attempts ------------------------------------------------------------------------------
    def _try_start(self, key: str, now: float, limit: int = POOL_SIZE) -> Future | None:
        """Claim ``key`` and start an attempt on the pool, unless ``limit`` attempts run or it is held."""
        with self._lock:
            if len(self._held) >= limit or key in self._held:
                return None
            self._held.add(key)
        try:
            claimed = self.ledger.claim(key, owner_id(), now)
        except BaseException:
            self._drop_held(key)
            raise
        if not claimed:
            self._drop_held(key)
            return None
        assert self._executor is not None
        return self._executor.submit(self._attempt, key)

    def _drop_held(self, key: str) -> None:
        with self._lock:
            self._held.discard(key)

    def _attempt(self, key: str) -> Attempt:
        owner = owner_id()
        try:
            return self._deliver(key, owner)
        except OutboxUnavailable as exc:
            log.warning("outbox: %s", exc)
            return Attempt()
        except Exception:  # the pool must never lose a claim silently
            log.exception("outbox: attempt on %s failed unexpectedly", key[:12])
            try:
                self.ledger.release(key, owner)
            except OutboxUnavailable:
                pass
            return Attempt()
        finally:
            self._drop_held(key)

    def _deliver(self, key: str, owner: str) -> Attempt:
        item = self.ledger.get(key)
        if item is None or item.state != PENDING or item.owner != owner:
            return Attempt(result=item.result if item is not None and item.state == DONE else None)
        now = time.time()
        tenant = self.tenants.get(item.tenant)
        slot = tenant.by_name.get(item.backend) if tenant is not None else None
        if tenant is None or slot is None or not tenant.offers(slot, item.workflow):
            reason = f"tenant {item.tenant!r} has no backend {item.backend!r} offering {item.workflow} any more"
            return self._refused(item, owner, reason, None)
        if now - item.created_at > self.max_age_s:
            reason = f"gave up after {item.attempts} attempts over {int(now - item.created_at)}s: {item.error}"
            self.metrics.outbox_delivery(item.tenant, item.backend, "expired")
            self.ledger.fail(key, owner, reason, item.attempts)
            log.error("outbox: call %s for %s/%s %s", key[:12], item.tenant, item.backend, reason)
            return Attempt()
        ident = (item.tenant, item.backend)
        breaker = self.engine.breakers.get(ident)
        limiter = self.engine.limiters.get(ident)
        blocked = limiter.blocked_for() if limiter is not None else 0.0
        if blocked > 0 or (breaker is not None and not breaker.allow()):
            # not an attempt: the backend asked for a pause or its breaker is open
            pause = blocked or (breaker.cooldown if breaker is not None else self.retry_base_s)
            self.ledger.reschedule(key, owner, now + pause * random.uniform(1.0, 1.2), item.error or "waiting for "
                                   "the backend", item.attempts)
            return Attempt()
        attempts = item.attempts + 1
        try:
            result = self._perform(item, tenant, slot)
        except (ContactNotFound, DeliveryRefused) as exc:
            if breaker is not None:
                breaker.record_success()  # the CRM answered
            return self._refused(item, owner, str(exc), exc, attempts)
        except RateLimited as exc:
            pause = exc.retry_after if exc.retry_after is not None else 1.0
            if limiter is not None:
                limiter.block(pause)
            self._retry_later(item, owner, attempts, f"rate limited: {exc}", minimum=pause)
            return Attempt()
        except BackendUnavailable as exc:
            if breaker is not None:
                breaker.record_failure()
            kind = "credentials rejected" if isinstance(exc, CredentialsRejected) else "unavailable"
            self._retry_later(item, owner, attempts, f"{kind}: {exc}")
            return Attempt()
        except Exception as exc:
            if breaker is not None:
                breaker.record_failure()
            log.exception("outbox: backend %s/%s failed unexpectedly", item.tenant, item.backend)
            self._retry_later(item, owner, attempts, f"unexpected error: {type(exc).__name__}")
            return Attempt()
        if breaker is not None:
            breaker.record_success()
        stored = self.ledger.finish(key, result, item.payload)
        self.metrics.outbox_delivery(item.tenant, item.backend, "delivered")
        if attempts > 1:
            log.info("outbox: call %s delivered to %s/%s at attempt %d -> %s", key[:12], item.tenant, item.backend,
                     attempts, stored.id)
        return Attempt(result=stored)

    def _perform(self, item: Item, tenant: Tenant, slot: BackendSlot) -> WorkflowResult:
        """One delivery: the record made, or (the item has a result: a later post revised it) updated."""
        backend = slot.backend
        made = item.result
        if item.workflow == CREATE_CONTACT:
            return self._create(tenant, slot, NewContact(**json.loads(item.payload)))
        if item.workflow == MESSAGE_LOG:
            digest = decode_message_log(item.payload)
            create, update = (lambda: backend.log_message(digest)), (lambda i: backend.update_message(i, digest))
        else:
            call = decode_call(item.payload)
            create, update = (lambda: backend.log_call(call)), (lambda i: backend.update_call(i, call))
        if made is None or not made.id:
            made = create()
            if not item.attempts or not made.id:
                return made
            # A retry: an earlier attempt may have made the record from an older revision and lost
            # its answer, and the CRM may have answered this one with that record (an idempotency
            # key, a search by reference): the current revision is written into it. The record is
            # there either way, so this write failing must not make the item be created again.
            try:
                return _keeping_link(update(made.id), made)
            except (BackendError, NotImplementedError) as exc:
                log.warning("outbox: %s/%s: the record %s was made; bringing it up to date failed: %s", item.tenant,
                            item.backend, made.id, exc)
                return made
        try:
            return _keeping_link(update(made.id), made)
        except NotImplementedError:  # a backend type that cannot update: its record stays as first made
            log.info("outbox: %s/%s cannot update records; %s kept as it was", item.tenant, item.backend, made.id)
            return made
        except RecordGone as exc:
            # deleted in the CRM since: made again, holding everything (the day's messages, the
            # whole call), rather than refusing what came after
            log.warning("outbox: %s; making the record again for %s/%s", exc, item.tenant, item.backend)
            return create()

    def _create(self, tenant: Tenant, slot: BackendSlot, new: NewContact) -> WorkflowResult:
        """Create the contact unless the backend has the number already (an earlier attempt whose
        answer was lost, or a contact made meanwhile): then that contact is the answer. Either way
        the cached lookup answers for the number are dropped, so the next lookup finds it."""
        backend = getattr(slot.backend, "source", slot.backend)  # a mirror creates at its source
        number = parse_number(new.number, tenant.region)
        existing = [c for c in slot.backend.lookup(number, 5) if c.exact]  # a mirror answers from its copy
        if existing:
            found = existing[0]
            log.info("outbox: CreateContact for %s/%s: the number has a contact already", tenant.name, slot.name)
            result = WorkflowResult(id=found.id, url=found.contact_uri)
        else:
            result = backend.create_contact(new)
            store = getattr(slot.backend, "store", None) if slot.backend is not backend else None
            if store is not None:  # a mirror: its copy has the contact now, not at the next sync
                made = Contact(id=str(result.id), name=new.name, company=new.company, email=new.email,
                               contact_uri=result.url, phones=[new.number])
                store.upsert([(made, store.normalize_phones(made.phones))])
        self.engine.forget(tenant, number)  # with Redis: the shared entry goes, for every machine
        tenant.contact_created()  # without Redis: every worker's cache keys of this tenant change
        return WorkflowResult(id=f"{slot.name}:{result.id}", url=result.url or "")

    def _refused(self, item: Item, owner: str, reason: str, exc: Exception | None, attempts: int = 0) -> Attempt:
        self.ledger.fail(item.key, owner, reason, attempts or item.attempts)
        self.metrics.outbox_delivery(item.tenant, item.backend, "refused")
        log.warning("outbox: call %s refused by %s/%s for good, kept as failed: %s", item.key[:12], item.tenant,
                    item.backend, reason)
        return Attempt(refused=exc)

    def _retry_later(self, item: Item, owner: str, attempts: int, error: str, minimum: float = 0.0) -> None:
        # exponential backoff with jitter (half to the full step), never earlier than Retry-After
        step = min(BACKOFF_CAP_S, self.retry_base_s * (2 ** min(attempts - 1, 20)))
        pause = max(minimum, step * random.uniform(0.5, 1.0))
        self.ledger.reschedule(item.key, owner, time.time() + pause, error, attempts)
        self.metrics.outbox_delivery(item.tenant, item.backend, "retry")
        log.warning("outbox: call %s to %s/%s attempt %d failed, next in %.0fs: %s", item.key[:12], item.tenant,
                    item.backend, attempts, pause, error)

    # --- the delivery thread -------------------------------------------------------------------
    def ensure_started(self) -> None:
        """Start this process's pool and delivery thread (again after a fork); idempotent."""
        pid = os.getpid()
        if self._pid == pid:
            return
        with self._lock:
            if self._pid == pid:
                return
            self._held = set()
            self._stop = threading.Event()
            self._executor = ThreadPoolExecutor(POOL_SIZE, thread_name_prefix="outbox-attempt")
            self._thread = threading.Thread(target=self._run, name="outbox-delivery", daemon=True)
            self._thread.start()
            self._pid = pid

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._pid == os.getpid():
            self._thread.join(5)
        if self._executor is not None and self._pid == os.getpid():
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._pid = None

    def _run(self) -> None:
        renewed = time.monotonic()
        while not self._stop.is_set():
            try:
                if time.monotonic() - renewed >= LEASE_S / 4:
                    self._renew()
                    renewed = time.monotonic()
                self.deliver_due()
                if time.monotonic() - self._last_health >= HEALTH_EVERY_S:
                    self._last_health = time.monotonic()
                    for problem in self.outbox_health():
                        log.warning("outbox: %s", problem["reason"])
            except OutboxUnavailable as exc:
                if time.monotonic() - self._last_store_warning >= HEALTH_EVERY_S:  # once a minute, not a flood
                    self._last_store_warning = time.monotonic()
                    log.warning("outbox: %s", exc)
            except Exception:  # the thread must survive whatever happens
                log.exception("outbox: delivery loop failed")
            self._stop.wait(POLL_S * random.uniform(0.8, 1.2))

    def _renew(self) -> None:
        with self._lock:
            held = list(self._held)
        if held:
            lost = set(held) - self.ledger.renew(held, owner_id(), time.time())
            for key in lost:  # finished meanwhile, or (after a long stall) taken over
                log.debug("outbox: claim on %s no longer held", key[:12])

    def deliver_due(self) -> int:
        """Start attempts on the due items this process can claim; returns how many started."""
        now = time.time()
        started = 0
        for item in self.ledger.due(now, BATCH):
            if len(self._held) >= MAX_IN_FLIGHT:
                break
            if not self.ledger.claimable(item, now) or self._paused(item):
                continue
            if self._try_start(item.key, now, MAX_IN_FLIGHT) is not None:
                started += 1
        return started

    def _paused(self, item: Item) -> bool:
        """The backend's breaker is open or it asked for a pause: leave its items due."""
        breaker = self.engine.breakers.get((item.tenant, item.backend))
        limiter = self.engine.limiters.get((item.tenant, item.backend))
        return (breaker is not None and breaker.state == "open") or (limiter is not None and limiter.blocked_for() > 0)

    # --- health and metrics ----------------------------------------------------------------------
    def backlog(self) -> tuple[int, float | None]:
        """(pending items, age in seconds of the oldest)."""
        count, oldest = self.ledger.backlog()
        return count, (max(0.0, time.time() - oldest) if oldest is not None else None)

    def health(self) -> list[dict[str, str]]:
        """Problems for a readiness check: the store unreachable, or a pending item older than the
        warning threshold (deliveries stuck). Empty when all is well."""
        try:
            count, age = self.backlog()
        except OutboxUnavailable as exc:
            return [{"component": "outbox", "reason": str(exc)}]
        if age is not None and age > self.warn_age_s:
            return [{"component": "outbox", "reason": f"{count} workflow call(s) wait for delivery; the oldest for "
                     f"{int(age)}s (threshold {int(self.warn_age_s)}s)"}]
        return []

    outbox_health = health

    def refresh_metrics(self) -> None:
        try:
            count, age = self.backlog()
        except OutboxUnavailable:
            return
        self.metrics.outbox_backlog(count, age or 0.0)
