"""The running service: everything a request needs, built once by ``create_app``."""

from __future__ import annotations

import logging
import os
import threading
import weakref
from dataclasses import dataclass

from config.settings import Settings
from crm_backends.mirror import MirroredBackend
from lookup_service.auth import TokenTable
from lookup_service.engine import LookupEngine
from lookup_service.ledger import RedisLedger, SqliteLedger
from lookup_service.metrics import Metrics
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
    ledger: SqliteLedger | RedisLedger
    metrics: Metrics
    tokens: TokenTable
    # the start-up check still to run (in the background, warnings only): the app was loaded
    # where the check could not run first (another server); "off" once it has run or is not wanted
    pending_check: str = "off"
    started_pid: int = 0  # the process whose background work runs; another pid starts its own

    def __post_init__(self) -> None:
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
        its first request. Another part of the service that runs in the background starts here."""
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
                self.engine.cache.client.ping()  # type: ignore[union-attr]
            except Exception as exc:
                log.warning("readiness: redis unreachable: %s", type(exc).__name__)
                not_ready.append({"tenant": "*", "backend": "redis", "reason": "redis unreachable"})
        # the outbox (another part of the service) reports its own problems in the same shape
        outbox_health = getattr(self, "outbox_health", None)
        if callable(outbox_health):
            try:
                for problem in outbox_health() or []:
                    not_ready.append(problem if isinstance(problem, dict)
                                     else {"tenant": "*", "backend": "outbox", "reason": str(problem)})
            except Exception as exc:
                log.warning("readiness: outbox health failed: %s", type(exc).__name__)
                not_ready.append({"tenant": "*", "backend": "outbox", "reason": "outbox health check failed"})
        return not_ready, degraded

    def refresh_metrics(self) -> None:
        for tenant, mirror in self.mirrors():
            self.metrics.mirror_status(tenant.name, mirror.name, mirror.last_sync(), mirror.store.stats()["contacts"],
                                       mirror.sync_state())
        for (tenant, backend), state in self.engine.breaker_states().items():
            self.metrics.breaker_state(tenant, backend, state)

    def close(self) -> None:
        self.engine.close()
        for tenant in self.tenants:
            tenant.close()
