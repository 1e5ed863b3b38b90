"""The running service: everything a request needs, built once by ``create_app``."""

from __future__ import annotations

import logging
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


@dataclass
class Service:
    settings: Settings
    tenants: list[Tenant]
    engine: LookupEngine
    ledger: Ledger
    metrics: Metrics
    tokens: TokenTable
    outbox: Outbox = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.outbox = Outbox(self.ledger, self.tenants, self.engine, self.metrics,
                             deadline_s=s.workflow_deadline_ms / 1000, max_age_s=s.workflow_max_age,
                             retry_base_s=s.workflow_retry_base, warn_age_s=s.outbox_warn_age)

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
        """Start the mirrors' sync threads and the outbox's delivery (called in each gunicorn worker
        after it forks)."""
        for _tenant, mirror in self.mirrors():
            mirror.start()
        self.outbox.ensure_started()

    def outbox_health(self) -> list[dict[str, str]]:
        """Readiness problems of workflow delivery (store unreachable, calls stuck); empty if none."""
        return self.outbox.health()

    def refresh_metrics(self) -> None:
        for tenant, mirror in self.mirrors():
            self.metrics.mirror_status(tenant.name, mirror.name, mirror.last_sync(), mirror.store.stats()["contacts"])
        for (tenant, backend), state in self.engine.breaker_states().items():
            self.metrics.breaker_state(tenant, backend, state)
        self.outbox.refresh_metrics()

    def close(self) -> None:
        self.outbox.stop()
        self.engine.close()
        for tenant in self.tenants:
            tenant.close()
        self.ledger.close()
