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

from lookup_service.phone import PhoneNumber

from .base import Backend, BackendError, CallRecord, Contact, WorkflowResult
from .contact_store import ContactStore

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int], None]


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

    def __init__(self, source: Backend, store_path: str | None = None):
        super().__init__(source.spec)
        self.source = source
        self.can_log_calls = source.can_log_calls  # type: ignore[misc]
        self.default_crm_name = source.default_crm_name  # type: ignore[misc]
        self.default_crm_logo = source.default_crm_logo  # type: ignore[misc]
        self.type_name = source.type_name  # type: ignore[misc]
        self.secret_keys = source.secret_keys  # type: ignore[misc]
        spec = source.spec
        self.store_path = store_path or os.path.join(
            spec.instance_dir, f"mirror-{_safe(spec.tenant)}-{_safe(spec.name)}.sqlite3"
        )
        self.store = ContactStore(self.store_path, spec.default_region, phone_index=spec.phone_index)
        self.interval = float(source.options.get("sync_interval") or 900.0)
        self.full_interval = float(source.options.get("full_sync_interval") or 86400.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # Backend interface ----------------------------------------------------------------------
    def lookup(self, number: PhoneNumber, limit: int) -> list[Contact]:
        return self.store.lookup(number, limit)

    def log_call(self, call: CallRecord) -> WorkflowResult:
        return self.source.log_call(call)

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

    def sync_now(self, full: bool = False, progress: ProgressCallback | None = None) -> SyncOutcome:
        """Run one sync, unless another process is already running one for this mirror."""
        started = time.time()
        lock_file = open(self.store_path + ".lock", "w")  # noqa: SIM115 - held for the sync
        try:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return SyncOutcome(ok=True, started_at=started, seconds=0.0, skipped=True)
            outcome = self._sync_locked(full, progress, started)
        finally:
            lock_file.close()
        self.store.set_meta("last_sync", json.dumps(asdict(outcome)))
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

    def _sync_locked(self, full: bool, progress: ProgressCallback | None, started: float) -> SyncOutcome:
        # Incremental listings cannot always see deletions: list everything once a day anyway.
        last_full = float(self.store.get_meta("last_full_sync") or 0)
        full = full or started - last_full >= self.full_interval
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
            self.store.set_meta("cursor", new_cursor)
            outcome.ok = True
        except BackendError as exc:
            outcome.error = str(exc)
        except Exception as exc:  # a bug or a driver error must not kill the sync thread
            log.exception("sync %s/%s crashed", self.spec.tenant, self.name)
            outcome.error = f"{type(exc).__name__}: {exc}"
        outcome.seconds = round(time.time() - started, 3)
        return outcome

    def start(self) -> None:
        """Sync in a background thread now (if the copy is stale) and every ``sync_interval``."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"sync-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            last = self.last_sync() or {}
            due = last.get("started_at", 0) + self.interval
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


__all__ = ["MirroredBackend", "SyncOutcome"]
