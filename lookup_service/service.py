"""The running service: everything a request needs, built once by ``create_app``."""

from __future__ import annotations

import logging
import os
import threading
import weakref
from dataclasses import dataclass, field

from config.settings import Settings
from crm_backends.mirror import MirroredBackend
from lookup_service.auth import TokenTable
from lookup_service.engine import LookupEngine
from lookup_service.ledger import Ledger
from lookup_service.metrics import Metrics
from lookup_service.outbox import Outbox
from lookup_service.tenants import Tenant

log = logging.getLogger(__name__)
_start_lock = threading.Lock()
_services: weakref.WeakSet[Service] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A fork may copy the lock held by another thread of the parent: the child gets a free one.
    # SQLite connections must not be used across a fork (gunicorn --preload): the child's
    # threads open their own, the copies are left alone (closing them could disturb the parent).
    global _start_lock
    _start_lock = threading.Lock()
    for service in list(_services):
        service.forget_connections()


os.register_at_fork(after_in_child=_after_fork_in_child)


@dataclass(eq=False)  # hashable by identity: kept in a WeakSet for the fork hook
class Service:
    settings: Settings
    tenants: list[Tenant]
    engine: LookupEngine
    ledger: Ledger
    metrics: Metrics
    tokens: TokenTable
    # the start-up check still to run (in the background, warnings only): the app was loaded
    # where the check could not run first (another server); "off" once it has run or is not wanted
    pending_check: str = "off"
    started_pid: int = 0  # the process whose background work runs; another pid starts its own
    outbox: Outbox = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.outbox = Outbox(self.ledger, self.tenants, self.engine, self.metrics,
                             deadline_s=s.workflow_deadline_ms / 1000, max_age_s=s.workflow_max_age,
                             retry_base_s=s.workflow_retry_base, warn_age_s=s.outbox_warn_age)
        _services.add(self)

    def forget_connections(self) -> None:
        """Drop this process's per-thread SQLite connections (without closing them): after a fork
        each thread of the child opens its own."""
        holders = [self.ledger] + [slot.backend for tenant in self.tenants for slot in tenant.slots]
        holders += [getattr(backend, "store", None) for backend in holders[1:]]
        for holder in holders:
            if isinstance(getattr(holder, "_local", None), threading.local):
                holder._local = threading.local()  # type: ignore[union-attr]

    def tenant(self, name: str) -> Tenant | None:
        return next((t for t in self.tenants if t.name == name), None)

    def mirrors(self) -> list[tuple[Tenant, MirroredBackend]]:
        return [
            (tenant, slot.backend)
            for tenant in self.tenants
            for slot in tenant.slots
            if isinstance(slot.backend, MirroredBackend)
        ]

    def start_background(self) -> None:
        """Start everything that runs beside the requests (the mirrors' sync threads), once per
        process: ``create_app`` calls it when a server loads the app in the process that serves,
        and the app calls it at every request whose process has not (a pid comparison), so a
        process forked later (``gunicorn --preload``, any pre-forking server) starts its own at
        its first request. The outbox's delivery starts here too."""
        pid = os.getpid()
        if self.started_pid == pid:
            return
        with _start_lock:
            if self.started_pid == pid:
                return
            if self.pending_check != "off":
                threading.Thread(target=self._late_check, name="startup-check", daemon=True).start()
            for _tenant, mirror in self.mirrors():
                mirror.start()
            self.outbox.ensure_started()
            self.started_pid = pid

    def _late_check(self) -> None:
        from lookup_service.startup import run_startup_check

        try:
            run_startup_check(self.settings, "warn")
            self.pending_check = "off"
        except Exception:
            log.exception("the start-up check failed")

    def readiness(self) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        """(not ready, degraded): what keeps a tenant from answering, and what answers but is
        out of date; items ``{"tenant", "backend", "reason"}``, reasons without error texts."""
        not_ready: list[dict[str, str]] = []
        degraded: list[dict[str, str]] = []
        for tenant in self.tenants:
            for slot in tenant.slots:
                backend = slot.backend
                item = {"tenant": tenant.name, "backend": slot.name}
                try:
                    if isinstance(backend, MirroredBackend):
                        state = backend.sync_state()
                        if not state["ready"]:
                            not_ready.append({**item, "reason": f"mirror: {state['reason']}"})
                        elif state["stale"]:
                            degraded.append({**item, "reason": f"mirror: {state['reason']}"})
                    elif getattr(backend, "store", None) is not None:  # the embedded directory
                        backend.store.get_meta("generation")  # type: ignore[attr-defined]
                except Exception as exc:
                    log.warning("readiness of %s/%s: %s: %s", tenant.name, slot.name, type(exc).__name__, exc)
                    not_ready.append({**item, "reason": "local store not readable"})
        if self.settings.redis_url:
            try:
                self.engine.cache.ping()
            except Exception as exc:
                log.warning("readiness: redis unreachable: %s", type(exc).__name__)
                not_ready.append({"tenant": "*", "backend": "redis", "reason": "redis unreachable"})
        try:
            not_ready.extend(self.outbox_health())
        except Exception as exc:
            log.warning("readiness: outbox health failed: %s", type(exc).__name__)
            not_ready.append({"tenant": "*", "backend": "outbox", "reason": "outbox health check failed"})
        return not_ready, degraded

    def outbox_health(self) -> list[dict[str, str]]:
        """Readiness problems of workflow delivery (store unreachable, calls stuck); empty if none."""
        return self.outbox.health()

    def refresh_metrics(self) -> None:
        for tenant, mirror in self.mirrors():
            self.metrics.mirror_status(tenant.name, mirror.name, mirror.last_sync(), mirror.store.stats()["contacts"],
                                       mirror.sync_state())
        for (tenant, backend), state in self.engine.breaker_states().items():
            self.metrics.breaker_state(tenant, backend, state)
        self.outbox.refresh_metrics()

    def close(self) -> None:
        self.outbox.stop()
        self.engine.close()
        for tenant in self.tenants:
            tenant.close()
        self.ledger.close()
