"""The small interface every contact source implements, and the values that cross it.

A backend knows nothing of Flask or of the connector's JSON: it receives a normalized
:class:`~lookup_core.phone.PhoneNumber` and returns :class:`Contact` values; for workflows it
receives a :class:`CallRecord` and returns a :class:`WorkflowResult`. The engine adds the rest
(tenant, ranking, CRM name and logo, the workflow list, the response format).
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from marshmallow import Schema, ValidationError, fields, validate

from lookup_core.errors import BackendConfigError, BackendError
from lookup_core.phone import PhoneNumber, extract_numbers, format_number
from lookup_core.redact import mask_numbers, redact_options
from lookup_core.types import CallRecord, Contact, CrmUser, MessageLog, NewContact, SyncBatch, WorkflowResult

log = logging.getLogger(__name__)
USERS_TTL_S = 600.0  # how long the list of a CRM's users is trusted before it is read again
USERS_RETRY_S = 60.0  # after the list could not be read

# The errors and value types live in the core (lookup_core): import them from there.
__all__ = ["Backend", "BackendOptions", "BackendSpec", "load_options"]


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """One configured backend, as the configuration loader validated it (see
    :func:`crm_backends.registry.load_spec`): its tenant and name (for messages), type, mode,
    validated options, the workflows it runs, and the tenant-wide values it needs."""

    tenant: str
    name: str
    options: dict[str, Any]
    default_region: str = "CH"
    deadline_s: float = 1.5
    instance_dir: str = "instance"
    phone_index: bool = False  # local stores answer from their memory-mapped snapshot
    type: str = ""
    mode: str = "live"
    workflows: tuple[str, ...] = ()

    @property
    def crm_name(self) -> str | None:
        return self.options.get("crm_name")

    @property
    def crm_logo(self) -> str | None:
        return self.options.get("crm_logo")

    def where(self, key: str | None = None) -> str:
        text = f"tenant {self.tenant!r}, backend {self.name!r}"
        return f"{text}, key {key!r}" if key else text


class BackendOptions(Schema):
    """Options common to every backend; each type extends it with its own keys."""

    name = fields.String(required=True)
    type = fields.String(required=True)
    crm_name = fields.String(load_default=None, allow_none=True)
    crm_logo = fields.String(load_default=None, allow_none=True)
    workflows = fields.List(fields.String(), load_default=None, allow_none=True)
    mode = fields.String(load_default=None, allow_none=True)
    # mirrors (the schedule is the mirror's, see crm_backends.mirror): an incremental sync every
    # `sync_interval`, a full listing at least every `full_sync_interval` (0: every sync)
    sync_interval = fields.Float(load_default=900.0)
    full_sync_interval = fields.Float(load_default=86400.0, validate=validate.Range(min=0))
    # mirrors: older than this (default 3 x sync_interval) the copy is reported stale
    max_staleness = fields.Float(load_default=None, allow_none=True, validate=validate.Range(min=1))
    timeout = fields.Float(load_default=None, allow_none=True)
    # live sources whose search finds only an exact string: spellings the customer types, tried
    # after the automatic ones ("0## ### ## ##": each "#" the next digit, see lookup_core.phone.format_number)
    search_formats = fields.List(
        fields.String(validate=validate.Regexp(r"^[^#]*#[\s\S]*$", error="a format needs at least one '#' (a digit)")),
        load_default=list, validate=validate.Length(max=10),
    )
    rate_per_second = fields.Float(load_default=None, allow_none=True)
    # CRMs with users: the owner of records whose userCrmId is missing or not a user of the CRM
    default_user_id = fields.String(load_default=None, allow_none=True)


class Backend(ABC):
    """A contact source. Subclasses declare what they are on the class and implement :meth:`lookup`;
    the registry (:mod:`crm_backends.registry`) reads the declarations without building anything.

    ``type_name``: the ``type`` of the configuration. ``options_schema``: its options.
    ``modes``: ``live`` (each lookup asks the source) and/or ``mirror`` (the source is listed into a
    local index, see :mod:`crm_backends.mirror`; the backend then implements :meth:`sync`).
    ``workflows``: the workflows the type can run (``CallFlow``: it implements :meth:`log_call`);
    :meth:`workflows_for` narrows them to what a given configuration enables.
    ``search_by_name``, ``users``: it can search contacts by name, list the CRM's users.
    ``creates_contacts``: it implements :meth:`create_contact` (the ``CreateContact`` workflow).
    ``logs_messages``: it implements :meth:`log_message` and :meth:`update_message` (``MessageLog``).
    ``inline``: the lookup is local and fast (SQLite); the engine runs it in the request's thread.
    """

    type_name: ClassVar[str]
    options_schema: ClassVar[type[BackendOptions]] = BackendOptions
    modes: ClassVar[frozenset[str]] = frozenset({"live"})
    workflows: ClassVar[frozenset[str]] = frozenset()
    search_by_name: ClassVar[bool] = False
    users: ClassVar[bool] = False
    creates_contacts: ClassVar[bool] = False
    logs_messages: ClassVar[bool] = False
    inline: ClassVar[bool] = False
    default_crm_name: ClassVar[str | None] = None
    default_crm_logo: ClassVar[str | None] = None
    # Requests a second the source allows (None: no limit). Overridable with `rate_per_second`.
    default_rate_per_second: ClassVar[float | None] = None
    # Keys of `options` that are secrets besides those named like one (lookup_core.redact.is_secret_name):
    # redacted in `config check`.
    secret_keys: ClassVar[frozenset[str]] = frozenset({"password", "api_key", "api_token", "access_token", "token"})
    # True: the backend says itself, once, that its credentials were rejected (and when they work
    # again), for lookups, workflows and syncs alike; the engine then adds no line of its own.
    alerts_credentials: ClassVar[bool] = False

    def __init__(self, spec: BackendSpec):
        self.spec = spec
        self.options = spec.options
        self.name = spec.name
        self._users_lock = threading.Lock()
        self._user_ids: frozenset[str] | None = None
        self._users_read_at = 0.0
        self._unknown_users: set[str] = set()

    @classmethod
    def workflows_for(cls, options: dict[str, Any]) -> frozenset[str]:
        """The workflows a backend of this type configured with ``options`` can run; types whose
        call logging needs its own settings (sql, rest) override it."""
        return cls.workflows

    @classmethod
    def can_create_contacts(cls, options: dict[str, Any]) -> bool:
        """Whether a backend of this type configured with ``options`` can create contacts; types that
        need a setting for it (sql, rest) override it."""
        return cls.creates_contacts

    @classmethod
    def can_log_messages(cls, options: dict[str, Any]) -> bool:
        """Whether a backend of this type configured with ``options`` can log messages (``MessageLog``);
        types that need settings for it (sql, rest) override it."""
        return cls.logs_messages

    @classmethod
    def can_list_users(cls, options: dict[str, Any]) -> bool:
        """Whether a backend of this type configured with ``options`` can list the CRM's users; types
        that need a setting for it (sql, rest) override it."""
        return cls.users

    @property
    def can_log_calls(self) -> bool:
        return "CallFlow" in self.workflows_for(self.options)

    @property
    def timeout_s(self) -> float:
        """Network timeout for one request to the source: inside the engine's deadline."""
        configured = self.options.get("timeout")
        return float(configured) if configured else max(0.2, self.spec.deadline_s * 0.9)

    @property
    def rate_per_second(self) -> float | None:
        return self.options.get("rate_per_second") or self.default_rate_per_second

    def search_forms(self, number: PhoneNumber) -> list[str]:
        """The spellings a live query asks for: the automatic ones, then the configured
        ``search_formats`` that fit the number. Candidates are re-checked (:meth:`filter_candidates`)."""
        return number.search_forms(self.options.get("search_formats") or ())

    def formatted(self, number: PhoneNumber) -> list[str]:
        """Only the configured ``search_formats`` spellings of ``number`` that fit it."""
        extra = (format_number(number, pattern) for pattern in self.options.get("search_formats") or ())
        return list(dict.fromkeys(form for form in extra if form))

    def parse(self, raw: str) -> PhoneNumber | None:
        """The (first) number in a value the source holds, read as stored text; ``None`` when it
        holds no phone number."""
        numbers = self.parse_all(raw)
        return numbers[0] if numbers else None

    def parse_all(self, raw: str) -> list[PhoneNumber]:
        """Every number in a value the source holds (``… ::: …``, ``…; …``), read as stored text."""
        return extract_numbers(raw, self.spec.default_region)[0]

    def matches(self, number: PhoneNumber, stored: Iterable[str]) -> bool | None:
        """Re-check a candidate from a loose source query with the project's normalization.

        Returns True for an exact match, False for a match on the main number of a stored number
        that carries an extension, None for no match. Live backends must use it on every candidate.
        """
        result: bool | None = None
        for raw in stored:
            if not raw:
                continue
            for parsed in self.parse_all(str(raw)):
                if parsed.key != number.key:
                    continue
                if not parsed.extension or parsed.extension == number.extension:
                    return True
                result = False
        return result

    def filter_candidates(self, number: PhoneNumber, candidates: Iterable[Contact]) -> list[Contact]:
        """Keep the candidates whose phones re-check as matches, setting ``exact``; drop the rest."""
        kept: list[Contact] = []
        for contact in candidates:
            verdict = self.matches(number, contact.phones)
            if verdict is None:
                continue
            contact.exact = verdict
            kept.append(contact)
        return kept

    def check(self) -> None:
        """Verify connectivity and credentials at start-up; raise BackendUnavailable or
        BackendConfigError. The default does nothing."""
        return None

    @abstractmethod
    def lookup(self, number: PhoneNumber, limit: int) -> list[Contact]:
        """Contacts having ``number``, best first, at most ``limit``. Raise BackendUnavailable."""

    def log_call(self, call: CallRecord) -> WorkflowResult:
        """Record ``call``; the result's id is the record's own id in the backend. Raise
        ContactNotFound or DeliveryRefused for a refusal for good, BackendUnavailable to be tried again.
        A retry whose earlier attempt made the record (its answer lost) must not make a second one;
        the outbox then writes the current revision (the call's end, by then) into the one found."""
        raise NotImplementedError(f"backend type {self.type_name!r} cannot log calls")

    def update_call(self, record_id: str, call: CallRecord) -> WorkflowResult:
        """Update the record ``record_id`` (made by :meth:`log_call`) to ``call``, a later and fuller
        post of the same call (its end, duration, status, note); the result keeps the record's id."""
        raise NotImplementedError(f"backend type {self.type_name!r} cannot update call records")

    def log_message(self, message_log: MessageLog) -> WorkflowResult:
        """Create the record of ``message_log`` (an SMS digest of one day, a voicemail or a fax); the
        result's id is the record's own id. Only types with ``logs_messages`` implement it. As for
        :meth:`log_call`, a retry finds the record an attempt whose answer was lost made."""
        raise NotImplementedError(f"backend type {self.type_name!r} cannot log messages")

    def update_message(self, record_id: str, message_log: MessageLog) -> WorkflowResult:
        """Replace the content of the record ``record_id`` (made by :meth:`log_message`) with
        ``message_log``, the same digest holding more messages; the result keeps the record's id."""
        raise NotImplementedError(f"backend type {self.type_name!r} cannot log messages")

    def list_users(self) -> list[CrmUser]:
        """The CRM's users (``flask --app wsgi users``). Only types with ``users`` implement it."""
        raise NotImplementedError(f"backend type {self.type_name!r} has no users")

    def owner_for(self, user_id: str | None) -> str | None:
        """The CRM user a new record belongs to: ``user_id`` (the connector's ``userCrmId``) when it is
        a user of the CRM, else ``default_user_id`` (None: the CRM's own default, the API user). An
        unknown id is warned about once. The users are read at most every USERS_TTL_S; when they
        cannot be read, ``user_id`` is trusted."""
        default = self.options.get("default_user_id")
        if not user_id or not self.can_list_users(self.options):
            return user_id or default
        with self._users_lock:
            now = time.monotonic()
            due = USERS_TTL_S if self._user_ids is not None else USERS_RETRY_S
            if self._users_read_at == 0.0 or now - self._users_read_at > due:
                self._users_read_at = now
                try:
                    self._user_ids = frozenset(str(user.id) for user in self.list_users())
                except BackendError as exc:
                    log.warning("%s: cannot read the CRM's users to check userCrmId: %s", self.spec.where(), exc)
            if self._user_ids is None:
                return user_id
            if user_id in self._user_ids:
                return user_id
            if user_id not in self._unknown_users:
                self._unknown_users.add(user_id)
                log.warning("%s: userCrmId %r is not a user of the CRM; its records go to %s (see `flask --app "
                            "wsgi users`)", self.spec.where(), mask_numbers(user_id[:40]),
                            f"user {default!r}" if default else "the CRM's default owner")
        return default

    def create_contact(self, new: NewContact) -> WorkflowResult:
        """Create a contact holding ``new.number`` (E.164); the result's id is the backend's own id.
        Only types with ``creates_contacts`` implement it. Raise DeliveryRefused for a refusal for
        good, BackendUnavailable to be tried again."""
        raise NotImplementedError(f"backend type {self.type_name!r} cannot create contacts")

    def sync(self, cursor: str | None) -> Iterator[SyncBatch]:
        """List the source for the mirror: everything when ``cursor`` is None, else what changed
        since it. Only backends whose ``modes`` include ``mirror`` implement it."""
        raise NotImplementedError(f"backend type {self.type_name!r} cannot be mirrored")

    def search(self, term: str, limit: int) -> list[Contact]:
        """Contacts whose name matches ``term`` as a user types it, best first, at most ``limit``
        (``GET /contacts/search``). Types that can set ``search_by_name``; the default finds nothing."""
        return []

    def data_version(self) -> object | None:
        """A value that changes whenever the backend's data changes (local stores only), so the
        engine can drop cached answers at once. None: rely on the cache TTL."""
        return None

    def close(self) -> None:
        """Release connections; called at shutdown."""
        return None

    def describe(self) -> dict[str, Any]:
        """Options for `config check`, secrets redacted."""
        return redact_options(self.options, self.secret_keys)


def load_options(cls: type[Backend], raw: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate a backend table with its type's schema; a ConfigError names the key."""
    try:
        return cls.options_schema().load(raw)
    except ValidationError as exc:
        key, messages = next(iter(_flatten(exc.messages)))
        raise BackendConfigError(f"{where}, key {key!r}: {messages}", key=key) from None


def _flatten(messages: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(messages, dict):
        for key, value in messages.items():
            yield from _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        text = "; ".join(str(m) for m in messages) if isinstance(messages, list) else str(messages)
        if text == "Unknown field.":
            text = "unknown key (check its spelling in the documentation)"
        yield prefix, text
