"""The values that cross the backend interface: what a source finds (:class:`Contact`), what a
workflow hands it (:class:`CallRecord`, :class:`MessageLog`, :class:`NewContact`) and gets back
(:class:`WorkflowResult`), a CRM's users (:class:`CrmUser`) and a page of a mirror sync
(:class:`SyncBatch`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo


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
    note: str | None = None  # the user's note (``inputs.note``)

    def merged(self, later: CallRecord) -> CallRecord:
        """This call completed by a later post of it: every value the later post has wins (the end
        of the call, the answer time, a note), every value it lacks is kept."""
        changes = {f.name: getattr(later, f.name) for f in fields(later)
                   if f.name != "key" and getattr(later, f.name) is not None}
        return replace(self, **changes)

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
            "note": self.note,
        }

    def summary(self) -> str:
        """A one-line human description used by backends that log calls as text."""
        who = self.remote_name or self.remote_number or "unknown"
        verb = "Incoming call from" if self.direction == "incoming" else "Outgoing call to"
        if self.status == "answered":
            minutes, seconds = divmod(self.duration_seconds, 60)
            line = f"{verb} {who}, answered, {minutes}:{seconds:02d}"
        else:
            line = f"{verb} {who}, {self.status}"
        return f"{line}\n{self.note}" if self.note else line


@dataclass(frozen=True, slots=True)
class Message:
    """One SMS, voicemail or fax as the connector posts it (``POST /MessageLog``); ``time`` in UTC,
    ``link`` the recording of a voicemail or the document of a fax."""

    id: str
    time: datetime
    direction: str  # "incoming" or "outgoing"
    from_number: str | None = None
    from_name: str | None = None
    to_number: str | None = None
    to_name: str | None = None
    text: str | None = None
    subject: str | None = None
    link: str | None = None

    @property
    def remote_name(self) -> str | None:
        return self.from_name if self.direction == "incoming" else self.to_name

    @property
    def remote_number(self) -> str | None:
        return self.from_number if self.direction == "incoming" else self.to_number


MESSAGE_KINDS = ("SMS", "Voicemail", "Fax")


@dataclass(frozen=True, slots=True)
class MessageLog:
    """One record in the CRM: the digest of an SMS conversation with a contact on one day (in the
    tenant's time zone ``zone``), or one voicemail or fax. A later message of the same day makes a
    new version of the digest (:meth:`with_message`); the backend then updates its record."""

    contact_id: str
    kind: str  # one of MESSAGE_KINDS
    conversation_id: str
    day: str  # YYYY-MM-DD in ``zone``
    zone: str
    messages: tuple[Message, ...]
    user_id: str | None = None
    # the record's identity: the tenant, backend, contact, conversation and day (one voicemail/fax)
    key: str = ""
    part: int = 0  # a day's conversation too long for one record goes on in a second one, and so on

    def with_message(self, message: Message) -> MessageLog:
        """The digest with ``message`` added in time order; itself when it holds that message already."""
        if any(m.id == message.id for m in self.messages):
            return self
        return replace(self, messages=tuple(sorted((*self.messages, message), key=lambda m: (m.time, m.id))))

    @property
    def first(self) -> Message:
        return self.messages[0]

    @property
    def remote_name(self) -> str | None:
        return next((m.remote_name for m in self.messages if m.remote_name), None)

    @property
    def remote_number(self) -> str | None:
        return next((m.remote_number for m in self.messages if m.remote_number), None)

    @property
    def title(self) -> str:
        """"SMS conversation with Alexa Holiday – 2026-11-21", "Voicemail from …", "Fax to …"."""
        who = self.remote_name or self.remote_number or "unknown"
        if self.kind == "SMS":
            return f"SMS conversation with {who} \u2013 {self.day}" + (f" (part {self.part + 1})" if self.part else "")
        preposition = "from" if self.first.direction == "incoming" else "to"
        return f"{self.kind} {preposition} {who} \u2013 {self.day}"

    @property
    def participants(self) -> list[str]:
        """Each party once, as "Name (number)" or the number alone."""
        seen: list[str] = []
        for message in self.messages:
            for name, number in ((message.from_name, message.from_number), (message.to_name, message.to_number)):
                label = f"{name} ({number})" if name and number else (name or number)
                if label and label not in seen:
                    seen.append(label)
        return seen

    def lines(self) -> list[str]:
        """One line per message: local time, direction, who, and the text (or subject, or link)."""
        zone = ZoneInfo(self.zone)
        result = []
        for message in self.messages:
            arrow = "\u2190" if message.direction == "incoming" else "\u2192"
            who = (message.from_name or message.from_number) if message.direction == "incoming" else \
                (message.to_name or message.to_number)
            content = " ".join(part for part in (message.subject, message.text, message.link) if part) or "(empty)"
            result.append(f"{message.time.astimezone(zone):%H:%M} {arrow} {who or 'unknown'}: {content}")
        return result

    def body(self) -> str:
        """The record's text: the participants, then one line per message."""
        head = f"Participants: {', '.join(self.participants)}" if self.participants else ""
        return "\n".join(([head, ""] if head else []) + self.lines())

    @property
    def link(self) -> str | None:
        return next((m.link for m in self.messages if m.link), None)

    def values(self) -> dict[str, Any]:
        """Every field by the name configuration templates use (``{title}``, ``:body``...)."""
        return {
            "contact_id": self.contact_id, "type": self.kind, "conversation_id": self.conversation_id,
            "day": self.day, "title": self.title, "body": self.body(), "participants": ", ".join(self.participants),
            "message_count": len(self.messages), "first_time": self.first.time, "last_time": self.messages[-1].time,
            "direction": self.first.direction, "remote_number": self.remote_number, "remote_name": self.remote_name,
            "link": self.link, "user_id": self.user_id, "record_key": self.key, "part": self.part + 1,
        }


@dataclass(frozen=True, slots=True)
class CrmUser:
    """A user of a CRM (``flask --app wsgi users``): the id an admin enters as a phone user's CRM id."""

    id: str
    name: str | None = None
    email: str | None = None


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
