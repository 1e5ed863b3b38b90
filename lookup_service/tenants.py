"""Tenants at run time: each with its tokens, limits and an ordered list of live backends."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field

from config.settings import ConfigError, Settings, TenantConfig
from crm_backends.base import Backend, BackendSpec
from crm_backends.contact_store import GenerationBoard
from crm_backends.registry import backend_class, build
from lookup_core.errors import BackendConfigError

log = logging.getLogger(__name__)
CREATE_CONTACT = "CreateContact"
MESSAGE_LOG = "MessageLog"  # SMS, voicemail and fax records; not a button on the caller card


@dataclass
class BackendSlot:
    """A backend in its tenant: its spec (name, mode, options as configured), its position (for
    ranking) and the built backend. Display data is the spec's, else the type's default."""

    position: int
    spec: BackendSpec
    backend: Backend
    name: str = field(init=False)
    mode: str = field(init=False)
    workflows: list[str] = field(init=False)
    crm_name: str | None = field(init=False)
    crm_logo: str | None = field(init=False)
    logs_messages: bool = field(init=False)
    lists_users: bool = field(init=False)

    def __post_init__(self) -> None:
        cls = backend_class(self.spec.type)
        self.logs_messages = cls.can_log_messages(self.spec.options)
        self.lists_users = cls.can_list_users(self.spec.options)
        self.name = self.spec.name
        self.mode = self.spec.mode
        self.workflows = list(self.spec.workflows)
        self.crm_name = self.spec.crm_name or cls.default_crm_name
        self.crm_logo = self.spec.crm_logo or cls.default_crm_logo

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
    create_contacts_in: str | None = None
    unknown_caller_entry: bool = False
    unknown_caller_text: str = "Unknown caller \u2013 create contact"
    new_contact_name: str = "Unknown caller {number}"
    timezone: str = "UTC"  # the day of an SMS digest is the day here
    by_name: dict[str, BackendSlot] = field(default_factory=dict)

    # CreateContact without Redis: a counter shared by the processes of this machine (a mapped file),
    # part of the data version, so a contact one worker created is not hidden by another's cached []
    creations: GenerationBoard | None = None

    def __post_init__(self) -> None:
        self.by_name = {slot.name: slot for slot in self.slots}
        self._versioned = [slot.backend for slot in self.slots if slot.backend.data_version() is not None]
        self.all_inline = all(slot.inline for slot in self.slots)

    def data_version(self) -> object:
        """The data versions of the local stores; part of every cache key so writes show at once."""
        versioned = self._versioned
        if len(versioned) == 1:  # the common case, on the hot path
            version = versioned[0].data_version()
        else:
            version = tuple(backend.data_version() for backend in versioned)
        if self.creations is not None:
            return (version, self.creations.read())
        return version

    def contact_created(self) -> None:
        """A contact was created: every process's cached answers of this tenant are stale now."""
        if self.creations is not None:
            self.creations.publish(self.creations.read() + 1, 0)

    def workflows(self) -> list[str]:
        names: list[str] = []
        for slot in self.slots:
            names.extend(w for w in slot.workflows if w not in names)
        if self.create_contacts_in is not None:
            names.append(CREATE_CONTACT)
        if any(slot.logs_messages for slot in self.slots):
            names.append(MESSAGE_LOG)
        return names

    def offers(self, slot: BackendSlot, workflow: str) -> bool:
        """Whether ``slot`` runs ``workflow`` for this tenant."""
        if workflow == CREATE_CONTACT:
            return self.create_slot is slot
        if workflow == MESSAGE_LOG:
            return slot.logs_messages
        return workflow in slot.workflows

    @property
    def create_slot(self) -> BackendSlot | None:
        """The backend CreateContact writes to (``create_contacts_in``), None when not configured."""
        return self.by_name.get(self.create_contacts_in) if self.create_contacts_in else None

    def close(self) -> None:
        if self.creations is not None:
            self.creations.close()
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
    slots = [_build_slot(position, spec, settings) for position, spec in enumerate(config.backends)]
    return Tenant(
        name=config.name,
        tokens=config.tokens,
        slots=slots,
        region=config.default_region,
        deadline_s=config.deadline_ms / 1000.0,
        max_results=config.max_results,
        cache_ttl=config.cache_ttl,
        negative_cache_ttl=config.negative_cache_ttl,
        create_contacts_in=config.create_contacts_in,
        unknown_caller_entry=config.unknown_caller_entry,
        unknown_caller_text=config.unknown_caller_text,
        new_contact_name=config.new_contact_name,
        timezone=config.timezone or settings.naive_timezone,
        # with Redis the cache is shared and the created number's entry is dropped there instead
        creations=_creation_board(config, settings) if config.create_contacts_in and not settings.redis_url else None,
    )


def _creation_board(config: TenantConfig, settings: Settings) -> GenerationBoard:
    name = hashlib.sha256(config.name.encode()).hexdigest()[:16]
    os.makedirs(settings.instance_dir, exist_ok=True)
    return GenerationBoard(os.path.join(settings.instance_dir, f"contacts-created-{name}.generation"), 0, 0)


def _build_slot(position: int, spec: BackendSpec, settings: Settings) -> BackendSlot:
    try:
        backend = build(spec)
    except BackendConfigError as exc:
        message = str(exc)
        if message.startswith(spec.where()):  # the backend named itself already
            message = f"{settings.source}: {message}"
        elif not message.startswith(settings.source):
            key = f", key {exc.key!r}" if exc.key else ""
            message = f"{settings.source}: {spec.where()}{key}: {message}"
        raise ConfigError(message) from None
    return BackendSlot(position=position, spec=spec, backend=backend)
