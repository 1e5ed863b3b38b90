"""The running service: everything a request needs, built once by ``create_app``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from config.settings import Settings
from crm_backends.mirror import MirroredBackend
from lookup_service.auth import TokenTable
from lookup_service.engine import LookupEngine
from lookup_service.ledger import RedisLedger, SqliteLedger
from lookup_service.metrics import Metrics
from lookup_service.tenants import Tenant

log = logging.getLogger(__name__)


@dataclass
class Service:
    settings: Settings
    tenants: list[Tenant]
    engine: LookupEngine
    ledger: SqliteLedger | RedisLedger
    metrics: Metrics
    tokens: TokenTable

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
        """Start the mirrors' sync threads (called in each gunicorn worker after it forks)."""
        for _tenant, mirror in self.mirrors():
            mirror.start()

    def refresh_metrics(self) -> None:
        for tenant, mirror in self.mirrors():
            self.metrics.mirror_status(tenant.name, mirror.name, mirror.last_sync(), mirror.store.stats()["contacts"])
        for (tenant, backend), state in self.engine.breaker_states().items():
            self.metrics.breaker_state(tenant, backend, state)

    def close(self) -> None:
        self.engine.close()
        for tenant in self.tenants:
            tenant.close()
