"""Tenants at run time: each with its tokens, limits and an ordered list of live backends."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from config.settings import KNOWN_WORKFLOWS, BackendConfig, ConfigError, Settings, TenantConfig
from crm_backends.base import BACKEND_TYPES, Backend, BackendSpec
from crm_backends.mirror import MirroredBackend
from lookup_core.errors import BackendConfigError

log = logging.getLogger(__name__)

WORKFLOW_CAPABILITY = {"CallFlow": "can_log_calls"}


@dataclass
class BackendSlot:
    """A backend in its tenant: position (for ranking), display data and workflows."""

    position: int
    name: str
    backend: Backend
    crm_name: str | None
    crm_logo: str | None
    workflows: list[str]
    mode: str

    @property
    def inline(self) -> bool:
        return self.backend.inline


@dataclass
class Tenant:
    name: str
    tokens: list[str]
    slots: list[BackendSlot]
    region: str
    deadline_s: float
    max_results: int
    cache_ttl: float
    negative_cache_ttl: float
    by_name: dict[str, BackendSlot] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_name = {slot.name: slot for slot in self.slots}
        self._versioned = [slot.backend for slot in self.slots if slot.backend.data_version() is not None]
        self.all_inline = all(slot.inline for slot in self.slots)

    def data_version(self) -> object:
        """The data versions of the local stores; part of every cache key so writes show at once."""
        versioned = self._versioned
        if len(versioned) == 1:  # the common case, on the hot path
            return versioned[0].data_version()
        return tuple(backend.data_version() for backend in versioned)

    def workflows(self) -> list[str]:
        names: list[str] = []
        for slot in self.slots:
            names.extend(w for w in slot.workflows if w not in names)
        return names

    def close(self) -> None:
        for slot in self.slots:
            try:
                slot.backend.close()
            except Exception:  # closing must go on for the others
                log.exception("closing backend %s/%s failed", self.name, slot.name)


def build_tenants(settings: Settings) -> list[Tenant]:
    tenants: list[Tenant] = []
    try:
        for config in settings.tenants:
            tenants.append(_build_tenant(config, settings))
    except Exception:
        for tenant in tenants:
            tenant.close()
        raise
    return tenants


def _build_tenant(config: TenantConfig, settings: Settings) -> Tenant:
    slots = [
        _build_slot(position, backend, config, settings) for position, backend in enumerate(config.backends)
    ]
    return Tenant(
        name=config.name,
        tokens=config.tokens,
        slots=slots,
        region=config.default_region,
        deadline_s=config.deadline_ms / 1000.0,
        max_results=config.max_results,
        cache_ttl=config.cache_ttl,
        negative_cache_ttl=config.negative_cache_ttl,
    )


def _build_slot(position: int, config: BackendConfig, tenant: TenantConfig, settings: Settings) -> BackendSlot:
    where = f"{settings.source}: tenant {tenant.name!r}, backend {config.name!r}"
    options = config.options
    if config.type == "directory" and settings.database_url and not options.get("database_url"):
        options = {**options, "database_url": settings.database_url}  # the PaaS's shared PostgreSQL
    spec = BackendSpec(
        tenant=tenant.name,
        name=config.name,
        options=options,
        default_region=tenant.default_region,
        deadline_s=tenant.deadline_ms / 1000.0,
        instance_dir=settings.instance_dir,
        phone_index=settings.phone_index,
    )
    cls = BACKEND_TYPES[config.type]
    try:
        backend: Backend = cls(spec)
        if config.mode == "mirror":
            backend = MirroredBackend(backend)
    except BackendConfigError as exc:
        message = str(exc)
        if not message.startswith(settings.source):
            key = f", key {exc.key!r}" if exc.key else ""
            message = f"{where}{key}: {message}"
        raise ConfigError(message) from None
    possible = [w for w in KNOWN_WORKFLOWS if getattr(backend, WORKFLOW_CAPABILITY[w], False)]
    if config.workflows is None:
        workflows = possible
    else:
        for workflow in config.workflows:
            if workflow not in possible:
                raise ConfigError(
                    f"{where}, key 'workflows': type {config.type!r} cannot run {workflow!r}"
                    + (" (configure its call logging first)" if workflow == "CallFlow" else "")
                )
        workflows = list(config.workflows)
    return BackendSlot(
        position=position,
        name=config.name,
        backend=backend,
        crm_name=config.crm_name or backend.default_crm_name,
        crm_logo=config.crm_logo or backend.default_crm_logo,
        workflows=workflows,
        mode=config.mode,
    )
