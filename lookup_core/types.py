"""The values that cross the backend interface: what a source finds (:class:`Contact`), what a
workflow hands it (:class:`CallRecord`) and gets back (:class:`WorkflowResult`), and a page of a
mirror sync (:class:`SyncBatch`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class Contact:
    """One contact as a backend found it. ``id`` is the backend's own id for the contact."""

    id: str
    name: str | None
    company: str | None = None
    contact_uri: str | None = None
    company_uri: str | None = None
    custom_data: dict[str, str] = field(default_factory=dict)
    phones: list[str] = field(default_factory=list)
    # False when the number matched only loosely (e.g. the stored number carries an extension).
    exact: bool = True
    # Most recent activity the source knows of (ranking tie-breaker), timezone-aware.
    last_activity: datetime | None = None
    email: str | None = None
    # The type of each number in ``phones`` whose source says (the raw value -> a type of
    # lookup_core.phone_types.PHONE_TYPES); a number not in it is "unknown". Contacts API only.
    phone_types: dict[str, str] = field(default_factory=dict)
    job_title: str | None = None
    image_url: str | None = None  # an http(s) URL of the contact's picture


@dataclass(frozen=True, slots=True)
class CallRecord:
    """A finished (or aborted) call as the connector describes it, times already parsed to UTC."""

    contact_id: str
    direction: str  # "incoming" or "outgoing"
    originator_number: str | None = None
    originator_name: str | None = None
    destination_number: str | None = None
    destination_name: str | None = None
    started: datetime | None = None
    answered: datetime | None = None
    ended: datetime | None = None
    declined: datetime | None = None
    user_id: str | None = None
    # Stable fingerprint of the call; the same call posted twice has the same key.
    key: str = ""

    @property
    def was_answered(self) -> bool:
        return self.answered is not None

    @property
    def status(self) -> str:
        """``answered``, ``declined`` (aborted by a party) or ``missed`` (rang out)."""
        if self.answered is not None:
            return "answered"
        return "declined" if self.declined is not None else "missed"

    @property
    def duration_seconds(self) -> int:
        """Talk time: from answer to end; 0 for an unanswered call."""
        if self.answered is None:
            return 0
        end = self.ended or self.declined
        if end is None or end < self.answered:
            return 0
        return int(round((end - self.answered).total_seconds()))

    @property
    def remote_number(self) -> str | None:
        return self.originator_number if self.direction == "incoming" else self.destination_number

    @property
    def remote_name(self) -> str | None:
        return self.originator_name if self.direction == "incoming" else self.destination_name

    def values(self) -> dict[str, Any]:
        """Every field by the name configuration templates use (``{direction}``, ``:duration``...).
        ``ended`` is the end of the call whether it was answered or aborted."""
        return {
            "contact_id": self.contact_id,
            "direction": self.direction,
            "status": self.status,
            "originator_number": self.originator_number,
            "originator_name": self.originator_name,
            "destination_number": self.destination_number,
            "destination_name": self.destination_name,
            "remote_number": self.remote_number,
            "remote_name": self.remote_name,
            "started": self.started,
            "answered": self.answered,
            "ended": self.ended or self.declined,
            "declined": self.declined,
            "duration": self.duration_seconds,
            "user_id": self.user_id,
            "call_key": self.key,
            "summary": self.summary(),
        }

    def summary(self) -> str:
        """A one-line human description used by backends that log calls as text."""
        who = self.remote_name or self.remote_number or "unknown"
        verb = "Incoming call from" if self.direction == "incoming" else "Outgoing call to"
        if self.status == "answered":
            minutes, seconds = divmod(self.duration_seconds, 60)
            return f"{verb} {who}, answered, {minutes}:{seconds:02d}"
        return f"{verb} {who}, {self.status}"


@dataclass(frozen=True, slots=True)
class NewContact:
    """A contact to create (``CreateContact``): the remote party's number in E.164 and what the
    connector knows of them. ``key`` identifies the request: the same tenant and number, one key."""

    number: str
    name: str
    company: str | None = None
    email: str | None = None
    key: str = ""

    def values(self) -> dict[str, Any]:
        """Every field by the name configuration templates use (``{name}``, ``{e164}``...)."""
        return {"name": self.name, "company": self.company, "email": self.email, "e164": self.number,
                "digits": self.number.lstrip("+"), "request_key": self.key}


@dataclass(frozen=True, slots=True)
class WorkflowResult:
    id: str | None
    url: str | None = None


@dataclass(slots=True)
class SyncBatch:
    """A page of a mirror sync.

    ``contacts`` are upserted, ``deleted_ids`` removed. ``cursor`` is what the next incremental
    sync starts from (a sync token, a timestamp); ``complete`` True means the batch list was a full
    listing, so any stored contact not seen in it has been deleted at the source.
    """

    contacts: list[Contact] = field(default_factory=list)
    deleted_ids: list[str] = field(default_factory=list)
    cursor: str | None = None
    complete: bool = False


@dataclass(frozen=True, slots=True)
class StoredPhone:
    """A number as a store keeps it: its normalized key and its extension (``""`` when none)."""

    key: str
    extension: str
