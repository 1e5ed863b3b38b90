"""Business workflows (``POST /<workflowName>``): turning the connector's payload into a call
record, routing it to the backend that produced the contact, and running it exactly once."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from marshmallow import Schema, ValidationError

from lookup_core.errors import ContactNotFound, DeliveryRefused
from lookup_core.phone import InvalidPhoneNumber, parse_number
from lookup_core.redact import mask
from lookup_core.types import MESSAGE_KINDS, CallRecord, Message, MessageLog, NewContact, WorkflowResult
from lookup_service.errors import ApiError
from lookup_service.ledger import OutboxUnavailable
from lookup_service.outbox import Outbox
from lookup_service.schemas import CreateContactInputs, MessageLogInputs, WorkflowInputs
from lookup_service.tenants import CREATE_CONTACT, MESSAGE_LOG, BackendSlot, Tenant
from lookup_service.timeparse import InvalidTime, parse_time

log = logging.getLogger(__name__)

_DIRECTIONS = {"incoming": "incoming", "inbound": "incoming", "in": "incoming",
               "outgoing": "outgoing", "outbound": "outgoing", "out": "outgoing"}
_TIME_FIELDS = ("startedTime", "answeredTime", "endedTime", "declinedTime")
_INPUTS_SCHEMA = WorkflowInputs()
_CREATE_SCHEMA = CreateContactInputs()
_MESSAGE_SCHEMA = MessageLogInputs()
_KINDS = {kind.lower(): kind for kind in MESSAGE_KINDS} | {"voice mail": "Voicemail", "voice-mail": "Voicemail"}
NEW_PREFIX = "new:"  # the id of the unknown-caller entry: new:<e164>
MAX_DIGEST_MESSAGES = 100  # an SMS record of a day holds at most this many messages...
MAX_DIGEST_SIZE = 40_000  # ... and characters of its stored form; then the day goes on in a next part
MAX_DIGEST_PARTS = 100


def run_workflow(
    tenant: Tenant,
    workflow: str,
    inputs: Mapping[str, Any],
    outbox: Outbox,
    naive_zone: str,
) -> tuple[WorkflowResult, str]:
    """Run ``workflow`` for ``inputs``; returns (result, outcome): ``created``, ``duplicate`` or
    ``queued`` (stored durably, delivered in the background; the id is then the call's key).
    Raises :class:`ApiError`."""
    if workflow == CREATE_CONTACT:
        return create_contact(tenant, inputs, outbox)
    if workflow == MESSAGE_LOG:
        return log_message(tenant, inputs, outbox)
    data = _load(_INPUTS_SCHEMA, inputs)
    slot, native_id = route(tenant, workflow, data["contactCrmId"].strip())
    call = _call_record(tenant, workflow, slot, native_id, data, naive_zone)
    result, outcome = _submit(outbox, tenant, workflow, slot, call, "call")
    log.info("workflow %s on %s/%s: %s call with %s -> %s (%s)", workflow, tenant.name, slot.name, call.status,
             mask(call.remote_number), result.id if outcome != "queued" else "queued", outcome)
    return result, outcome


def _submit(outbox: Outbox, tenant: Tenant, workflow: str, slot: BackendSlot,
            payload: CallRecord | MessageLog | NewContact, what: str) -> tuple[WorkflowResult, str]:
    """Hand ``payload`` to the outbox; its failures become the API's errors."""
    try:
        return outbox.submit(tenant, workflow, slot, payload)
    except OutboxUnavailable as exc:
        raise _store_unavailable(exc, tenant, workflow, slot, what) from None
    except ContactNotFound as exc:
        raise ApiError(404, "unknown_contact", f"{exc}; use the id returned by /Lookup") from None
    except DeliveryRefused as exc:
        raise ApiError(422, "refused", f"{slot.name} refused the {what}: {exc}") from None


def _store_unavailable(exc: OutboxUnavailable, tenant: Tenant, workflow: str, slot: BackendSlot,
                       what: str) -> ApiError:
    log.error("workflow %s on %s/%s: cannot store the %s: %s", workflow, tenant.name, slot.name, what, exc)
    return ApiError(503, "outbox_unavailable", f"the service cannot store the {what} durably right now ({exc}); "
                    "nothing was recorded; retry later", {"Retry-After": "5"})


def log_message(tenant: Tenant, inputs: Mapping[str, Any], outbox: Outbox) -> tuple[WorkflowResult, str]:
    """MessageLog: an SMS joins the digest record of its contact, conversation and day (in the
    tenant's time zone), created by the day's first message and updated by each later one; a
    voicemail or fax is a record of its own. A message is added once, however often it is posted."""
    data = _load(_MESSAGE_SCHEMA, inputs)
    kind = _KINDS.get(data["type"].strip().lower())
    if kind is None:
        raise ApiError(400, "invalid_input", f"inputs.type: must be one of {', '.join(MESSAGE_KINDS)}")
    direction = _direction(data)
    if direction is None:
        raise ApiError(400, "invalid_input", "inputs.direction: must be 'incoming' or 'outgoing'")
    slot, native_id = route(tenant, MESSAGE_LOG, data["contactCrmId"].strip())
    try:
        moment = parse_time(data.get("time"), tenant.timezone)
    except InvalidTime as exc:
        raise ApiError(400, "invalid_time", f"inputs.time: {exc}") from None
    link = _clean(data.get("recordingLink")) if kind == "Voicemail" else _clean(data.get("faxDocLink")) \
        if kind == "Fax" else None
    content = [kind, direction, _digits(data.get("fromNumber")), _digits(data.get("toNumber")),
               _clean(data.get("text")), _clean(data.get("subject")), link, moment.isoformat() if moment else None]
    message_id = _clean(data.get("messageId")) or hashlib.sha256(json.dumps(content).encode()).hexdigest()[:24]
    if moment is None:
        moment = datetime.now(UTC)
    message = Message(id=message_id, time=moment, direction=direction,
                      from_number=_clean(data.get("fromNumber")), from_name=_clean(data.get("fromName")),
                      to_number=_clean(data.get("toNumber")), to_name=_clean(data.get("toName")),
                      text=_clean(data.get("text")), subject=_clean(data.get("subject")), link=link)
    conversation = _clean(data.get("conversationId")) or "-".join(sorted(
        (_digits(data.get("fromNumber")), _digits(data.get("toNumber")))))
    day = moment.astimezone(ZoneInfo(tenant.timezone)).date().isoformat()
    identity = [tenant.name, MESSAGE_LOG, slot.name, native_id, kind]
    identity += [conversation, day] if kind == "SMS" else [message_id]
    digest = MessageLog(contact_id=native_id, kind=kind, conversation_id=conversation, day=day,
                        zone=tenant.timezone, messages=(message,), user_id=_clean(data.get("userCrmId")),
                        key=hashlib.sha256(json.dumps(identity).encode()).hexdigest())
    if kind == "SMS":
        digest = _digest_part(outbox, digest, identity, slot, tenant)
    result, outcome = _submit(outbox, tenant, MESSAGE_LOG, slot, digest, "message")
    log.info("MessageLog on %s/%s: %s %s with %s -> %s (%s)", tenant.name, slot.name, kind, direction,
             mask(message.remote_number), result.id if outcome != "queued" else "queued", outcome)
    return result, outcome


def _digest_part(outbox: Outbox, digest: MessageLog, identity: list, slot: BackendSlot,
                 tenant: Tenant) -> MessageLog:
    """The part of the day's conversation ``digest``'s message belongs to: the one that holds it
    already, else the first that is not full. A record is full at MAX_DIGEST_MESSAGES messages or
    MAX_DIGEST_SIZE characters, so that a day of thousands of messages is not rewritten whole at
    each one (a cost growing with the day) and fits what CRMs accept in one note."""
    message = digest.messages[0]
    keys = [digest.key] + [hashlib.sha256(json.dumps([*identity, part]).encode()).hexdigest()
                           for part in range(1, MAX_DIGEST_PARTS)]
    for start in range(0, MAX_DIGEST_PARTS, 16):  # the parts, 16 to a read
        try:
            states = outbox.digest_states(keys[start:start + 16], message.id)
        except OutboxUnavailable as exc:
            raise _store_unavailable(exc, tenant, MESSAGE_LOG, slot, "message") from None
        for part in range(start, min(start + 16, MAX_DIGEST_PARTS)):
            state = states.get(keys[part])
            if state is None or state[0] or (state[1] < MAX_DIGEST_MESSAGES and state[2] < MAX_DIGEST_SIZE):
                return replace(digest, key=keys[part], part=part)
    raise ApiError(422, "refused", f"the conversation has over {MAX_DIGEST_PARTS} records today; not logged")


def _load(schema: Schema, inputs: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return schema.load(inputs)
    except ValidationError as exc:
        field, messages = next(iter(exc.messages.items()))  # type: ignore[union-attr]
        text = messages[0] if isinstance(messages, list) else str(messages)
        raise ApiError(400, "invalid_input", f"inputs.{field}: {text}") from None


def create_contact(tenant: Tenant, inputs: Mapping[str, Any], outbox: Outbox) -> tuple[WorkflowResult, str]:
    """CreateContact: a contact with the remote party's number in the tenant's ``create_contacts_in``
    backend, once per tenant and number however often it is posted.

    It goes through the ledger and outbox like a call (see README "Creating contacts"): the first
    post claims the request and creates the contact within the workflow budget while the user
    waits for its id; a concurrent or later post of the same number gets the same answer; a
    creation the backend could not finish in time goes on in the background, never twice."""
    slot = tenant.create_slot
    if slot is None:
        raise ApiError(404, "unknown_workflow", "CreateContact is not enabled for this tenant (create_contacts_in)")
    data = _load(_CREATE_SCHEMA, inputs)
    number = _remote_number(tenant, data)
    remote_name = data.get("originatorName") if _direction(data) == "incoming" else data.get("destinationName")
    name = _clean(data.get("name")) or _clean(remote_name) or tenant.new_contact_name.replace(
        "{number}", _international(number))
    key = hashlib.sha256(json.dumps([tenant.name, CREATE_CONTACT, slot.name, number]).encode()).hexdigest()
    new = NewContact(number=number, name=name, company=_clean(data.get("company")), email=_clean(data.get("email")),
                     key=key)
    result, outcome = _submit(outbox, tenant, CREATE_CONTACT, slot, new, "new contact")
    log.info("CreateContact on %s/%s: %s -> %s (%s)", tenant.name, slot.name, mask(number),
             result.id if outcome != "queued" else "queued", outcome)
    return result, outcome


def _direction(data: Mapping[str, Any]) -> str | None:
    return _DIRECTIONS.get((data.get("direction") or "").strip().lower())


def _remote_number(tenant: Tenant, data: Mapping[str, Any]) -> str:
    """The new contact's number in E.164: from ``contactCrmId`` ``new:<e164>``, else the remote
    party's (``originatorNumber`` incoming, ``destinationNumber`` outgoing)."""
    crm_id = (data.get("contactCrmId") or "").strip()
    if crm_id.startswith(NEW_PREFIX):
        raw, field = crm_id[len(NEW_PREFIX):], "contactCrmId"
    else:
        direction = _direction(data)
        if direction is None:
            raise ApiError(400, "invalid_input", "inputs.direction: must be 'incoming' or 'outgoing' (it says "
                           "whose number the new contact gets)")
        field = "originatorNumber" if direction == "incoming" else "destinationNumber"
        raw = data.get(field) or ""
    if not raw.strip():
        raise ApiError(400, "invalid_input", f"inputs.{field}: the remote party's number is required")
    try:
        number = parse_number(raw, tenant.region)
    except InvalidPhoneNumber as exc:
        raise ApiError(400, "invalid_number", f"inputs.{field}: {exc}") from None
    if number.e164 is None:
        raise ApiError(400, "invalid_number", f"inputs.{field}: an internal short number cannot become a contact")
    return number.e164


def _international(e164: str) -> str:
    import phonenumbers

    try:
        return phonenumbers.format_number(phonenumbers.parse(e164, None), phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    except phonenumbers.NumberParseException:
        return e164


def route(tenant: Tenant, workflow: str, contact_id: str) -> tuple[BackendSlot, str]:
    """The backend that produced ``contact_id`` (``<backend>:<id>``) and the backend's own id."""
    prefix, sep, rest = contact_id.partition(":")
    slot = tenant.by_name.get(prefix) if sep else None
    if slot is not None:
        if not tenant.offers(slot, workflow):
            raise ApiError(404, "unknown_workflow", f"backend {slot.name!r} does not offer {workflow!r}; it offers "
                           f"{slot.workflows or 'no workflow'}")
        return slot, rest
    offering = [s for s in tenant.slots if tenant.offers(s, workflow)]
    if len(offering) == 1:
        return offering[0], contact_id
    raise ApiError(400, "invalid_input", "inputs.contactCrmId: not an id returned by /Lookup "
                   "(expected '<backend>:<id>', e.g. 'directory:42')")


def _call_record(tenant: Tenant, workflow: str, slot: BackendSlot, native_id: str, data: dict, zone: str) -> CallRecord:
    times = {}
    for name in _TIME_FIELDS:
        try:
            times[name] = parse_time(data.get(name), zone)
        except InvalidTime as exc:
            raise ApiError(400, "invalid_time", f"inputs.{name}: {exc}") from None
    direction = _direction(data)
    if direction is None:
        raise ApiError(400, "invalid_input", "inputs.direction: must be 'incoming' or 'outgoing'")
    fingerprint: list[Any] = [
        tenant.name, workflow, slot.name, native_id, direction,
        _digits(data.get("originatorNumber")), _digits(data.get("destinationNumber")),
    ]
    started = times["startedTime"]
    # The automatic CallFlow (after the call) and a click (maybe during it) differ in their end
    # times; the start identifies the call. Without a start, every time is part of the identity.
    fingerprint += [started.isoformat()] if started else [t.isoformat() if t else None for t in times.values()]
    key = hashlib.sha256(json.dumps(fingerprint).encode()).hexdigest()
    return CallRecord(
        contact_id=native_id,
        direction=direction,
        originator_number=_clean(data.get("originatorNumber")),
        originator_name=_clean(data.get("originatorName")),
        destination_number=_clean(data.get("destinationNumber")),
        destination_name=_clean(data.get("destinationName")),
        started=started,
        answered=times["answeredTime"],
        ended=times["endedTime"],
        declined=times["declinedTime"],
        user_id=_clean(data.get("userCrmId")),
        key=key,
        note=_clean(data.get("note")),
    )


def _clean(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def _digits(value: str | None) -> str:
    return re.sub(r"\D", "", value or "")
