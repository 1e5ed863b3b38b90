"""Mirror mode: a backend's source copied into a local :class:`ContactStore`.

The source backend lists its contacts (:meth:`Backend.sync`), incrementally from a cursor where it
can; lookups are answered from the local index, in any number format and at embedded-directory
speed, and still answered from the last copy when the source is down.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from lookup_core.errors import BackendError, BackendUnavailable
from lookup_core.phone import PhoneNumber
from lookup_core.types import CallRecord, Contact, CrmUser, MessageLog, WorkflowResult

from .base import Backend
from .contact_store import ContactStore
from .resilience import RateLimiter

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int], None]
# Option keys a source type needs to answer a lookup live; types not listed can always do it.
_LIVE_NEEDS = {"sql": "query", "rest": "lookup_url"}
READY_CHECK_EVERY_S = 0.5  # a mirror not synced yet looks for a sync by another process this often


class MirrorNotReady(BackendUnavailable):
    """The mirror has no successful sync yet and cannot ask its source live: it has no answer,
    which is not the same as "no contact has this number". The engine neither caches the answer
    as a no-match nor counts this against the circuit breaker."""


@dataclass
class SyncOutcome:
    ok: bool
    started_at: float
    seconds: float
    written: int = 0
    deleted: int = 0
    incremental: bool = False
    error: str | None = None
    skipped: bool = False  # another process held the sync lock
    unreadable_numbers: int = 0  # stored phone values (or parts of one) that hold no readable number


class MirroredBackend(Backend):
    """Wraps a source backend; answers lookups from the local copy, delegates call logging."""

    type_name: ClassVar[str] = "mirror"
    inline: ClassVar[bool] = True

    def __init__(self, source: Backend, store_path: str | None = None, clock: Callable[[], float] = time.time):
        super().__init__(source.spec)
        self.source = source
        self.clock = clock  # wall-clock seconds; the schedule's tests give their own
        spec = source.spec
        self.store_path = store_path or os.path.join(
            spec.instance_dir, f"mirror-{_safe(spec.tenant)}-{_safe(spec.name)}.sqlite3"
        )
        self.store = ContactStore(self.store_path, spec.default_region, phone_index=spec.phone_index)
        self.interval = float(source.options.get("sync_interval") or 900.0)
        full_interval = source.options.get("full_sync_interval")
        self.full_interval = float(86400.0 if full_interval is None else full_interval)
        # sources whose incremental listing cannot see deletions at all (ldap) also list everything
        # every `full_sync_every`-th sync
        self.full_every: int | None = source.options.get("full_sync_every")
        self.max_staleness = float(source.options.get("max_staleness") or 3 * self.interval)
        needed = _LIVE_NEEDS.get(source.type_name)
        self.live_fallback = "live" in source.modes and (needed is None or bool(source.options.get(needed)))
        # the fallback keeps under the rate the source declares (the mirror's own slot has none)
        self._fallback_rate = RateLimiter(source.rate_per_second, f"{spec.tenant}:{spec.name}:fallback") \
            if source.rate_per_second else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_pid = 0
        self._synced = False  # once True, stays True: the copy exists and answers
        self._next_ready_check = 0.0
        self._fallback_logged = False

    # Backend interface ----------------------------------------------------------------------
    @property
    def can_log_calls(self) -> bool:
        return self.source.can_log_calls

    def lookup(self, number: PhoneNumber, limit: int) -> list[Contact]:
        if self._synced or self._has_synced():
            return self.store.lookup(number, limit)
        if not self.live_fallback:
            raise MirrorNotReady("the mirror has not finished its first sync")
        if self._fallback_rate is not None and not self._fallback_rate.try_acquire():
            raise MirrorNotReady("the mirror has not finished its first sync and the live fallback is at its rate")
        if not self._fallback_logged:
            self._fallback_logged = True
            log.warning("mirror %s/%s has not finished its first sync: asking the source live until it has",
                        self.spec.tenant, self.name)
        try:
            return self.source.lookup(number, limit)
        except BackendError as exc:  # the mirror is not broken, only not there yet: not a breaker failure
            raise MirrorNotReady(f"the mirror has not finished its first sync and the live fallback failed: {exc}") \
                from None

    def _has_synced(self) -> bool:
        """Whether a sync (by any process on this machine) has ever succeeded into the copy;
        checked at most every READY_CHECK_EVERY_S until it has, then never again."""
        now = time.monotonic()
        if now < self._next_ready_check:
            return False
        self._next_ready_check = now + READY_CHECK_EVERY_S
        if self.last_success() is not None:
            self._synced = True
        return self._synced

    # workflows and users are the source's
    def log_call(self, call: CallRecord) -> WorkflowResult:
        return self.source.log_call(call)

    def update_call(self, record_id: str, call: CallRecord) -> WorkflowResult:
        return self.source.update_call(record_id, call)

    def log_message(self, message_log: MessageLog) -> WorkflowResult:
        return self.source.log_message(message_log)

    def update_message(self, record_id: str, message_log: MessageLog) -> WorkflowResult:
        return self.source.update_message(record_id, message_log)

    def list_users(self) -> list[CrmUser]:
        return self.source.list_users()

    def data_version(self) -> object:
        return self.store.generation()

    def check(self) -> None:
        self.source.check()

    def close(self) -> None:
        self.stop()
        self.source.close()
        self.store.close()

    def describe(self) -> dict[str, Any]:
        info = self.source.describe()
        info["last_sync"] = self.last_sync()
        info["mirror_contacts"] = self.store.stats()["contacts"]
        return info

    # syncing --------------------------------------------------------------------------------
    def last_sync(self) -> dict[str, Any] | None:
        raw = self.store.get_meta("last_sync")
        return json.loads(raw) if raw else None

    def last_success(self) -> float | None:
        """When the last successful sync started (epoch seconds): the copy is as of then."""
        raw = self.store.get_meta("last_success")
        if raw:
            return float(raw)
        last = self.last_sync()  # a copy synced before this key existed
        return float(last["started_at"]) if last and last.get("ok") and not last.get("skipped") else None

    def sync_state(self, now: float | None = None) -> dict[str, Any]:
        """Readiness of the copy: ``ready`` (it has synced once), ``stale`` (no successful sync
        within ``max_staleness``; it still answers), the last success and its age, and a
        ``reason`` naming the problem without any error text (it goes to /readyz)."""
        success = self.last_success()
        now = time.time() if now is None else now
        if success is None:
            last = self.last_sync()
            failed = bool(last and not last.get("ok"))
            reason = "first sync failed, retrying" if failed else "first sync not finished"
            return {"ready": False, "stale": True, "last_success": None, "age": None, "reason": reason}
        self._synced = True
        age = max(0.0, now - success)
        stale = age > self.max_staleness
        reason = f"stale: last successful sync {age:.0f}s ago (max_staleness {self.max_staleness:.0f}s)" if stale \
            else None
        return {"ready": True, "stale": stale, "last_success": success, "age": age, "reason": reason}

    def sync_now(self, full: bool = False, progress: ProgressCallback | None = None) -> SyncOutcome:
        """Run one sync, unless another process is already running one for this mirror."""
        started = self.clock()
        lock_file = open(self.store_path + ".lock", "w")  # noqa: SIM115 - held for the sync
        try:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return SyncOutcome(ok=True, started_at=started, seconds=0.0, skipped=True)
            outcome = self._sync_locked(full, progress, started)
            # written while the lock is held, so another process never reads a half-told sync
            self.store.set_meta("last_sync", json.dumps(asdict(outcome)))
            if outcome.ok:
                self.store.set_meta("last_success", repr(started))
                self._synced = True
        finally:
            lock_file.close()
        level = logging.INFO if outcome.ok else logging.WARNING
        log.log(
            level,
            "sync %s/%s: %s, %d written, %d deleted in %.1fs%s",
            self.spec.tenant,
            self.name,
            "incremental" if outcome.incremental else "full",
            outcome.written,
            outcome.deleted,
            outcome.seconds,
            f", failed: {outcome.error}" if outcome.error else "",
        )
        if outcome.unreadable_numbers:
            log.warning(
                "sync %s/%s: %d stored phone value(s) could not be read as a number and were left out",
                self.spec.tenant,
                self.name,
                outcome.unreadable_numbers,
            )
        return outcome

    def full_sync_due(self, started: float) -> bool:
        """Whether the next sync lists everything (the source is asked with no cursor): the first
        sync, one without a cursor to go on, one ``full_sync_interval`` after the last complete
        listing, and with ``full_sync_every`` every N-th sync. Incremental listings cannot always
        see deletions; a complete listing removes whatever it did not show."""
        if self.store.get_meta("cursor") is None:
            return True
        last_full = float(self.store.get_meta("last_full_sync") or 0)
        if started - last_full >= self.full_interval:
            return True
        since_full = int(self.store.get_meta("syncs_since_full") or 0)
        return self.full_every is not None and since_full + 1 >= self.full_every

    def _sync_locked(self, full: bool, progress: ProgressCallback | None, started: float) -> SyncOutcome:
        full = full or self.full_sync_due(started)
        cursor = None if full else self.store.get_meta("cursor")
        outcome = SyncOutcome(ok=False, started_at=started, seconds=0.0, incremental=cursor is not None)
        seen: set[str] = set()
        complete = False
        new_cursor = cursor
        try:
            for batch in self.source.sync(cursor):
                unreadable: list[str] = []
                outcome.written += self.store.upsert(
                    (contact, self.store.normalize_phones(contact.phones, unreadable)) for contact in batch.contacts
                )
                outcome.unreadable_numbers += len(unreadable)
                outcome.deleted += self.store.delete(batch.deleted_ids)
                seen.update(contact.id for contact in batch.contacts)
                complete = complete or batch.complete
                new_cursor = batch.cursor or new_cursor
                if progress:
                    progress(len(batch.contacts))
            if complete:
                outcome.incremental = False
                outcome.deleted += self.store.delete(self.store.contact_ids() - seen)
                self.store.set_meta("last_full_sync", str(started))
                self.store.set_meta("syncs_since_full", "0")
            else:
                since_full = int(self.store.get_meta("syncs_since_full") or 0)
                self.store.set_meta("syncs_since_full", str(since_full + 1))
            self.store.set_meta("cursor", new_cursor)
            outcome.ok = True
        except BackendError as exc:
            outcome.error = str(exc)
        except Exception as exc:  # a bug or a driver error must not kill the sync thread
            log.exception("sync %s/%s crashed", self.spec.tenant, self.name)
            outcome.error = f"{type(exc).__name__}: {exc}"
        outcome.seconds = round(max(0.0, self.clock() - started), 3)
        return outcome

    def start(self) -> None:
        """Sync in a background thread now (if the copy is stale) and every ``sync_interval``.

        Once per process: a child forked after the start has no thread (fork copies only the
        forking thread) and starts its own. The file lock keeps one sync at a time per machine.
        """
        pid = os.getpid()
        if self._thread is not None and self._thread_pid == pid:
            return
        self._stop = threading.Event()  # the parent's may be tied to its threads
        self._thread_pid = pid
        self._thread = threading.Thread(target=self._run, name=f"sync-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            last = self.last_sync() or {}
            # after a failed sync the next try comes sooner, but never hammers the source
            pause = self.interval if last.get("ok", True) else min(60.0, self.interval)
            due = last.get("started_at", 0) + pause
            wait = due - time.time()
            if wait > 0:
                if self._stop.wait(min(wait, self.interval)):
                    return
                continue
            self.sync_now()
            # a failed or skipped sync retries sooner, but never hammers the source
            if self._stop.wait(min(60.0, self.interval)):
                return


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)


__all__ = ["MirrorNotReady", "MirroredBackend", "SyncOutcome"]
